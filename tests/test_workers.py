"""Past one machine: workers in separate working directories that share only an S3-compatible store (moto's real
server on 127.0.0.1), a Prefect server and an MLflow server. What one worker exported is a cache hit for the other;
two workers on one model compute it once; a worker killed mid-upload leaves nothing that looks complete; a fleet
deployment spreads its models over two Prefect workers, with MLflow's artifacts in the same bucket.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests import servers
from tests.conftest import REPO, run_cli
from tests.servers import keys, new_bucket

DEADLINE_S = 300


def fleet_file(tmp_path: Path, model_dirs, names=("tiny-bert", "tiny-resnet")) -> Path:
    lines = ["name: shared", "defaults:", "  profile: {warmup: 0, iterations: 2}", "models:"]
    lines += [f"  - {{id: {model_dirs[n]}, name: {n}}}" for n in names]
    path = tmp_path / "fleet.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def worker_dir(tmp_path: Path, name: str) -> tuple[Path, dict]:
    """A working directory of its own, and its own scratch, caches and Prefect home."""
    folder = tmp_path / name
    folder.mkdir()
    return folder, {"MODELEXPORT_SCRATCH_DIR": str(folder / "scratch"), "PREFECT_HOME": str(folder / "prefect")}


def summary(path: Path) -> dict:
    return {m["name"]: m for m in json.loads(path.read_text())["models"]}


def test_a_fleet_kept_in_a_bucket_is_all_cached_for_a_worker_elsewhere(s3, model_dirs, tmp_path):
    bucket = new_bucket(s3)
    fleet = fleet_file(tmp_path, model_dirs)
    out = f"{bucket}/nightly"
    w1, env1 = worker_dir(tmp_path, "w1")
    w2, env2 = worker_dir(tmp_path, "w2")
    args = ("run-fleet", str(fleet), "--output-dir", out, "--no-tracking", "--json", "s.json")

    first = run_cli(*args, cwd=w1, env=env1)
    assert first.returncode == 0, first.stderr[-3000:]
    stored = keys(out)
    for model in ("tiny-bert", "tiny-resnet"):
        for file in ("model.onnx", "model.hierarchy.json", "validation.json", "profile.json", "report.md"):
            assert f"{model}/{file}" in stored, (model, file, stored)
    assert any(k.startswith(".cache/model-") for k in stored) and not [k for k in stored if ".partial-" in k]
    assert not [k for k in stored if k.startswith(".cache/locks/")]  # released
    cold = summary(w1 / "s.json")
    assert all(m["status"] == "ok" and not m["cached"] for m in cold.values())

    # The other worker: its own directory, scratch and (ephemeral) Prefect API; only the bucket is shared.
    second = run_cli(*args, cwd=w2, env=env2)
    assert second.returncode == 0, second.stderr[-3000:]
    warm = summary(w2 / "s.json")
    assert all(m["cached"] and m["status"] == "ok" for m in warm.values()), warm
    assert warm["tiny-bert"]["results"]["export"] == cold["tiny-bert"]["results"]["export"]
    assert not (w2 / "scratch").exists()  # a cache hit reads no file: the stamps are listed in the store

    # A changed setting reruns only what it reaches, on this worker, from the stored export.
    again = run_cli(
        "run", str(model_dirs["tiny-bert"]), "--output-dir", out, "--name", "tiny-bert", "--iterations", "3",
        "--no-tracking", "--json", "r.json", cwd=w2, env=env2,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    stages = summary(w2 / "r.json")["tiny-bert"]["stages"]
    assert stages["export"] == "cached" and stages["validate"] == "cached" and stages["profile"] == "done", stages
    assert (w2 / "scratch").is_dir()  # profiling fetched the ONNX file into this worker's scratch


def test_two_workers_on_one_model_at_once_compute_it_once(s3, model_dirs, tmp_path):
    out = f"{new_bucket(s3)}/run"
    procs, logs = [], []
    for name in ("w1", "w2"):
        folder, env = worker_dir(tmp_path, name)
        args = [sys.executable, "-m", "cli", "run", str(model_dirs["tiny-gpt2"]), "--output-dir", out, "--no-tracking"]
        log = folder / "run.log"
        procs.append(servers.spawn([*args, "--json", "r.json"], log, servers.base_env(**env), cwd=folder))
        logs.append((folder, log))
    for proc in procs:
        proc.wait(timeout=DEADLINE_S)
    for (_, log), proc in zip(logs, procs, strict=True):
        assert proc.returncode == 0, log.read_text()[-3000:]
    runs = [summary(folder / "r.json")["tiny-gpt2"] for folder, _ in logs]
    assert sorted(r["stages"]["export"] for r in runs) == ["cached", "done"], [r["stages"] for r in runs]
    assert runs[0]["results"]["export"]["stats"] == runs[1]["results"]["export"]["stats"]
    assert not [k for k in keys(out) if ".partial-" in k or "/locks/" in k]


KILLED_MID_UPLOAD = """
import os, signal, sys
import s3fs
from modelexport import storage

location = sys.argv[1]
path = storage.local_path(location)
path.parent.mkdir(parents=True, exist_ok=True)
path.write_bytes(os.urandom(1 << 20))
s3fs.S3FileSystem.mv = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # killed between upload and commit
storage.commit([location])
"""


def test_a_worker_killed_mid_upload_leaves_nothing_that_looks_complete(s3, tmp_path):
    from modelexport import storage

    folder = f"{new_bucket(s3)}/m"
    location = f"{folder}/model.onnx"
    env = servers.base_env(MODELEXPORT_SCRATCH_DIR=str(tmp_path / "killed"))
    done = subprocess.run([sys.executable, "-c", KILLED_MID_UPLOAD, location], env=env, cwd=REPO, timeout=120)
    assert done.returncode == -9
    (partial,) = keys(folder)
    assert partial.startswith("model.onnx.partial-")  # uploaded, never committed
    assert storage.stamps([location]) == {location: None}  # so no cache record can count it as written
    fetched = storage.fetch(folder)
    assert list(fetched.iterdir()) == [] if fetched.exists() else True


def test_a_fleet_deployment_spreads_its_models_over_two_workers(s3, model_dirs, tmp_path):
    """The README's multi-worker recipe: servers, two workers in their own directories, the fleet deployment."""
    deadline = time.monotonic() + DEADLINE_S
    bucket = new_bucket(s3)
    env = servers.base_env(**s3)
    with (
        servers.prefect_server(tmp_path, env) as api,
        servers.mlflow_server(tmp_path, env, f"{bucket}/mlflow") as tracking,
    ):
        env.update(PREFECT_API_URL=api, MLFLOW_TRACKING_URI=tracking, PREFECT_WORKER_QUERY_SECONDS="1")
        prefect = str(servers.BIN / "prefect")
        for args in (
            ["work-pool", "create", "modelexport", "--type", "process"],
            ["--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml", "--all"],
        ):
            done = subprocess.run([prefect, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        workers = []
        try:
            # As the recipe: model workers hold one export each; the fleet flow waits on a queue of its own.
            for name, queue in (("w1", "default"), ("w2", "default"), ("fleets", "fleets")):
                folder, own = worker_dir(tmp_path, name)
                args = [prefect, "worker", "start", "--pool", "modelexport", "--work-queue", queue, "--name", name]
                args += ["--limit", "1"] if queue == "default" else []
                logs = {"PREFECT_LOGGING_LEVEL": "INFO"}  # the worker logs each flow run it takes
                workers.append(servers.spawn(args, folder / "worker.log", {**env, **own, **logs}, cwd=folder))

            def polling() -> bool:  # all three asked the API for work: so each model goes to a free worker
                found = httpx.post(f"{api}/work_pools/modelexport/workers/filter", json={}, timeout=5).json()
                return {w["name"] for w in found} >= {"w1", "w2", "fleets"}

            servers.poll(polling, deadline, "workers", None, tmp_path / "w1" / "worker.log")
            fleet = fleet_file(tmp_path, model_dirs)  # two models, dispatched at once: one for each worker
            params = {"fleet_file": str(fleet), "output_dir": f"{bucket}/nightly"}
            run = subprocess.run(
                [prefect, "deployment", "run", "export-fleet/fleet-over-workers", "--params", json.dumps(params)],
                cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert run.returncode == 0, run.stderr[-2000:]
            run_id = run.stdout.split("UUID:")[1].split()[0]

            def finished() -> dict | None:
                state = httpx.get(f"{api}/flow_runs/{run_id}", timeout=5).json()["state"]
                return state if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

            log = tmp_path / "fleets" / "worker.log"
            state = servers.poll(finished, deadline, "fleet flow run", None, log)
            assert state["type"] == "COMPLETED", state["message"] + "\n" + log.read_text()[-3000:]
        finally:
            for proc in workers:
                servers.stop(proc)

        stored = keys(f"{bucket}/nightly")
        for model in ("tiny-bert", "tiny-resnet"):
            assert f"{model}/model.onnx" in stored and f"{model}/validation.json" in stored
        # Each model was a flow run of the one-model deployment, and both workers took some of them.
        children = httpx.post(
            f"{api}/flow_runs/filter",
            json={"flow_runs": {"parent_flow_run_id": {"any_": [run_id]}}},
            timeout=10,
        ).json()
        children = [c for c in children if c["deployment_id"]]
        assert len(children) == 2 and all(c["state"]["type"] == "COMPLETED" for c in children), children
        took = {n: [c for c in children if c["id"] in (tmp_path / n / "worker.log").read_text()] for n in ("w1", "w2")}
        assert took["w1"] and took["w2"] and len(took["w1"]) + len(took["w2"]) == 2, took
        # The fleet's MLflow runs (on the server) have their artifacts in the bucket.
        from mlflow import MlflowClient

        client = MlflowClient(tracking)
        runs = client.search_runs([client.get_experiment_by_name("modelexport").experiment_id])
        assert {r.data.tags.get("modelexport.model") for r in runs} >= {"tiny-bert", "tiny-resnet"}
        assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in runs)
        artifacts = keys(f"{bucket}/mlflow")
        assert any(k.endswith("validation.json") for k in artifacts) and any(k.endswith(".onnx") for k in artifacts)
        # (A re-run from another directory, on a Prefect API of its own, is all cache hits: the first test.)
