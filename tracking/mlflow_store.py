"""The MLflow store the tracking writes to: which URI, the client on it, the experiment.

A SQLite store (the default, as in MLflow 3) is opened once per process under a lock file and switched to
SQLite's write-ahead log. Used by tracking/runs.py, which re-exports these names.
"""

from __future__ import annotations

import contextlib
import os
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # MLflow 3's own default: a database in the working directory
DEFAULT_EXPERIMENT = "modelexport"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """`uri`, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the working directory (absolute)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + os.path.abspath(uri[len("sqlite:///") :])
    return uri


@contextlib.contextmanager
def credentials_apart(uri: str | None) -> Iterator[str | None]:
    """`uri` without its user and password, which go to ``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD`` (MLflow's own
    way to authenticate) while the block runs: in the URI they would be kept in Prefect's flow-run parameters and
    printed by MLflow."""
    parts = urllib.parse.urlsplit(uri or "")
    if parts.scheme not in ("http", "https") or not (parts.username or parts.password):
        yield uri
        return
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    names = {"MLFLOW_TRACKING_USERNAME": parts.username, "MLFLOW_TRACKING_PASSWORD": parts.password}
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: urllib.parse.unquote(value) for name, value in names.items() if value})
    try:
        yield urllib.parse.urlunsplit(parts._replace(netloc=host))
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def connect(uri: str | None = None):
    """An ``MlflowClient`` on the resolved URI; also made the process default (``mlflow.onnx`` logs through it)."""
    import mlflow

    uri = resolve_tracking_uri(uri)
    # MLflow prints each run's URL when it ends: on a server whose URI holds a password, the password too (our
    # commands print their own summary).
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # set_*_uri also export MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI into os.environ: keep the caller's
    # environment as it was, or later runs and subprocesses (workers, tests) would log into this store.
    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if uri.startswith("sqlite:///"):
        _open_sqlite_store(uri)
    return mlflow.MlflowClient(uri, registry_uri=uri)


_OPENED: set[str] = set()  # SQLite stores this process has opened (their schema is in place)
_OPENING = threading.Lock()


def _open_sqlite_store(uri: str) -> None:
    """Open (creating if new) a SQLite store once per process, under a lock file beside it: processes or threads
    creating the same new store at once race in MLflow's schema migrations and fail (``alembic_version ...
    0 found``, ``table _alembic_tmp_metrics already exists``).

    The store is switched to SQLite's write-ahead log (it stays so: the mode is kept in the file): a model's
    record is ~40 small transactions, and with the default rollback journal each costs several fsyncs of the
    disk the exports are being written to; readers (``modelexport review``) no longer wait for a writer either.
    """
    import fcntl
    import sqlite3

    import mlflow

    with _OPENING:
        if uri in _OPENED:
            return
        database = Path(uri.removeprefix("sqlite:///"))
        database.parent.mkdir(parents=True, exist_ok=True)
        with open(database.with_name(database.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with contextlib.closing(sqlite3.connect(database, timeout=20)) as db:
                db.execute("PRAGMA journal_mode=WAL")
            mlflow.MlflowClient(uri, registry_uri=uri).search_registered_models(max_results=1)  # the schema
        _OPENED.add(uri)


def find_or_create_experiment(client, name: str = DEFAULT_EXPERIMENT) -> str:
    """The id of experiment `name`, created on first use.

    A SQLite store keeps the new experiment's artifacts in ``mlruns/`` beside the database file (for the default
    ``sqlite:///mlflow.db`` that is MLflow's own ``./mlruns``), so the store is one self-contained folder; a
    server puts them where it is configured to.
    """
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    uri = client.tracking_uri
    location = None
    if uri.startswith("sqlite:///"):
        location = Path(uri.removeprefix("sqlite:///")).parent.joinpath("mlruns").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created meanwhile by a concurrent run
        return client.get_experiment_by_name(name).experiment_id
