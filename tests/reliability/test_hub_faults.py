"""A hub having a bad minute: 503s, dropped connections and stalled responses heal through the resolve task's
retries with every file intact; a permanent 404 fails at once, with its reason, after one request.

All against tests/hubserver.py on 127.0.0.1; HF_HUB_ETAG_TIMEOUT / HF_HUB_DOWNLOAD_TIMEOUT are 1 s here, so a
stalled response costs one second.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.hubserver import HubServer, point_hub_client_at

REPO_ID = "org/tiny-bert"


@pytest.fixture(scope="module")
def hub(model_dirs, tmp_path_factory):
    bare = tmp_path_factory.mktemp("no-config")
    (bare / "README.md").write_text("not a model\n")
    with HubServer() as server:
        server.sha = server.add(REPO_ID, model_dirs["tiny-bert"], ("main", "v1"))
        server.add("org/readme-only", bare)
        yield server


@pytest.fixture
def on_hub(hub, monkeypatch, tmp_path):
    from huggingface_hub import constants

    point_hub_client_at(monkeypatch, hub.url, tmp_path / "hf-cache")
    for name in ("HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT"):
        monkeypatch.setenv(name, "1")
        monkeypatch.setattr(constants, name, 1)
    hub.requests.clear()
    hub.fail_next(0)
    return hub


def _digests(folder) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file()
    }


def _repo_requests(hub, repo: str = REPO_ID) -> list[tuple[str, str, int]]:
    return [r for r in hub.requests if repo in r[1]]


@pytest.mark.parametrize("fault, count", [("503", 2), ("drop", 2), ("stall", 1)])
def test_transient_faults_heal_through_retries_with_nothing_lost(prefect_harness, on_hub, model_dirs, fault, count):
    from tasks import resolve_model

    on_hub.fail_next(count, fault)
    source = resolve_model(REPO_ID, revision="v1")
    assert source.revision == on_hub.sha
    assert _digests(source.path) == _digests(model_dirs["tiny-bert"])  # every file complete, byte for byte
    faulty = [r for r in _repo_requests(on_hub) if r[2] in (0, 503)]  # 0: no response (dropped or stalled)
    assert len(faulty) == count, on_hub.requests


def test_a_hub_that_stays_down_fails_with_its_reason_after_a_bounded_number_of_requests(prefect_harness, on_hub):
    from modelexport.errors import TransientError
    from tasks import resolve_model
    from tasks.policy import RETRIES

    on_hub.fail_next(10_000, "503")
    with pytest.raises(TransientError, match="cannot reach the Hugging Face Hub to fetch org/tiny-bert"):
        resolve_model(REPO_ID)
    assert len(_repo_requests(on_hub)) == RETRIES + 1  # one request per attempt: no storm
    on_hub.fail_next(0)


@pytest.mark.parametrize(
    "repo, revision, reason",
    [
        (REPO_ID, "no-such-branch", "hub model org/tiny-bert has no revision 'no-such-branch': pass an existing"),
        ("org/nothing-here", None, "no model 'org/nothing-here' on the hub"),
        ("org/readme-only", None, "hub repo org/readme-only has no config.json: it is not a transformers model"),
    ],
)
def test_a_permanent_404_fails_at_once_with_its_reason(prefect_harness, on_hub, repo, revision, reason):
    from modelexport.errors import BadInputError
    from tasks import resolve_model

    with pytest.raises(BadInputError, match=reason.replace(".", r"\.")) as info:
        resolve_model(repo, revision=revision)
    assert "\n" not in str(info.value)
    attempts = [r for r in _repo_requests(on_hub, repo) if "/api/models/" in r[1] and "/tree/" not in r[1]]
    assert len(attempts) == 1, on_hub.requests  # the task ran once: no retries
    assert len(_repo_requests(on_hub, repo)) <= 4  # info, tree and a HEAD or two at most
