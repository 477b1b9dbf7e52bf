"""Real servers for the tests, started and stopped here, on 127.0.0.1: an S3-compatible store (moto's), a Prefect
server, an MLflow server, Dask's scheduler and workers, Prefect workers. Each runs in a process group of its own so
that stopping it stops its children."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """Terminate the process group (the server's or worker's children too), then kill what is left."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def poll(check, deadline: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    """Call CHECK until it returns something truthy; fail at the deadline or when PROC dies."""
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: process exited {proc.returncode}\n{log.read_text()[-3000:] if log else ''}")
        time.sleep(0.25)  # a poll interval, not a wait for something to happen
    pytest.fail(f"{what}: not done before the deadline\n{log.read_text()[-3000:] if log else ''}")


def spawn(args: list[str], log: Path, env: dict | None = None, cwd: str | Path | None = None) -> subprocess.Popen:
    """Start ARGS in a session of its own, its output in LOG."""
    with log.open("w") as out:
        return subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def running(args: list[str], health_url: str, log: Path, env: dict | None = None, deadline_s: float = 120):
    """A server process, once HEALTH_URL answers 200; stopped on leaving."""
    proc = spawn(args, log, env)
    try:
        poll(lambda: healthy(health_url), time.monotonic() + deadline_s, args[0], proc, log)
        yield proc
    finally:
        stop(proc)


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@contextlib.contextmanager
def s3_server(folder: Path) -> Iterator[dict]:
    """moto's S3 server; yields the environment that reaches it (AWS_ENDPOINT_URL and credentials)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], url, folder / "moto.log"):
        yield {**S3_ENV, "AWS_ENDPOINT_URL": url}


@contextlib.contextmanager
def prefect_server(folder: Path, env: dict) -> Iterator[str]:
    """A Prefect server with its own PREFECT_HOME; yields its API URL."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    args = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-services"]
    with running(args, f"{api}/health", folder / "prefect-server.log", {**env, "PREFECT_HOME": str(folder / "ph")}):
        yield api


@contextlib.contextmanager
def mlflow_server(folder: Path, env: dict, artifacts: str) -> Iterator[str]:
    """An MLflow server (SQLite backend) proxying artifacts to ARTIFACTS (e.g. an s3:// URL); yields its URI."""
    port = free_port()
    args = [
        str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", artifacts,
    ]  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    with running(args, f"{uri}/health", folder / "mlflow-server.log", env):
        yield uri


def base_env(**extra: str) -> dict:
    """This session's environment for a child process running this checkout's code."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING", **extra)
    env.pop("PREFECT_PROFILE", None)
    return env


def new_bucket(s3) -> str:
    """A new bucket in the store of the `s3` fixture; its URL."""
    import fsspec

    name = f"fleet-{uuid.uuid4().hex[:8]}"
    fsspec.filesystem("s3").mkdir(name)
    return f"s3://{name}"


def keys(url: str) -> list[str]:
    import fsspec

    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    root = url.removeprefix("s3://")
    return sorted(k.removeprefix(root + "/") for k in fs.find(root))
