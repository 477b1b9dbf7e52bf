"""The Prefect pipeline on the tiny models: content caching across runs and processes, only what changed re-runs,
a broken model is reported while the others export, and the CLI's table and exit code say so.

Few flow runs on purpose: each costs about a second (see MEASURED.md).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import textwrap

import pytest

from tests.conftest import run_cli

FLEET = """
name: test-fleet
defaults:
  validate: {{atol: 1.0e-4}}
  profile: {{warmup: 0, iterations: 2}}
models:
  - id: models/tiny-bert
    name: bert
    profile: {{iterations: {bert_iterations}}}
  - id: models/tiny-resnet
    name: resnet
    opset: {resnet_opset}
  - id: models/broken
    name: broken
"""


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory, model_dirs):
    """A folder with the models (one with a corrupt config.json) and a function writing the fleet file."""
    root = tmp_path_factory.mktemp("fleet")
    for name in ("tiny-bert", "tiny-resnet"):
        shutil.copytree(model_dirs[name], root / "models" / name)
    (root / "models" / "broken").mkdir()
    (root / "models" / "broken" / "config.json").write_text("{ not json", encoding="utf-8")

    def write(resnet_opset: int = 18, bert_iterations: int = 2):
        path = root / "fleet.yaml"
        path.write_text(FLEET.format(resnet_opset=resnet_opset, bert_iterations=bert_iterations), encoding="utf-8")
        return str(path)

    write.root = root
    return write


def run(fleet_file: str, out):
    from flows import run_fleet_flow

    done = []
    summary = run_fleet_flow(fleet_file, str(out), concurrency=2, on_model_done=done.append)
    assert sorted(o.name for o in done) == ["bert", "broken", "resnet"]  # progress reported every model
    return {m.name: m for m in summary.models}


def prefect_artifacts(*keys: str) -> dict:
    """The latest Prefect artifact of each key, its data parsed."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_latest_artifacts(
            artifact_filter=ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(any_=list(keys)))
        )
    for artifact in found:
        if isinstance(artifact.data, str) and artifact.type == "table":
            artifact.data = json.loads(artifact.data)
    return {a.key: a for a in found}


def test_fleet_caches_by_content_and_reruns_only_what_changed(prefect_harness, fleet_dir):
    out = fleet_dir.root / "out"
    first = run(fleet_dir(), out)
    for name in ("bert", "resnet"):
        m = first[name]
        assert m.status == "ok", m.reason
        assert m.stages == {
            "resolve": "done",
            "inputs": "done",
            "export": "done",
            "validate": "done",
            "profile": "done",
            "report": "done",
        }
        assert m.results["validate"]["passed"] is True
        assert m.results["profile"]["latency_ms"]["p50"] > 0
        cases = {c["case"] for c in json.loads((out / name / "validation.json").read_text())["checks"]}
        assert {"padded", "longest"} <= cases if name == "bert" else "image-size" in cases, cases
        for file in (
            "model.onnx",
            "model.hierarchy.json",
            "validation.json",
            "profile.json",
            "report.md",
            "model.graphml",
        ):
            assert (out / name / file).is_file()
    broken = first["broken"]
    assert (broken.status, broken.failed_stage, broken.exit_code) == ("failed", "inputs", 2)
    assert "config.json is not valid JSON" in broken.reason
    assert broken.stages["export"] == "skipped" and not (out / "broken" / "model.onnx").exists()

    second = run(fleet_dir(), out)
    assert all(second[n].cached for n in ("bert", "resnet")), {n: second[n].stages for n in second}
    shown = prefect_artifacts("fleet-test-fleet-progress", "fleet-test-fleet-summary", "model-test-fleet-bert")
    assert shown["fleet-test-fleet-progress"].data == 100.0  # updates are throttled, the last one always shown
    assert [row["cached"] for row in shown["fleet-test-fleet-summary"].data] == ["yes", "yes", "no"]
    assert "| inputs | cached |" in shown["model-test-fleet-bert"].data
    assert second["bert"].results == first["bert"].results  # the cached results, not new measurements

    third = run(fleet_dir(resnet_opset=17, bert_iterations=3), out)
    assert third["resnet"].stages["export"] == "done"  # a new opset: exported again, and checked again
    assert third["resnet"].stages["validate"] == "done" and third["resnet"].stages["profile"] == "done"
    bert = third["bert"].stages  # only the profile settings changed: only profiling re-runs
    unchanged = ("inputs", "export", "validate", "report")
    assert {s: bert[s] for s in unchanged} == dict.fromkeys(unchanged, "cached")
    assert bert["profile"] == "done" and third["bert"].results["profile"]["iterations"] == 3
    assert json.loads((out / "resnet" / "model.hierarchy.json").read_text())["opset"] == 17

    (out / "bert" / "model.onnx").unlink()  # a cache hit must not hand back a file that is gone
    fourth = run(fleet_dir(resnet_opset=17, bert_iterations=3), out)
    assert fourth["bert"].stages["export"] == "done" and (out / "bert" / "model.onnx").is_file()
    assert fourth["resnet"].cached


def test_cli_run_fleet_hits_the_cache_of_an_earlier_process_and_exits_1_for_a_broken_model(fleet_dir):
    """Runs after the test above: a new process (its own Prefect API) finds the results cached on disk."""
    out = fleet_dir.root / "out"
    result = run_cli(
        "run-fleet",
        fleet_dir(resnet_opset=17, bert_iterations=3),
        "--output-dir",
        str(out),
        env={"COLUMNS": "200", "PREFECT_HOME": str(fleet_dir.root / "prefect-home")},
    )
    assert result.returncode == 1, result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 5}
    assert set(rows) >= {"bert", "resnet", "broken"}, result.stdout
    assert rows["bert"].split("│")[-2].strip() == "yes" and rows["resnet"].split("│")[-2].strip() == "yes"
    assert "pass" in rows["bert"] and "failed at inputs" in rows["broken"]
    assert "broken at inputs:" in result.stderr and "config.json is not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr
    # Its ephemeral API records task runs in batches (flows.TASK_RUN_RECORDS): all of them are written, in their
    # final state, though the process exits right after its flow run.
    with contextlib.closing(sqlite3.connect(fleet_dir.root / "prefect-home" / "prefect.db")) as db:
        task_runs = sorted(db.execute("SELECT task_key LIKE '%resolve%', state_name FROM task_run").fetchall())
    assert task_runs == [
        (0, "Cached"),
        (0, "Cached"),
        (0, "Failed"),
        (0, "Failed"),
        (1, "Completed"),
        (1, "Completed"),
        (1, "Completed"),
    ], task_runs


def test_run_one_model_flow(prefect_harness, model_dirs, tmp_path):
    from flows import run_model_flow

    outcome = run_model_flow(
        str(model_dirs["tiny-resnet"]), str(tmp_path), name="r", opset=17, profiling={"enabled": False}
    )
    assert outcome.status == "ok", outcome.reason
    assert set(outcome.stages) == {"resolve", "inputs", "export", "validate", "report"}
    assert outcome.source["kind"] == "local" and outcome.source["fingerprint"].startswith("sha256:")
    assert (tmp_path / "r" / "model.onnx").is_file() and outcome.results["validate"]["passed"]


def test_only_transient_faults_are_retried(prefect_harness, tmp_path):
    """A deterministic failure fails at once; a transient one is retried until it heals."""
    from prefect import task

    from modelexport.errors import BadInputError, TransientError
    from tasks.policy import RETRY

    calls = {"bad": 0, "flaky": 0}

    @task(**RETRY)
    def bad():
        calls["bad"] += 1
        raise BadInputError("no such model")

    @task(**RETRY)
    def flaky():
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise TransientError("hub said 503")
        return "ok"

    with pytest.raises(BadInputError):
        bad()
    assert calls["bad"] == 1
    assert flaky() == "ok" and calls["flaky"] == 3


def test_flow_runs_of_one_process_share_one_tls_context(prefect_harness, monkeypatch):
    """Each flow run gets a new API client, and Prefect's would load the CA bundle each time (~40 ms); ours reuse
    the process's TLS context, and an artifact posted in the run uses the run's client."""
    import ssl

    from prefect import flow
    from prefect.artifacts import create_markdown_artifact

    import flows

    @flow(name="tls-test")
    def posting() -> str:
        create_markdown_artifact("posted", key="tls-test")
        return "done"

    made = []
    real = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context", lambda *args, **kwargs: made.append(1) or real(*args, **kwargs))
    with flows._flow_run_setup():
        assert posting() == "done"
    made.clear()  # the first run may also start what lives as long as the process (the events client)
    for _ in range(2):
        with flows._flow_run_setup():
            assert posting() == "done"
    assert made == []


def test_the_ephemeral_api_gets_time_to_start_and_records_task_runs_in_batches_unless_the_user_set_them():
    """Its first start on a new PREFECT_HOME migrates the database: ~19 s of Prefect's default 20 on 2 cores."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as LIMIT
    from prefect.settings import PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE as BATCH
    from prefect.settings import Settings

    import flows

    adjusted = flows._for_ephemeral_api(Settings())
    assert adjusted.server.ephemeral.startup_timeout_seconds == flows.EPHEMERAL_STARTUP_S > 20
    assert adjusted.flows.heartbeat_frequency is None
    assert adjusted.server.services.task_run_recorder.batch_size == flows.TASK_RUN_RECORDS["batch_size"] > 1
    users = Settings().copy_with_update(updates={LIMIT: 33, BATCH: 7})
    assert flows._for_ephemeral_api(users).server.ephemeral.startup_timeout_seconds == 33
    assert flows._for_ephemeral_api(users).server.services.task_run_recorder.batch_size == 7


def test_bad_run_options_fail_before_prefect_starts(tmp_path):
    result = run_cli("run", str(tmp_path), "--opset", "99", timeout=60)
    assert result.returncode == 2 and "opset" in result.stderr and "Traceback" not in result.stderr
    assert textwrap.dedent(result.stderr).count("\n") == 1


def test_artifacts_are_all_posted_progress_in_order_and_the_first_failure_raised_when_the_block_ends(monkeypatch):
    import threading

    from flows import artifacts as module
    from flows.artifacts import Artifacts

    def fail(message):
        raise RuntimeError(message)

    posted = []
    with pytest.raises(RuntimeError, match="API down"):
        with Artifacts() as artifacts:
            artifacts.post(posted.append, 1)
            artifacts.post(fail, "API down")
            artifacts.post(fail, "later")
            artifacts.post(posted.append, 2)
    assert sorted(posted) == [1, 2]  # one failure does not drop the others
    with pytest.raises(KeyError):  # the block's own error wins
        with Artifacts() as artifacts:
            artifacts.post(fail, "API down")
            raise KeyError("model")

    # Progress updates go in order although the pool has threads to spare: the first one is held until both
    # are posted, and the second still lands after it. (The Prefect API is replaced here only to hold a call.)
    release, shown = threading.Event(), []

    def update(artifact_id, percent):
        if percent == 50:
            assert release.wait(timeout=30)
        shown.append((artifact_id, percent))

    monkeypatch.setattr(module, "create_progress_artifact", lambda *args, **kwargs: "progress-id")
    monkeypatch.setattr(module, "update_progress_artifact", update)
    with Artifacts() as artifacts:
        progress = artifacts.progress("fleet-x-progress", "models of fleet x finished")
        progress(50)
        progress(100)
        release.set()
    assert shown == [("progress-id", 50), ("progress-id", 100)]


def test_a_with_past_decoder_runs_cold_then_warm_and_logs_both_phases(prefect_harness, model_dirs, tmp_path):
    import mlflow

    from flows import run_model_flow

    settings = dict(name="lm", task="text-generation-with-past", profiling={"warmup": 0, "iterations": 2})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cold = run_model_flow(str(model_dirs["tiny-llama-lm"]), str(tmp_path), tracking_uri=uri, **settings)
    assert cold.status == "ok", cold.reason
    assert cold.results["validate"]["decode"]["passed"] is True
    assert set(cold.results["profile"]["phases"]) == {"prefill", "decode"}
    warm = run_model_flow(str(model_dirs["tiny-llama-lm"]), str(tmp_path), tracking_uri=uri, **settings)
    assert warm.status == "ok" and warm.cached, warm.stages
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    metrics = next(r.data.metrics for r in runs if "decode_latency_p50_ms" in r.data.metrics)
    assert metrics["prefill_latency_p50_ms"] > 0 and metrics["decode_attributed_fraction"] >= 0.99


SEQ2SEQ_FLEET = """
name: generators
defaults:
  profile: {warmup: 0, iterations: 2}
models:
  - id: models/tiny-llama-lm
    name: lm
    task: text-generation-with-past
  - id: models/tiny-t5
    name: t5
    task: text2text-generation-with-past
"""


def test_a_fleet_of_a_with_past_decoder_and_an_encoder_decoder_runs_cold_then_warm_into_mlflow(
    prefect_harness, model_dirs, tmp_path
):
    """The encoder-decoder's directory of two files goes through every stage, is cached while every file is
    intact, and each file lands in MLflow as a logged model of its own."""
    import mlflow

    from flows import run_fleet_flow

    for name in ("tiny-llama-lm", "tiny-t5"):
        shutil.copytree(model_dirs[name], tmp_path / "models" / name)
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(SEQ2SEQ_FLEET, encoding="utf-8")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "out"

    def run_once():
        summary = run_fleet_flow(str(fleet), str(out), tracking_uri=uri)
        return {m.name: m for m in summary.models}

    cold = run_once()
    assert all(m.status == "ok" for m in cold.values()), {n: m.reason for n, m in cold.items()}
    t5 = cold["t5"]
    assert t5.results["validate"]["decode"]["passed"] is True
    assert set(t5.results["profile"]["phases"]) == {"encode", "prefill", "decode"}
    assert t5.results["export"]["stats"]["coverage"] == 1.0
    assert {p["stats"]["coverage"] for p in t5.results["export"]["parts"].values()} == {1.0}
    for file in ("encoder_model.onnx", "decoder_model.onnx", "encoder_model.hierarchy.json"):
        assert (out / "t5" / "model" / file).is_file()
    assert (out / "t5" / "decoder_model_report" / "report.md").is_file()
    assert set(cold["lm"].results["profile"]["phases"]) == {"prefill", "decode"}

    warm = run_once()
    assert all(m.cached for m in warm.values()), {n: m.stages for n, m in warm.items()}

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    t5_runs = [r for r in runs if "encoder_model.tag_coverage" in r.data.metrics]
    assert t5_runs and all(r.info.status == "FINISHED" for r in t5_runs)
    first = min(t5_runs, key=lambda r: r.info.start_time)
    assert first.data.metrics["decoder_model.tag_coverage"] == 1.0 and first.data.metrics["encode_kernel_ms"] > 0
    assert first.data.tags["modelexport.model_uri.encoder_model"] != first.data.tags["modelexport.model_uri"]
    model = mlflow.onnx.load_model(first.data.tags["modelexport.model_uri.encoder_model"])
    assert [o.name for o in model.graph.output] == ["last_hidden_state"]

    (out / "t5" / "model" / "decoder_model.onnx").unlink()  # one file gone: exported again, not a cache hit
    again = run_once()
    assert again["t5"].stages["export"] == "done" and (out / "t5" / "model" / "decoder_model.onnx").is_file()
    assert again["lm"].cached
