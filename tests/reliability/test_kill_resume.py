"""A fleet run killed with SIGKILL in the middle of an export leaves nothing that looks complete: no file under
its final name, no cache record for the unfinished stage, no MLflow run RUNNING forever; running the fleet again
finishes it, taking the finished work from the cache."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

SPEC = '{x: {shape: [2, 4], dynamic_axes: {"0": batch}}}'
FLEET = f"""
name: killed
defaults:
  profile: {{enabled: false}}
models:
  - {{id: "tests.reliability.blocking_model:plain", name: first, input_spec: {SPEC}}}
  - {{id: "tests.reliability.blocking_model:blocking", name: second, input_spec: {SPEC}}}
"""


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", **extra}


def wait_for(path: Path, proc: subprocess.Popen, deadline_s: float = 180) -> None:
    """Poll until `path` exists; fail at once if `proc` ended, or at the deadline."""
    deadline = time.monotonic() + deadline_s
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the process ended (rc {proc.returncode}) before {path.name} appeared:\n{out}\n{err}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"{path.name} did not appear within {deadline_s} s")
        time.sleep(0.05)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process and everything it started (Prefect's ephemeral API server), as a crash would."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _records(cache: Path) -> dict[str, dict]:
    """Every cache record by file name; each must be a complete JSON record."""
    return {p.name: json.loads(p.read_text()) for p in cache.iterdir() if p.is_file()}


def test_sigkill_mid_export_leaves_nothing_complete_and_a_rerun_finishes(prefect_harness, tmp_path, monkeypatch):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)
    out, marker = tmp_path / "out", tmp_path / "second-is-exporting"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "run-fleet", str(fleet), "--output-dir", str(out), "--concurrency", "1"],
        cwd=tmp_path,
        env=_env(MODELEXPORT_TEST_BLOCK=str(marker), PREFECT_HOME=str(tmp_path / "prefect")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_for(marker, proc)
    killed_pid = proc.pid
    kill_group(proc)

    # Nothing under a final name for the model being exported; the finished one is complete.
    assert [p.name for p in (out / "second").iterdir() if not p.name.startswith(".")] == []
    import onnx

    onnx.checker.check_model(onnx.load(str(out / "first" / "model.onnx")), full_check=True)
    records = _records(out / ".cache")  # every record readable: none cut short
    # The first model finished (each stage and the model as a whole); the second has inputs but no export.
    assert sorted(k.split("-")[0] for k in records) == ["export", "inputs", "inputs", "model", "report", "validate"]

    # Records cut short by a kill while Prefect wrote them (it writes in place) must not block caching.
    for name in records:
        if name.startswith("inputs"):
            (out / ".cache" / name).write_text('{"metadata": {"storage_key": ')

    from flows import run_fleet_flow

    again = {m.name: m for m in run_fleet_flow(str(fleet), str(out), concurrency=1).models}
    assert all(m.status == "ok" for m in again.values()), {n: m.reason for n, m in again.items()}
    assert again["first"].stages["export"] == "cached"  # the finished work is reused...
    assert again["second"].stages["export"] == "done"  # ...the interrupted one done again
    assert again["second"].stages["inputs"] == "done"  # its record was cut short

    third = {m.name: m for m in run_fleet_flow(str(fleet), str(out), concurrency=1).models}
    assert all(m.cached for m in third.values()), {n: m.stages for n, m in third.items()}
    for name in ("first", "second"):
        assert json.loads((out / name / "validation.json").read_text())["passed"] is True

    # MLflow: no run left RUNNING; the killed process's fleet run (and a model run it was writing, if any) ends
    # FAILED "interrupted"; a model run it had finished before the kill stays FINISHED.
    if (tmp_path / "mlflow.db").exists():
        from tracking import runs as tracking_runs

        client = tracking_runs.connect(uri)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
        assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
        killed = [r for r in runs if r.data.tags.get(tracking_runs.TAG + "pid") == str(killed_pid)]
        fleet_runs = [r for r in killed if r.data.tags.get(tracking_runs.TAG + "kind") == "fleet"]
        assert len(fleet_runs) == 1, "the killed fleet run was not tracked"
        for r in killed:
            if r in fleet_runs or r.info.status != "FINISHED":
                assert r.info.status == "FAILED"
                assert r.data.tags[tracking_runs.TAG + "error"].startswith("interrupted")
            else:
                assert r.data.tags[tracking_runs.TAG + "model"] == "first"  # finished before the kill


REAPED_SCRIPT = """
import sys, threading
from pathlib import Path
from tracking import runs as tracking_runs
with tracking_runs.fleet_run("reap") as fleet:
    with tracking_runs.model_run("m", fleet="reap", parent_run_id=fleet.run_id):
        Path(sys.argv[1]).write_text("running")
        threading.Event().wait()
"""


def test_runs_of_a_killed_process_are_ended_interrupted_and_live_ones_are_not(tmp_path):
    from tracking import runs as tracking_runs

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    marker = tmp_path / "running"
    proc = subprocess.Popen(
        [sys.executable, "-c", REAPED_SCRIPT, str(marker)],
        cwd=tmp_path,
        env=_env(MLFLOW_TRACKING_URI=uri),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_for(marker, proc)
    kill_group(proc)
    client = tracking_runs.connect(uri)
    experiment = tracking_runs.find_or_create_experiment(client)
    killed = client.search_runs([experiment])
    assert sorted(r.info.status for r in killed) == ["RUNNING", "RUNNING"]  # what a SIGKILL leaves

    with tracking_runs.fleet_run("next", tracking_uri=uri) as live:  # the next start reaps them
        assert tracking_runs.reap_interrupted(client, [experiment]) == []  # a live process's run is never reaped
        assert client.get_run(live.run_id).info.status == "RUNNING"
    for run in killed:
        after = client.get_run(run.info.run_id)
        assert after.info.status == "FAILED", run.info.run_name
        assert after.data.tags[tracking_runs.TAG + "error"] == (
            f"interrupted: its process {proc.pid} ended while the run was RUNNING"
        )


STAGER = """
import sys, time
from pathlib import Path
from modelexport import atomic
folder = Path(sys.argv[1])
staged = atomic.new_staging_dir(folder / "model.onnx")
(staged / "model.onnx").write_bytes(b"half an export")
part = atomic._new_file(folder / "model.graphml")
part.write_text("half a graph")
print("ready", flush=True)
time.sleep(120)
"""


def _start_stager(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", STAGER, str(folder)], env=_env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_staging_of_a_killed_writer_is_removed_by_the_next_run_in_its_folder(model_dirs, tmp_path):
    """A killed run's hidden staging (`.model.onnx.*/model.onnx`, `.model.graphml.*.part`) stayed forever; now the
    next run writing into that folder removes it. A live writer's staging (a concurrent process's) is left alone,
    as are hidden files that are not staging; staging of older versions (no writer in the name) goes once a day
    old."""
    folder = tmp_path / "out"
    folder.mkdir()
    killed = _start_stager(folder)
    killed.kill()
    killed.wait(timeout=30)
    dead = sorted(p.name for p in folder.iterdir())
    assert len(dead) == 2 and all(f"-{killed.pid}." in name for name in dead), dead
    live = _start_stager(folder)
    try:
        alive = sorted(set(p.name for p in folder.iterdir()) - set(dead))
        (folder / ".keep").write_text("the user's")
        day_old = time.time() - 25 * 3600
        for name, is_dir in (
            (".model.onnx.ab_cd12x", True),
            (".report.md.0123abcd.part", False),
            (".model.onnx.fresh123", True),
        ):
            path = folder / name
            if is_dir:
                path.mkdir()
                (path / "model.onnx").write_bytes(b"old half export")
            else:
                path.write_text("old half report")
            if "fresh" not in name:
                os.utime(path, (day_old, day_old))

        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "cli",
                "export",
                str(model_dirs["tiny-bert"]),
                str(folder / "model.onnx"),
                "--strategy",
                "htp",
            ],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        left = sorted(p.name for p in folder.iterdir())
        assert left == sorted([".keep", ".model.onnx.fresh123", *alive, "model.hierarchy.json", "model.onnx"]), left
    finally:
        live.kill()
        live.wait(timeout=30)
