"""The MLflow recorder process (tracking/recorder.py): it writes each call with the caller's environment and working
directory, owns its runs on behalf of the flow's process, and a recorder that died fails its calls with a reason
and is started again. The flows' records through it are checked end to end in test_tracking and test_pipeline."""

from __future__ import annotations

import os

import psutil
import pytest

from modelexport.outcome import ModelOutcome
from tracking import recorder
from tracking import runs as tracking_runs

SECRET = "rec0rder-s3cret-value"


def test_the_recorder_writes_as_its_caller_for_the_callers_process(tmp_path, monkeypatch):
    import mlflow

    started = recorder.recorder()  # before the secret and the working directory below exist
    monkeypatch.setenv("MODELEXPORT_TEST_API_TOKEN", SECRET)  # a name that says secret: its value is scrubbed
    monkeypatch.chdir(tmp_path)
    outcome = ModelOutcome(
        "m",
        "ref",
        status="failed",
        failed_stage="export",
        reason=f"exporter said {SECRET}",
        exit_code=1,
        stages={"resolve": "done", "export": "failed"},
    )
    recorder.log_outcome(outcome, tmp_path / "no-outputs", tracking_uri="sqlite:///relative.db")

    assert recorder.recorder() is started and started._proc.pid != os.getpid()
    if hasattr(os, "nice"):  # records wait for the stages, not the other way round
        assert psutil.Process(started._proc.pid).nice() == min(19, os.nice(0) + recorder.NICENESS)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'relative.db'}")  # relative to the caller's directory
    [run] = client.search_runs([tracking_runs.find_or_create_experiment(client)])
    assert run.info.status == "FAILED" and run.data.tags[tracking_runs.TAG + "pid"] == str(os.getpid())
    assert run.data.tags[tracking_runs.TAG + "error"] == "failed at export: exporter said ***"
    assert SECRET not in repr(run.data.params) + repr(run.data.tags)


def test_a_recorder_that_died_fails_its_calls_with_the_reason_and_is_started_again():
    dead = recorder.recorder()
    dead._proc.kill()
    dead._proc.wait()
    with pytest.raises(recorder.RecorderError, match=r"recorder process ended \(exit code -9\)"):
        dead.call("end_fleet", None).result(timeout=60)
    assert not dead.alive
    again = recorder.recorder()
    assert again is not dead and again.alive
