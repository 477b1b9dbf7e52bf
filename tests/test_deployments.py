"""Deployments and scale: deployments/prefect.yaml deployed to a real Prefect server and run by a real process
worker; the fleet flow on a real Dask cluster gives what the thread runner gives; the nightly schedule is the one
the docs state; the CLI's summary and exit code for pipeline stages.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import yaml

from tests import servers
from tests.conftest import REPO, run_cli

PREFECT_FILE = REPO / "deployments" / "prefect.yaml"
PREFECT = str(Path(sys.executable).parent / "prefect")
DEADLINE_S = 240


def test_deployment_runs_on_a_real_server_and_worker(tmp_path, model_dirs, mlflow_tracking_uri):
    deadline = time.monotonic() + DEADLINE_S
    port = servers.free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    env.pop("PREFECT_PROFILE", None)

    def prefect(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [PREFECT, *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=max(1.0, min(timeout, deadline - time.monotonic())),
        )
        assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    server_log = tmp_path / "server.log"
    with server_log.open("w") as log:
        server = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-services"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = None
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"{api}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        servers.poll(healthy, deadline, "prefect server", server, server_log)
        prefect("work-pool", "create", "modelexport", "--type", "process")
        deployed = prefect("--no-prompt", "deploy", "--prefect-file", str(PREFECT_FILE.relative_to(REPO)), "--all")
        for name in ("export-fleet/nightly-fleet", "export-model/single-model", "export-fleet-dask/fleet-on-dask"):
            assert name in deployed.stdout, deployed.stdout

        out = tmp_path / "stage"
        params = {
            "model": str(model_dirs["tiny-resnet"]),
            "output_dir": str(out),
            "name": "resnet",
            "profiling": {"warmup": 0, "iterations": 2},
        }
        triggered = prefect("deployment", "run", "export-model/single-model", "--params", json.dumps(params))
        run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", triggered.stdout).group(1)

        worker_log = tmp_path / "worker.log"
        with worker_log.open("w") as log:  # --run-once --limit 1: take the run, wait for it, exit
            worker = subprocess.Popen(
                [PREFECT, "worker", "start", "--pool", "modelexport", "--run-once", "--limit", "1"],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def finished() -> dict | None:
            state = httpx.get(f"{api}/flow_runs/{run_id}", timeout=5).json()["state"]
            return state if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

        state = servers.poll(finished, deadline, "flow run", None, worker_log)
        assert state["type"] == "COMPLETED", f"{state}\n{worker_log.read_text()[-3000:]}"
        for file in ("model.onnx", "model.hierarchy.json", "validation.json", "profile.json", "report.md"):
            assert (out / "resnet" / file).is_file(), file
        sidecar = json.loads((out / "resnet" / "model.hierarchy.json").read_text())
        assert sidecar["stats"]["coverage"] == 1.0
        assert json.loads((out / "resnet" / "validation.json").read_text())["passed"] is True
        flow_run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=5).json()
        assert flow_run["work_queue_name"] == "default"
        artifacts = httpx.post(
            f"{api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}, timeout=5
        ).json()
        assert any(a["key"] == "model-resnet" for a in artifacts), [a["key"] for a in artifacts]
        # The worker's MLFLOW_TRACKING_URI (the session's store) got the model's run, tied to the flow run.
        from mlflow import MlflowClient

        client = MlflowClient(mlflow_tracking_uri)
        experiment = client.get_experiment_by_name("modelexport")
        (mlflow_run,) = client.search_runs(
            [experiment.experiment_id], f"tags.`modelexport.prefect_flow_run_id` = '{run_id}'"
        )
        assert mlflow_run.info.status == "FINISHED" and mlflow_run.data.tags["modelexport.model"] == "resnet"
        assert mlflow_run.data.metrics["validation_passed"] == 1.0
    finally:
        for proc in (worker, server):
            if proc is not None:
                servers.stop(proc)


FLEET = """
name: dask-fleet
defaults:
  profile: {warmup: 0, iterations: 2}
models:
  - id: models/tiny-bert
    name: bert
  - id: models/tiny-resnet
    name: resnet
"""


def _comparable(summary, out: str) -> dict:
    """What must not depend on the runner: status, stages, node counts, tags, parity."""
    from modelexport import storage

    result = {}
    for m in summary.models:
        sidecar = json.loads((storage.fetch(storage.join(out, m.name)) / "model.hierarchy.json").read_text())
        result[m.name] = {
            "status": m.status,
            "stages": m.stages,
            "stats": m.results["export"]["stats"],
            "strategy": m.results["export"]["strategy"],
            "tags": sorted(sidecar["tags"]),
            "node_tags": sidecar["node_tags"],
            "parity": m.results["validate"]["passed"],
        }
    return result


def test_fleet_on_a_separate_dask_scheduler_and_workers_matches_the_thread_runner(
    prefect_harness, model_dirs, tmp_path, s3
):
    """`dask scheduler` and two `dask worker` processes started apart, each worker in a directory of its own: the
    outputs go to the shared store, and are what the thread runner gives."""
    from distributed import Client

    from flows import run_fleet_flow

    for name in ("tiny-bert", "tiny-resnet"):
        shutil.copytree(model_dirs[name], tmp_path / "models" / name)
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET, encoding="utf-8")
    bucket = servers.new_bucket(s3)
    threads = run_fleet_flow(str(fleet), f"{bucket}/threads", concurrency=2, track=False)

    port = servers.free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = servers.base_env()
    dask = str(servers.BIN / "dask")
    procs = [servers.spawn([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                           tmp_path / "scheduler.log", env)]  # fmt: skip
    try:
        for name in ("w1", "w2"):
            folder = tmp_path / name
            folder.mkdir()
            args = [dask, "worker", address, "--nthreads", "1", "--no-dashboard", "--name", name]
            own = {"MODELEXPORT_SCRATCH_DIR": str(folder / "scratch")}
            procs.append(servers.spawn(args, folder / "worker.log", {**env, **own}, cwd=folder))
        with Client(address, timeout=120) as client:
            client.wait_for_workers(2, timeout=120)
            done, lock = [], threading.RLock()  # a callback holding a lock (as the CLI's progress bar) can't be pickled

            def on_model_done(outcome):
                with lock:
                    done.append(outcome)

            on_dask = run_fleet_flow(
                str(fleet),
                f"{bucket}/dask",
                concurrency=2,
                on_model_done=on_model_done,
                runner="dask",
                dask_address=address,
                track=False,
            )
            ran = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
    finally:
        for proc in reversed(procs):
            servers.stop(proc)
    # Resolving and each model's stages (nested task runs inside the "model" task) ran on the cluster's workers,
    # each in its own scratch.
    assert {"resolve_model", "export_stages"} <= set(ran), ran
    assert sorted(o.name for o in done) == ["bert", "resnet"]
    assert [p for w in ("w1", "w2") for p in (tmp_path / w / "scratch").rglob("model.onnx")]
    expected = _comparable(threads, f"{bucket}/threads")
    assert expected["bert"]["status"] == "ok" and expected["bert"]["stats"]["total_nodes"] > 100
    assert _comparable(on_dask, f"{bucket}/dask") == expected


def _cron_in_docs(text: str) -> str:
    match = re.search(r"nightly: cron `([^`]+)`", text)
    assert match, "the docs do not state the nightly schedule"
    return match.group(1)


def test_nightly_schedule_is_the_documented_one():
    spec = yaml.safe_load(PREFECT_FILE.read_text(encoding="utf-8"))
    scheduled = {d["name"]: d["schedules"] for d in spec["deployments"] if d.get("schedules")}
    assert list(scheduled) == ["nightly-fleet"]
    (schedule,) = scheduled["nightly-fleet"]
    docs = (REPO / "deployments" / "README.md").read_text(encoding="utf-8")
    assert schedule["cron"] == _cron_in_docs(docs)
    assert (
        f"({schedule['cron'].split()[1].zfill(2)}:{schedule['cron'].split()[0].zfill(2)} "
        f"{schedule['timezone']})" in docs
    )
    assert "deployments/README.md" in (REPO / "README.md").read_text(encoding="utf-8")
    for d in spec["deployments"]:
        assert d["work_pool"]["name"] == "modelexport" and ":" in d["entrypoint"]
        assert (REPO / d["entrypoint"].split(":")[0]).is_file()


def test_serve_builds_the_same_deployments():
    from prefect.schedules import Cron  # noqa: F401  (serve's schedules are Prefect cron schedules)

    from cli.serve_cmd import read_deployments
    from flows.serve import to_deployments

    entries = read_deployments(str(PREFECT_FILE), ["nightly-fleet", "single-model"])
    nightly, single = to_deployments(entries)
    assert (nightly.name, nightly.flow_name, single.flow_name) == ("nightly-fleet", "export-fleet", "export-model")
    assert nightly.parameters == entries[0]["parameters"]
    (schedule,) = nightly.schedules
    assert schedule.schedule.cron == entries[0]["schedules"][0]["cron"]
    assert str(schedule.schedule.timezone) == entries[0]["schedules"][0]["timezone"]
    assert not single.schedules
    bad = run_cli("serve", "--name", "no-such", cwd=REPO)
    assert bad.returncode == 2 and "no deployment named no-such" in bad.stderr


def test_cli_summary_and_exit_code_for_a_pipeline_stage(prefect_harness, model_dirs, tmp_path, capsys, monkeypatch):
    from cli import main

    for var in ("PREFECT_LOGGING_LEVEL", "DASK_LOGGING__DISTRIBUTED", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.setenv(var, os.environ.get(var, "WARNING"))  # restored after: the CLI sets them in-process
    shutil.copytree(model_dirs["tiny-resnet"], tmp_path / "models" / "tiny-resnet")
    (tmp_path / "models" / "broken").mkdir()
    (tmp_path / "models" / "broken" / "config.json").write_text("{ not json", encoding="utf-8")
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "name: stage\ndefaults: {profile: {warmup: 0, iterations: 2}}\nmodels:\n"
        "  - {id: models/tiny-resnet, name: resnet}\n  - {id: models/broken, name: broken}\n"
    )
    assert main(["run-fleet", str(fleet), "--output-dir", str(tmp_path / "out"), "--json", "-"]) == 1
    captured = capsys.readouterr()
    summary = json.loads(captured.out)  # stdout is the JSON only; the table went to stderr
    assert (summary["exit_code"], summary["status"], summary["exported"], summary["failed"]) == (
        1,
        "failed",
        1,
        ["broken"],
    )
    models = {m["name"]: m for m in summary["models"]}
    assert models["resnet"]["status"] == "ok" and models["resnet"]["results"]["validate"]["passed"] is True
    assert str(tmp_path / "out" / "resnet" / "model.onnx") in models["resnet"]["files"]["export"]
    assert (models["broken"]["failed_stage"], models["broken"]["exit_code"]) == ("inputs", 2)
    assert "resnet" in captured.err and "1 of 2 models failed" in captured.err

    assert (
        main(
            [
                "run",
                str(tmp_path / "models" / "tiny-resnet"),
                "--output-dir",
                str(tmp_path / "out"),
                "--name",
                "resnet",
                "--iterations",
                "2",
                "--json",
                str(tmp_path / "run.json"),
            ]
        )
        == 0
    )
    single = json.loads((tmp_path / "run.json").read_text())
    assert (single["exit_code"], single["fleet"], single["failed"]) == (0, None, [])
    assert single["models"][0]["stages"]["export"] == "cached"  # same export settings as in the fleet

    bad = run_cli("run-fleet", str(fleet), "--dask-address", "tcp://127.0.0.1:1", "--json", str(tmp_path / "s.json"))
    assert bad.returncode == 2 and "--dask-address needs --runner dask" in bad.stderr
    assert not (tmp_path / "s.json").exists()
