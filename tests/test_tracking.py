"""MLflow tracking of exports against real stores: a SQLite file and a real `mlflow server` on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tracking import runs as tracking_runs

SECRET = "hf_PlantedSecretToken1234567890"
FLEET = "nightly"
PASSING, FAILING, RAISING = "tiny-bert", "tiny-resnet", "broken"


def profile_for(latency_p50: float) -> dict:
    """A profile.json as modelexport.profile writes it."""
    return {
        "latency_ms": {
            "mean": latency_p50 * 1.05,
            "p50": latency_p50,
            "p90": latency_p50 * 1.2,
            "p99": latency_p50 * 1.4,
            "stdev": latency_p50 * 0.05,
        },
        "throughput_per_s": 1000 / latency_p50,
        "attributed_fraction": 0.97,
        "modules": [
            {"tag": f"/Root/Layer.{i}", "self_ms": latency_p50 / (i + 2), "total_ms": latency_p50, "nodes": 10}
            for i in range(7)
        ],
    }


def validation_for(sidecar: dict, passed: bool) -> dict:
    """A validation report (ValidationReport.to_dict()) for every output of the export."""
    diff = 2e-6 if passed else 0.5
    return {
        "onnx": sidecar["onnx"],
        "model": sidecar["model"]["ref"],
        "passed": passed,
        "tolerances": {"atol": 1e-4, "rtol": 1e-3},
        "seeds": [0],
        "summary": "all checks passed" if passed else f"output {sidecar['outputs'][0]} is off by 0.5 absolute",
        "checks": [
            {
                "seed": 0,
                "case": "export",
                "shapes": {},
                "output": name,
                "passed": passed,
                "max_abs_diff": diff,
                "max_rel_diff": diff * 10,
                "error": None,
            }
            for name in sidecar["outputs"]
        ],
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with a SQLite backend and served artifacts in `workdir`.

    Started early (it takes seconds) so the tests can do other work meanwhile; :meth:`wait` polls its health
    endpoint until a deadline. It runs in its own process group, which :meth:`stop` ends.
    """

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.uri = f"http://127.0.0.1:{free_port()}"
        self.log = workdir / "server.log"
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            self.uri.rsplit(":", 1)[1],
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{workdir / 'server.db'}",
            "--serve-artifacts",
            "--artifacts-destination",
            str(workdir / "artifacts"),
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job-runner processes: we need tracking only
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.started = time.monotonic()

    def wait(self, deadline_s: float = 180) -> str:
        """Block until ``/health`` answers 200; return the URI."""
        end = self.started + deadline_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with {self.proc.returncode}: {self.log.read_text(errors='replace')[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as response:
                    if response.status == 200:
                        return self.uri
            except OSError:
                if time.monotonic() > end:
                    raise TimeoutError(f"mlflow server not healthy after {deadline_s}s") from None
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=0.2)  # the poll interval; returns at once if the server died

    def stop(self) -> None:
        for sig, grace in ((signal.SIGTERM, 3), (signal.SIGKILL, None)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                continue


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[MlflowServer]:
    """A real `mlflow server`, started once for this module."""
    running = MlflowServer(tmp_path_factory.mktemp("server"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def outputs(server, exported, tmp_path_factory) -> dict[str, Path]:
    """One output dir per model, as the pipeline leaves it: ONNX, sidecar, validation, profile files.

    A secret is planted in the model reference the sidecar and validation report record. (Asks for the server
    first so that it boots while the models export.)
    """
    root = tmp_path_factory.mktemp("outputs")
    dirs = {}
    for name, passed in ((PASSING, True), (FAILING, False)):
        result = exported(name)
        out = root / name
        out.mkdir()
        shutil.copy(result.onnx_path, out / result.onnx_path.name)
        sidecar = dict(
            result.sidecar, model=dict(result.sidecar["model"], ref=f"https://user:{SECRET}@hub.example/org/{name}")
        )
        (out / result.sidecar_path.name).write_text(json.dumps(sidecar))
        (out / "validation.json").write_text(json.dumps(validation_for(sidecar, passed)))
        (out / "profile.json").write_text(json.dumps(profile_for(2.0)))
        (out / "profile.md").write_text(f"# profile of {name}\n")
        (out / "modules.png").write_bytes(b"\x89PNG\r\n\x1a\n")
        dirs[name] = out
    return dirs


def log_fleet(uri: str, outputs: dict[str, Path]) -> dict:
    """Log a fleet run the way the flows do: one passing model, one failing validation, one that raises."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_TOKEN", SECRET)
        with tracking_runs.fleet_run(FLEET, tracking_uri=uri) as fleet:
            runs = {}
            for name, out in outputs.items():
                runs[name] = tracking_runs.log_model_export(
                    name,
                    out,
                    fleet=FLEET,
                    parent_run_id=fleet.run_id,
                    tracking_uri=uri,
                    model_ref=f"https://user:{SECRET}@hub.example/org/{name}",
                    validation=json.loads((out / "validation.json").read_text()),
                    profile=json.loads((out / "profile.json").read_text()),
                    export_seconds=1.5,
                )
            with pytest.raises(RuntimeError, match="exporter crashed"):
                with tracking_runs.model_run(RAISING, fleet=FLEET, parent_run_id=fleet.run_id, tracking_uri=uri) as run:
                    runs[RAISING] = run
                    raise RuntimeError("exporter crashed")
    return {"fleet": fleet.run_id} | {name: run.run_id for name, run in runs.items()}


@pytest.fixture(scope="module")
def sqlite_store(outputs, tmp_path_factory):
    """A fleet logged into a fresh SQLite store; returns (uri, run ids, seconds taken)."""
    tmp = tmp_path_factory.mktemp("sqlite")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    start = time.perf_counter()
    ids = log_fleet(uri, outputs)
    print(f"\nlogging a 3-model fleet into SQLite took {time.perf_counter() - start:.2f}s")
    return uri, ids


@pytest.fixture(scope="module")
def server_store(server, outputs):
    """The same fleet logged into a real `mlflow server` (SQLite backend, served artifacts)."""
    uri = server.wait()
    print(f"\nmlflow server healthy {time.monotonic() - server.started:.2f}s after its start")
    return uri, log_fleet(uri, outputs)


STORES = ["sqlite_store", "server_store"]


@pytest.fixture(params=STORES)
def store(request):
    return request.getfixturevalue(request.param)


def test_one_parent_run_and_one_nested_run_per_model(store):
    import mlflow

    uri, ids = store
    client = mlflow.MlflowClient(uri)
    parent = client.get_run(ids["fleet"])
    assert parent.data.tags["modelexport.kind"] == "fleet"
    assert parent.data.tags["modelexport.fleet"] == FLEET
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{ids['fleet']}'")
    assert sorted(r.info.run_name for r in children) == sorted([PASSING, FAILING, RAISING])
    if uri.startswith("sqlite:///"):  # a SQLite store keeps its artifacts beside the database
        db_dir = Path(uri.removeprefix("sqlite:///")).parent
        assert parent.info.artifact_uri.startswith((db_dir / "mlruns").as_uri())
    assert {r.info.run_id for r in children} == {ids[PASSING], ids[FAILING], ids[RAISING]}
    # Two models failed, so the fleet run does not look complete either.
    assert parent.info.status == "FAILED"
    assert parent.data.metrics["models_failed"] == 2 and parent.data.metrics["models_passed"] == 1


def test_model_run_holds_params_metrics_and_artifacts(store):
    import mlflow

    uri, ids = store
    client = mlflow.MlflowClient(uri)
    run = client.get_run(ids[PASSING])
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert run.info.status == "FINISHED" and tags["modelexport.outcome"] == "passed"
    assert params["model.name"] == PASSING and params["strategy"] == "htp"
    assert params["strategy.attempts"] == "htp: ok"
    assert params["model.revision"].startswith("sha256:")
    assert params["opset"] == "18" and params["tolerance.atol"] == "0.0001"
    assert (params["dtype"], params["stream_weights"]) == ("float32", "False")  # the sidecar's, as exported
    assert params["inputs"].startswith("input_ids:int64[batch,sequence]")
    for lib in ("torch", "onnx", "onnxruntime", "transformers", "modelexport"):
        assert params[f"version.{lib}"]
    for key in (
        "export_seconds",
        "nodes_total",
        "tag_coverage",
        "nodes_root_tagged",
        "latency_mean_ms",
        "latency_p50_ms",
        "latency_p90_ms",
        "latency_p99_ms",
        "throughput_per_s",
        "process_peak_rss_mb",
        "parity/last_hidden_state/max_abs_diff",
        "parity/pooler_output/max_rel_diff",
        "validation_passed",
    ):
        assert key in metrics, key
    assert metrics["tag_coverage"] == 1.0 and metrics["latency_p50_ms"] == 2.0
    model_id = tags["modelexport.model_uri"].removeprefix("models:/")  # the logged model holds the numbers too
    assert {m.key: m.value for m in client.get_logged_model(model_id).metrics} == metrics
    modules = [k for k in metrics if k.startswith("module_self_ms/")]
    assert sorted(modules) == [f"module_self_ms/Root.Layer.{i}" for i in range(tracking_runs.TOP_MODULES)]
    files = {a.path for a in client.list_artifacts(run.info.run_id, "outputs")}
    assert files == {
        f"outputs/{n}"
        for n in ("tiny-bert.hierarchy.json", "validation.json", "profile.json", "profile.md", "modules.png")
    }
    attempts = json.loads(mlflow.artifacts.load_text(f"{run.info.artifact_uri}/strategy_attempts.json"))
    assert attempts["name"] == "htp" and attempts["attempts"][0]["ok"] is True


def test_logged_onnx_model_has_signature_and_runs_in_ort(store, outputs, monkeypatch):
    import mlflow
    import mlflow.onnx
    import onnxruntime as ort

    uri, ids = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # set_tracking_uri exports it: restored after the test
    mlflow.set_tracking_uri(uri)
    model_uri = mlflow.MlflowClient(uri).get_run(ids[PASSING]).data.tags["modelexport.model_uri"]
    info = mlflow.models.get_model_info(model_uri)
    assert [s.name for s in info.signature.inputs.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    assert info.signature.inputs.inputs[0].shape == (-1, -1)  # dynamic batch and sequence
    assert [s.name for s in info.signature.outputs.inputs] == ["last_hidden_state", "pooler_output"]
    local = mlflow.artifacts.download_artifacts(model_uri)
    example = mlflow.models.Model.load(local).load_input_example(local)  # the export's inputs, as validated
    assert sorted(example) == ["attention_mask", "input_ids", "token_type_ids"]
    sidecar = json.loads((outputs[PASSING] / "tiny-bert.hierarchy.json").read_text())
    assert example["input_ids"].shape == (1, *sidecar["inputs"]["input_ids"]["shape"][1:])  # one item
    proto = mlflow.onnx.load_model(model_uri)
    assert proto.graph.initializer and all(t.raw_data or t.float_data for t in proto.graph.initializer[:3])
    feeds = {n: np.zeros((1, 5), dtype=np.int64) for n in ("input_ids", "attention_mask", "token_type_ids")}
    logged = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    original = ort.InferenceSession(str(outputs[PASSING] / "tiny-bert.onnx"), providers=["CPUExecutionProvider"]).run(
        None, feeds
    )
    assert logged[0].shape == (1, 5, 32)
    np.testing.assert_array_equal(logged[0], original[0])


def test_input_example_is_one_item_and_large_images_get_the_signature_alone():
    from tracking import run_record

    def spec(**shapes):
        return {
            "inputs": {n: {"shape": s, "dtype": "float32", "dynamic_axes": {"0": "batch"}} for n, s in shapes.items()}
        }

    small = run_record.input_example(spec(pixel_values=[2, 3, 32, 32]))
    assert small["pixel_values"].shape == (1, 3, 32, 32)
    # MLflow would write 150,528 values as JSON, parse them back and run the model: ~1 s of the record.
    assert run_record.input_example(spec(pixel_values=[2, 3, 224, 224])) is None
    assert run_record.input_example({"inputs": {}}) is None


def test_an_example_that_leaves_out_a_graph_input_is_not_given_to_mlflow():
    import numpy as np
    from onnx import TensorProto, helper

    from tracking.mlflow_artifacts import runnable_example

    floats = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ("ids", "past", "y")]
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1], [2.0])
    nodes = [helper.make_node("Add", ["ids", "past"], ["s"]), helper.make_node("Mul", ["s", "w"], ["y"])]
    proto = helper.make_model(helper.make_graph(nodes, "g", floats[:2], floats[2:], [weight]))
    proto.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [1]))  # a weight as an input
    full = {"ids": np.ones(1, np.float32), "past": np.ones(1, np.float32)}
    assert runnable_example(proto, full) is full
    assert runnable_example(proto, {"ids": full["ids"]}) is None  # a with-past decoder's encoder pasts missing
    assert runnable_example(proto, None) is None


def test_a_cached_fleet_run_finds_the_runs_it_cites_in_one_search(outputs, tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tracking_runs.fleet_run(FLEET, tracking_uri=uri) as first:
        logged = tracking_runs.log_model_export(
            PASSING, outputs[PASSING], fleet=FLEET, parent_run_id=first.run_id, tracking_uri=uri
        )
    searches = []
    search_runs = mlflow.MlflowClient.search_runs

    def counted(self, ids, query="", *args, **kwargs):
        searches.append(query)
        return search_runs(self, ids, query, *args, **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "search_runs", counted)
    again = tracking_runs.start_fleet(FLEET, tracking_uri=uri)
    tracking_runs.find_earlier_runs(again, models=2)
    searches.clear()
    cited = tracking_runs.log_model_export(
        PASSING,
        outputs[PASSING],
        fleet=FLEET,
        parent_run_id=again.run_id,
        tracking_uri=uri,
        experiment_id=again.experiment_id,
        earlier=again.earlier,
        reuse=True,
    )
    assert cited.reused_run_id == logged.run_id and cited.model_uri == logged.model_uri
    assert not [q for q in searches if "results_digest" in q]  # found beforehand, not searched for one by one
    tracking_runs.end_fleet(again)


def test_registry_has_validated_alias_for_passing_models_only(store):
    import mlflow

    uri, ids = store
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    version = client.get_model_version_by_alias(tracking_runs.registered_name(PASSING, FLEET), tracking_runs.ALIAS)
    assert version.run_id == ids[PASSING]
    assert tracking_runs.registered_name(PASSING, FLEET) == "modelexport.nightly.tiny-bert"
    names = {m.name for m in client.search_registered_models()}
    assert tracking_runs.registered_name(FAILING, FLEET) not in names
    assert tracking_runs.registered_name(RAISING, FLEET) not in names


def test_failed_models_leave_failed_runs_with_the_reason(store):
    import mlflow

    uri, ids = store
    client = mlflow.MlflowClient(uri)
    failing = client.get_run(ids[FAILING])
    assert failing.info.status == "FAILED"
    assert failing.data.tags["modelexport.outcome"] == "failed"
    assert "validation failed: output last_hidden_state is off by 0.5" in failing.data.tags["modelexport.error"]
    assert failing.data.params["error"] == failing.data.tags["modelexport.error"]
    assert failing.data.metrics["validation_passed"] == 0.0  # its numbers are still there to look at
    raising = client.get_run(ids[RAISING])
    assert raising.info.status == "FAILED"
    assert raising.data.tags["modelexport.error"] == "RuntimeError: exporter crashed"


def test_a_failing_run_never_moves_the_alias(sqlite_store, outputs):
    import mlflow

    uri, ids = sqlite_store
    out = outputs[PASSING]
    bad = json.loads((out / "validation.json").read_text()) | {"passed": False, "summary": "drifted"}
    run = tracking_runs.log_model_export(PASSING, out, fleet=FLEET, tracking_uri=uri, validation=bad)
    assert run.failure == "validation failed: drifted" and run.registered_version is None
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    name = tracking_runs.registered_name(PASSING, FLEET)
    assert client.get_model_version_by_alias(name, tracking_runs.ALIAS).run_id == ids[PASSING]
    assert len(client.search_model_versions(f"name = '{name}'")) == 1


def test_a_run_whose_upload_fails_ends_failed_with_its_numbers(sqlite_store, outputs, monkeypatch):
    """Params, metrics and tags are written when a run ends: also when uploading the model failed."""
    import mlflow

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    uri, _ = sqlite_store
    monkeypatch.setattr(tracking_runs, "log_onnx", full_disk)  # a fault we cannot cause on the test's disk
    with pytest.raises(OSError):
        tracking_runs.log_model_export(PASSING, outputs[PASSING], fleet="upload-fails", tracking_uri=uri)
    client = mlflow.MlflowClient(uri)
    experiment = tracking_runs.find_or_create_experiment(client)
    [run] = client.search_runs([experiment], "tags.`modelexport.fleet` = 'upload-fails'")
    assert run.info.status == "FAILED" and run.data.tags["modelexport.error"].startswith("OSError")
    assert run.data.params["model.name"] == PASSING and run.data.metrics["tag_coverage"] == 1.0
    assert "modelexport.model_uri" not in run.data.tags


def test_no_secret_reaches_mlflow(store, tmp_path, monkeypatch):
    """The planted token (env HF_TOKEN, URL credentials in the model reference) is in no param, tag or artifact."""
    import mlflow

    uri, ids = store
    client = mlflow.MlflowClient(uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # set_tracking_uri exports it: restored after the test
    mlflow.set_tracking_uri(uri)
    texts = []
    for run_id in ids.values():
        run = client.get_run(run_id)
        texts += [*run.data.params.values(), *run.data.tags.values(), *run.data.params, *run.data.tags]
        mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(tmp_path / run_id))
        for output in run.outputs.model_outputs if run.outputs else []:
            mlflow.artifacts.download_artifacts(f"models:/{output.model_id}", dst_path=str(tmp_path / output.model_id))
        texts += [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()]
    assert texts and any("hub.example/org/tiny-bert" in t for t in texts)  # the reference itself is kept
    assert not [t for t in texts if SECRET in t]


def test_scrub_removes_credentials(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_PASSWORD", "correct-horse-battery")
    text = (
        "https://bob:pw123@host/x?token=abc123&x=1 Authorization: Bearer abcdefghijkl hf_abcdefghijklmnop "
        "correct-horse-battery"
    )
    scrubbed = tracking_runs.scrub(text)
    for secret in ("pw123", "abc123", "abcdefghijkl", "hf_abcdefghijklmnop", "correct-horse-battery"):
        assert secret not in scrubbed
    assert "https://***@host/x" in scrubbed and "x=1" in scrubbed
    # Each pattern alone (a substring test decides whether its regex runs), in any case the regex would match.
    for text, secret in [
        ("PassWord=s3cr3t", "s3cr3t"),
        ("pa\u017f\u017fword=s3cr3t", "s3cr3t"),
        ("BEARER abcdefghijkl", "abcdefghijkl"),
        ("HTTP://u:pw123@h", "pw123"),
        ("x hf_abcdefghijkl", "hf_abcdefghijkl"),
    ]:
        assert secret not in tracking_runs.scrub(text), text


@pytest.mark.parametrize(
    "text, key",
    [
        ("/BertModel/BertEncoder/BertLayer.0", "BertModel.BertEncoder.BertLayer.0"),
        ("out:0 (x)", "out.0 .x"),
        ("../etc", "etc"),
        ("", "_"),
    ],
)
def test_metric_keys_are_valid_mlflow_names(text, key):
    from mlflow.utils.validation import _validate_metric_name

    assert tracking_runs.metric_key(text) == key
    _validate_metric_name(tracking_runs.metric_key("module_self_ms", text))
    long = tracking_runs.metric_key("m", "/Deep" * 100)
    assert len(long) <= 250
    _validate_metric_name(long)


def test_default_tracking_uri_is_sqlite_in_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking_runs.resolve_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_runs.resolve_tracking_uri() == "http://127.0.0.1:5000"
    assert tracking_runs.resolve_tracking_uri("sqlite:///x.db") == f"sqlite:///{tmp_path / 'x.db'}"


E2E_FLEET = """
name: e2e
defaults:
  validate: {atol: 1.0e-4}
  profile: {warmup: 0, iterations: 2}
models:
  - id: models/tiny-bert
    name: bert
  - id: models/broken
    name: broken
"""


@pytest.fixture(scope="module")
def e2e_fleet(tmp_path_factory, model_dirs) -> Path:
    """A fleet file with a good tiny BERT and a model whose config.json is corrupt."""
    root = tmp_path_factory.mktemp("e2e")
    shutil.copytree(model_dirs["tiny-bert"], root / "models" / "tiny-bert")
    (root / "models" / "broken").mkdir(parents=True)
    (root / "models" / "broken" / "config.json").write_text("{ not json", encoding="utf-8")
    (root / "fleet.yaml").write_text(E2E_FLEET, encoding="utf-8")
    return root / "fleet.yaml"


@pytest.mark.parametrize("backend", ["sqlite", "server"])
def test_run_fleet_logs_a_parent_run_and_a_nested_run_per_model(
    backend, e2e_fleet, server, prefect_harness, tmp_path, monkeypatch
):
    import mlflow
    import mlflow.onnx
    import onnxruntime as ort

    from flows import run_fleet_flow

    uri = server.wait() if backend == "server" else f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = run_fleet_flow(str(e2e_fleet), str(tmp_path / "out"), concurrency=2, tracking_uri=uri)
    assert {m.name: m.status for m in summary.models} == {"bert": "ok", "broken": "failed"}

    client = mlflow.MlflowClient(uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(tracking_runs.DEFAULT_EXPERIMENT).experiment_id
    parents = client.search_runs([experiment], "tags.`modelexport.kind` = 'fleet' and tags.`modelexport.fleet` = 'e2e'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.tags["modelexport.prefect_flow_run_id"]  # the flow run that produced it
    assert parent.info.status == "FAILED" and "broken" in parent.data.tags["modelexport.error"]
    counts = {k: parent.data.metrics[k] for k in ("models_total", "models_passed", "models_failed")}
    assert counts == {"models_total": 2, "models_passed": 1, "models_failed": 1}  # counted by the recorder
    children = {
        r.info.run_name: r
        for r in client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    }
    assert sorted(children) == ["bert", "broken"]

    bert = children["bert"]
    assert bert.info.status == "FINISHED" and bert.data.tags["modelexport.outcome"] == "passed"
    assert bert.data.params["tolerance.atol"] == "0.0001" and bert.data.params["strategy"]
    for key in (
        "export_seconds",
        "tag_coverage",
        "nodes_total",
        "latency_p50_ms",
        "latency_p99_ms",
        "throughput_per_s",
        "peak_memory_mb",
        "parity/last_hidden_state/max_abs_diff",
        "validation_passed",
    ):
        assert key in bert.data.metrics, key
    assert bert.data.metrics["validation_passed"] == 1.0
    assert any(k.startswith("module_self_ms/") for k in bert.data.metrics)
    files = {Path(a.path).name for a in client.list_artifacts(bert.info.run_id, "outputs")}
    assert {"model.hierarchy.json", "validation.json", "profile.json", "profile.md", "modules.png"} <= files
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # set_tracking_uri exports it: restored after the test
    mlflow.set_tracking_uri(uri)
    proto = mlflow.onnx.load_model(bert.data.tags["modelexport.model_uri"])
    feeds = {i.name: np.ones((1, 4), dtype=np.int64) for i in proto.graph.input}
    assert ort.InferenceSession(proto.SerializeToString()).run(None, feeds)[0].shape == (1, 4, 32)
    version = client.get_model_version_by_alias(tracking_runs.registered_name("bert", "e2e"), tracking_runs.ALIAS)
    assert version.run_id == bert.info.run_id

    broken = children["broken"]
    assert broken.info.status == "FAILED"
    assert broken.data.tags["modelexport.error"].startswith("failed at inputs: ")
    assert "config.json is not valid JSON" in broken.data.params["error"]
    names = {m.name for m in client.search_registered_models()}
    assert tracking_runs.registered_name("broken", "e2e") not in names

    # A re-run that is all cache hits gets its own run with params and metrics, citing the run that logged the
    # model and files instead of uploading them again, and it registers no new version.
    again = run_fleet_flow(str(e2e_fleet), str(tmp_path / "out"), concurrency=2, tracking_uri=uri)
    assert [m.cached for m in again.models if m.name == "bert"] == [True]
    latest = client.search_runs(
        [experiment], "tags.`modelexport.model` = 'bert'", order_by=["attributes.start_time DESC"]
    )[0]
    assert latest.info.run_id != bert.info.run_id and latest.info.status == "FINISHED"
    assert latest.data.tags["modelexport.reused_run_id"] == bert.info.run_id
    assert latest.data.tags["modelexport.model_uri"] == bert.data.tags["modelexport.model_uri"]
    assert latest.data.metrics["validation_passed"] == 1.0 and "latency_p50_ms" in latest.data.metrics
    assert client.list_artifacts(latest.info.run_id) == []
    version = client.get_model_version_by_alias(tracking_runs.registered_name("bert", "e2e"), tracking_runs.ALIAS)
    assert version.run_id == bert.info.run_id


def test_connect_leaves_the_process_environment_as_it_was(tmp_path, monkeypatch):
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; subprocesses started later must not inherit it."""
    from tracking import runs as tracking_runs

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    tracking_runs.connect(f"sqlite:///{tmp_path / 'store.db'}")
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///elsewhere.db"
    assert "MLFLOW_REGISTRY_URI" not in os.environ


def test_sqlite_store_uses_the_write_ahead_log(sqlite_store):
    """Few fsyncs per small transaction, and readers (review) never wait for a writer: the mode stays in the file."""
    import sqlite3

    uri, _ = sqlite_store
    with contextlib.closing(sqlite3.connect(uri.removeprefix("sqlite:///"))) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_tracking_uri_password_reaches_neither_prefect_mlflow_nor_the_terminal(
    server, model_dirs, prefect_harness, tmp_path, capfd
):
    """`--tracking-uri http://user:PASSWORD@host` authenticates through MLflow's own variables: the password is in
    no flow-run parameter, state or artifact, no MLflow record, and not in the run URL MLflow prints."""
    from prefect.client.orchestration import get_client

    from flows import run_model_flow
    from modelexport.fleet import plan_model

    password = "PlantedTrackingPassword42"
    uri = server.wait().replace("http://", f"http://modeluser:{password}@")
    plan = plan_model(str(model_dirs["tiny-resnet"]), name="uri-secret", profiling={"enabled": False})
    outcome = run_model_flow(plan, str(tmp_path / "out"), tracking_uri=uri)
    assert outcome.status == "ok", outcome.reason

    places = {"terminal": "".join(capfd.readouterr())}
    with get_client(sync_client=True) as client:
        for run in client.read_flow_runs():
            places[f"flow run {run.name}"] = json.dumps(run.model_dump(mode="json"))
        for artifact in client.read_artifacts():
            places[f"artifact {artifact.key}"] = json.dumps(artifact.model_dump(mode="json"))
    for path in server.workdir.rglob("*"):
        if path.is_file():
            places[str(path)] = path.read_bytes().decode("utf-8", "replace")
    assert any("uri-secret" in text for where, text in places.items() if where.startswith("flow run"))
    assert [where for where, text in places.items() if password in text] == []
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ  # only while the flow ran


def test_credentials_apart_moves_a_uri_password_to_mlflows_variables(monkeypatch):
    from tracking.mlflow_store import credentials_apart

    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "the user's own")
    with credentials_apart("https://me:p%40ss@mlflow.example:8443/path") as clean:
        assert clean == "https://mlflow.example:8443/path"
        assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("me", "p@ss")
    assert "MLFLOW_TRACKING_USERNAME" not in os.environ and os.environ["MLFLOW_TRACKING_PASSWORD"] == "the user's own"
    for plain in (None, "sqlite:///x.db", "http://127.0.0.1:5000"):
        with credentials_apart(plain) as same:
            assert same == plain


def test_the_module_where_parity_broke_is_a_param_of_the_run():
    from tracking import run_record

    validation = {
        "passed": False,
        "checks": [],
        "localization": {"tag": "/M/Layer.1", "summary": "first diverges at module layer.1 (/M/Layer.1): ..."},
    }
    params, _metrics = run_record.params_and_metrics(None, validation, None, None, tracking_runs.metric_key, 5)
    assert params["parity.first_divergent_module"] == "/M/Layer.1"
    assert params["parity.divergence"].startswith("first diverges at module layer.1")
    assert (
        "parity.first_divergent_module"
        not in run_record.params_and_metrics(
            None, {"passed": True, "checks": [], "localization": None}, None, None, tracking_runs.metric_key, 5
        )[0]
    )
