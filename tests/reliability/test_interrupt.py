"""Ctrl-C and SIGKILL of the pipeline commands: a Ctrl-C stops a run in the middle of a stage at once (exit 130,
one line), records its runs as interrupted (Prefect Crashed, MLflow FAILED) and leaves no process behind; a
SIGKILL leaves no Prefect server behind."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.reliability.test_kill_resume import FLEET, _env, wait_for


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory) -> Path:
    """One PREFECT_HOME for the module's processes: the first server start on a new one migrates its database."""
    return tmp_path_factory.mktemp("prefect")


def start(args: list[str], cwd: Path, marker: Path, prefect_home: Path) -> subprocess.Popen:
    """The CLI as a terminal runs it: the leader of its own process group (a Ctrl-C goes to that whole group)."""
    env = _env(
        MODELEXPORT_TEST_BLOCK=str(marker),
        PREFECT_HOME=str(prefect_home),
        MLFLOW_TRACKING_URI=f"sqlite:///{cwd / 'mlflow.db'}",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def gone(processes: list[psutil.Process], within_s: float) -> list[psutil.Process]:
    """Those of `processes` still alive after waiting up to `within_s`."""
    _, alive = psutil.wait_procs(processes, timeout=within_s)
    return [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def test_ctrl_c_in_the_middle_of_a_fleets_export_records_it_interrupted_and_exits(tmp_path, prefect_home):
    (tmp_path / "fleet.yaml").write_text(FLEET)
    marker = tmp_path / "second-is-exporting"
    proc = start(
        ["run-fleet", "fleet.yaml", "--output-dir", "out", "--concurrency", "1"], tmp_path, marker, prefect_home
    )
    wait_for(marker, proc)
    ours = psutil.Process(proc.pid).children(recursive=True)  # the recorder, the Prefect server, the lifeline
    assert len(ours) >= 2
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    out, err = proc.communicate(timeout=30)  # the blocked export would hold it forever
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "modelexport: interrupted" and "Traceback" not in err
    assert gone(ours, within_s=10) == []

    assert [p.name for p in (tmp_path / "out" / "second").iterdir() if not p.name.startswith(".")] == []
    mlflow_db = sqlite3.connect(tmp_path / "mlflow.db")
    runs = mlflow_db.execute(
        "select r.name, r.status, t.value from runs r left join tags t "
        "on t.run_uuid = r.run_uuid and t.key = 'modelexport.kind'"
    ).fetchall()
    assert ("killed", "FAILED", "fleet") in runs and not [r for r in runs if r[1] == "RUNNING"]
    (error,) = mlflow_db.execute(
        "select t.value from runs r join tags t on t.run_uuid = r.run_uuid "
        "where r.name = 'killed' and t.key = 'modelexport.error'"
    ).fetchone()
    assert error.startswith("interrupted")
    prefect_db = sqlite3.connect(prefect_home / "prefect.db")
    (flow_state,) = prefect_db.execute("select state_type from flow_run order by created desc limit 1").fetchone()
    assert flow_state == "CRASHED"
    unfinished = prefect_db.execute("select name from task_run where state_type in ('RUNNING', 'PENDING')")
    assert unfinished.fetchall() == []


def test_sigkill_of_run_leaves_no_prefect_server_behind(tmp_path, prefect_home):
    marker = tmp_path / "exporting"
    (tmp_path / "spec.json").write_text('{"x": {"shape": [2, 4], "dynamic_axes": {"0": "batch"}}}')
    proc = start(
        ["run", "tests.reliability.blocking_model:blocking", "--input-spec", "spec.json", "--output-dir", "out"],
        tmp_path,
        marker,
        prefect_home,
    )
    wait_for(marker, proc)
    ours = psutil.Process(proc.pid).children(recursive=True)
    assert any("uvicorn" in " ".join(p.cmdline()) for p in ours)
    os.kill(proc.pid, signal.SIGKILL)  # the process alone, as the OOM killer or `kill -9 PID` does
    proc.communicate(timeout=30)
    assert gone(ours, within_s=15) == []
