"""Secrets stay secret and downloaded code never runs: a fleet exported through a hub that requires a planted
HF_TOKEN leaves no trace of it in logs, Prefect artifacts, MLflow or the files written; a model folder that
ships its own code is refused by the pipeline without importing it."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from tests.hubserver import HubServer, point_hub_client_at

TOKEN = "hf_PlantedSecretToken0123456789abcdef"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def every_log():
    """Every log record of every logger at DEBUG, formatted with its arguments and tracebacks."""
    handler = _Records()
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in ("prefect", "huggingface_hub", "httpx2", "mlflow"))]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    yield handler.lines
    for lg, level in saved:
        lg.removeHandler(handler)
        lg.setLevel(level)


def _texts_under(folder: Path) -> dict[str, str]:
    return {str(p): p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file()}


def test_a_planted_hub_token_never_leaves_the_request(
    prefect_harness, model_dirs, tmp_path, monkeypatch, every_log, capfd
):
    from flows import run_fleet_flow
    from tracking import runs as tracking_runs

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the fleet flow logs every model there
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "name: secret\ndefaults: {profile: {enabled: false}}\nmodels: [{id: org/private-bert}, {id: org/missing}]\n"
    )
    out = tmp_path / "out"
    with HubServer() as hub:
        hub.token = TOKEN  # a private repo: 401 without the token
        hub.add("org/private-bert", model_dirs["tiny-bert"])
        point_hub_client_at(monkeypatch, hub.url, tmp_path / "hf-cache")
        hub.fail_next(1, "503")  # a retried fault logs its error too
        summary = run_fleet_flow(str(fleet), str(out))
    models = {m.name: m for m in summary.models}
    assert models["private-bert"].status == "ok", models["private-bert"].reason
    assert models["missing"].failed_stage == "resolve" and "no model 'org/missing'" in models["missing"].reason
    assert f"Bearer {TOKEN}" in hub.authorizations  # the token was used: it is really there to leak

    places: dict[str, str] = {"logs": "\n".join(every_log)}
    captured = capfd.readouterr()
    places["stdout/stderr"] = captured.out + captured.err
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for artifact in client.read_artifacts():
            places[f"artifact {artifact.key}"] = json.dumps(artifact.model_dump(mode="json"))
    client = tracking_runs.connect(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    for run in client.search_runs(experiments):
        places[f"mlflow run {run.info.run_name}"] = json.dumps({"params": run.data.params, "tags": run.data.tags})
        local = client.download_artifacts(run.info.run_id, "", str(tmp_path / "dl" / run.info.run_id))
        places.update(_texts_under(Path(local)))
    places.update(_texts_under(out))  # outputs, sidecars and the cache records
    assert len(every_log) > 10 and any(k.startswith("artifact model-secret") for k in places)
    assert sum(k.startswith("mlflow run") for k in places) == 3  # the fleet's run and one per model
    leaks = [where for where, text in places.items() if TOKEN in text or TOKEN[3:20] in text]
    assert leaks == []


def test_a_model_with_its_own_code_is_refused_by_the_pipeline(prefect_harness, model_dirs, tmp_path):
    from flows import run_fleet_flow

    model = tmp_path / "custom"
    model.mkdir()
    config = json.loads((model_dirs["tiny-bert"] / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    (model / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "PWNED"
    (model / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("models: [{id: ./custom}]\n")
    (outcome,) = run_fleet_flow(str(fleet), str(tmp_path / "out")).models
    assert (outcome.status, outcome.failed_stage, outcome.exit_code) == ("failed", "inputs", 2)
    assert "trust-remote-code" in outcome.reason and "\n" not in outcome.reason
    assert not marker.exists(), "the model's own code ran"


@pytest.mark.parametrize("ref", ["user:hunter2pw@org/model", "https://user:hunter2pw@hub.example/org/model"])
@pytest.mark.parametrize("command", ["run", "run-fleet"])
def test_a_model_id_holding_a_credential_is_refused_before_anything_is_stored(command, ref, tmp_path):
    from tests.conftest import run_cli

    if command == "run":
        args = ["run", ref]
    else:
        (tmp_path / "fleet.yaml").write_text(f"models: [{{id: '{ref}'}}]\n")
        args = ["run-fleet", str(tmp_path / "fleet.yaml")]
    proc = run_cli(*args, "--output-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "hunter2pw" not in proc.stdout + proc.stderr
    assert "holds a credential" in proc.stderr and "HF_TOKEN" in proc.stderr and len(proc.stderr.splitlines()) == 1
    left = sorted(p.name for p in tmp_path.iterdir())  # no output, no MLflow database
    assert left == (["fleet.yaml"] if command == "run-fleet" else [])


def test_a_model_with_its_own_code_runs_through_the_pipeline_when_trusted(prefect_harness, model_dirs, tmp_path):
    """trust_remote_code (`run --trust-remote-code`, or the fleet setting) reaches every stage that loads the model."""
    from flows import run_fleet_flow

    model = tmp_path / "custom"
    shutil.copytree(model_dirs["tiny-bert"], model)
    config = json.loads((model / "config.json").read_text())
    config |= {
        "model_type": "custom-bert",
        "architectures": ["CustomBert"],
        "auto_map": {"AutoConfig": "custom.CustomConfig", "AutoModel": "custom.CustomBert"},
    }
    (model / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "RAN"
    (model / "custom.py").write_text(
        f"open({str(marker)!r}, 'a').write('imported\\n')\n"
        "from transformers import BertConfig, BertModel\n\n\n"
        "class CustomConfig(BertConfig):\n    model_type = 'custom-bert'\n\n\n"
        "class CustomBert(BertModel):\n    config_class = CustomConfig\n"
    )
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("defaults: {profile: {enabled: false}}\nmodels: [{id: ./custom, trust_remote_code: true}]\n")
    (outcome,) = run_fleet_flow(str(fleet), str(tmp_path / "out"), track=False).models
    assert outcome.status == "ok", outcome.reason
    assert outcome.results["validate"]["passed"] and marker.exists()
    sidecar = json.loads((tmp_path / "out" / "custom" / "model.hierarchy.json").read_text())
    assert any(tag.startswith("/CustomBert") for tag in sidecar["tags"])
