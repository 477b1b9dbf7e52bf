"""Hub downloads for real: huggingface_hub against a hub-compatible server on 127.0.0.1 (tests/hubserver.py).

Revisions pin commits; 503s are retried by our Prefect task until they heal; a missing repo fails at once.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.hubserver import HubServer


@pytest.fixture(scope="module")
def hub(model_dirs, tmp_path_factory):
    """org/tiny-bert with two commits: tag v1 at the first, main at the second (a changed config)."""
    second = tmp_path_factory.mktemp("hub") / "tiny-bert-v2"
    shutil.copytree(model_dirs["tiny-bert"], second)
    config = json.loads((second / "config.json").read_text())
    (second / "config.json").write_text(json.dumps(config | {"hidden_dropout_prob": 0.2}))
    with HubServer() as server:
        server.commits = {
            "v1": server.add("org/tiny-bert", model_dirs["tiny-bert"], ("v1",)),
            "main": server.add("org/tiny-bert", second, ("main",)),
        }
        yield server


@pytest.fixture
def on_hub(hub, monkeypatch, tmp_path):
    """Point huggingface_hub at the test server with an empty cache (it reads HF_ENDPOINT at import time)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    hub.requests.clear()
    return hub


def test_download_pins_revisions(on_hub):
    from modelexport.source import resolve

    latest = resolve("org/tiny-bert")
    pinned = resolve("org/tiny-bert", revision="v1")
    assert (latest.kind, latest.revision) == ("hub", on_hub.commits["main"])
    assert pinned.revision == on_hub.commits["v1"] and pinned.fingerprint == f"git:{on_hub.commits['v1']}"
    assert json.loads(Path(latest.path, "config.json").read_text())["hidden_dropout_prob"] == 0.2
    assert json.loads(Path(pinned.path, "config.json").read_text())["hidden_dropout_prob"] == 0.1
    assert any(path.endswith("/model.safetensors") and method == "GET" for method, path, _ in on_hub.requests)


def test_transient_503s_are_retried_until_they_heal(prefect_harness, on_hub):
    from tasks import resolve_model

    on_hub.fail_next(2)
    source = resolve_model("org/tiny-bert", revision="v1")
    statuses = [status for _, path, status in on_hub.requests if "/revision/" in path]
    assert statuses == [503, 503, 200]  # two failed attempts, then the third got through
    assert source.revision == on_hub.commits["v1"]


def test_a_missing_repo_fails_at_once(prefect_harness, on_hub):
    from modelexport.errors import BadInputError
    from tasks import resolve_model

    with pytest.raises(BadInputError, match="no model 'org/nothing-here'"):
        resolve_model("org/nothing-here")
    assert len([p for _, p, _ in on_hub.requests if "nothing-here" in p]) == 1  # no retries


def test_fleet_exports_a_pinned_hub_model(prefect_harness, on_hub, tmp_path):
    from flows import run_fleet_flow

    fleet = tmp_path / "hub.yaml"
    fleet.write_text(
        "models:\n  - {id: org/tiny-bert, revision: v1, validate: {enabled: false}, profile: {enabled: false}}\n"
    )
    summary = run_fleet_flow(str(fleet), str(tmp_path / "out"))
    (model,) = summary.models
    assert model.status == "ok", model.reason
    assert model.name == "tiny-bert" and model.source["revision"] == on_hub.commits["v1"]
    sidecar = json.loads((tmp_path / "out" / "tiny-bert" / "model.hierarchy.json").read_text())
    assert sidecar["model"]["revision"] == on_hub.commits["v1"]
