"""Shared fixtures: tiny models built once per session, exported once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Tests never reach the Hugging Face Hub; HF_HUB_OFFLINE keeps stray lookups from hanging.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# Pipeline tasks retry transient faults with backoff; in tests the delays are a few milliseconds.
os.environ.setdefault("MODELEXPORT_RETRY_DELAY", "0.01")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
os.environ["COLUMNS"] = "200"  # rich wraps captured output at 80 columns otherwise


def run_cli(*args: str, cwd: str | Path | None = None, env: dict | None = None, timeout: float = 300):
    """Run `python -m cli ARGS` (the modelexport command) in a subprocess on this checkout's code; returns the
    CompletedProcess."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """The demo models (tiny BERT, GPT-2, ViT, ResNet) saved with save_pretrained."""
    from modelexport.demo_models import build_demo_models

    return build_demo_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def exported(model_dirs, tmp_path_factory):
    """Export each demo model once with the default strategy; maps name -> ExportResult."""
    from modelexport.export import export_model

    out = tmp_path_factory.mktemp("exported")
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = export_model(str(model_dirs[name]), out / f"{name}.onnx")
        return cache[name]

    return get


@pytest.fixture(scope="session", autouse=True)
def digest_cache(tmp_path_factory):
    """Remembered file digests, and the scratch copies of stored files, go to folders of the session's, not the
    user's ~/.cache or the working directory."""
    folders = {"MODELEXPORT_CACHE_DIR": "modelexport-cache", "MODELEXPORT_SCRATCH_DIR": "modelexport-scratch"}
    saved = {k: os.environ.get(k) for k in folders}
    os.environ.update({k: str(tmp_path_factory.mktemp(v)) for k, v in folders.items()})
    yield
    for k, v in saved.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="session", autouse=True)
def mlflow_tracking_uri(tmp_path_factory):
    """Pipeline runs log to MLflow by default: point the session (and CLI subprocesses) at a throwaway SQLite
    store rather than ./mlflow.db or whatever MLFLOW_TRACKING_URI the user has set."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    if saved is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API (SQLite) for every in-process flow run of the session: starting one costs seconds."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """moto's S3 server for the session; yields the environment that reaches it (AWS_ENDPOINT_URL, credentials),
    also set in this process, where fsspec reads it."""
    from tests.servers import s3_server

    with s3_server(tmp_path_factory.mktemp("s3")) as env:
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield env
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
