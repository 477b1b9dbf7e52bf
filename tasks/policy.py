"""How our tasks cache and retry: content-addressed keys, results that count only while their files exist, and
retries with backoff for transient faults only.

A cache key is what determines a stage's output: the model's content (hub commit or hash of the local files,
never its path), every setting, the versions of the libraries that shape the result and our own version, and
where the files go. A stage's result names the files it wrote with their size and mtime; a cached result whose
files were deleted or rewritten since does not count, and the stage runs again (its new result is stored under
the next *generation* of the key, so no record is ever deleted or overwritten). Prefect writes a record in place,
not atomically: one left unreadable by a process killed mid-write is skipped the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.tasks import exponential_backoff
from prefect.transactions import get_transaction
from prefect.utilities.hashing import hash_objects
from pydantic import BaseModel

from modelexport import storage
from modelexport.errors import TransientError
from modelexport.fleet import ModelPlan
from modelexport.source import ModelSource
from modelexport.versions import library_versions

# Retries: a few, with exponential backoff and jitter. MODELEXPORT_RETRY_DELAY (seconds, the first delay) lets
# tests make them instant; read at import because Prefect fixes a task's delays when the task is defined.
RETRIES = int(os.environ.get("MODELEXPORT_RETRIES", "3"))
RETRY_DELAYS = exponential_backoff(float(os.environ.get("MODELEXPORT_RETRY_DELAY", "2")))(RETRIES)
RETRY_JITTER = 0.5
MAX_GENERATIONS = 1000
# Stages that compute (load, run, export, validate, profile) hold this lock; downloads do not. Loading a
# transformers model patches torch globally for a moment (weight init, default dtype), torch.onnx keeps exporter
# state in globals, and a latency measured beside another model's export is noise. So a fleet's concurrency
# overlaps downloads with computing, never two computations with each other.
_COMPUTE_LOCK = threading.Lock()


def computing() -> threading.Lock:
    """This process's compute lock. A function, not a global the tasks name: on Dask, Prefect ships a task's
    function by value with the globals it uses, and a lock cannot be pickled; each Dask worker process has its own.
    """
    return _COMPUTE_LOCK


def is_transient(task, task_run, state) -> bool:
    """Retry only faults of the world (network, 5xx, timeouts); a deterministic failure fails at once."""
    try:
        state.result()
    except (TransientError, ConnectionError, TimeoutError):
        return True
    except Exception:
        return False
    return False


RETRY = dict(
    retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_jitter_factor=RETRY_JITTER, retry_condition_fn=is_transient
)


@dataclass(frozen=True)
class Produced:
    """What a stage made: small JSON-able data and the files it wrote (location -> its stamp when written, see
    modelexport.storage.stamps)."""

    data: dict
    files: dict[str, list[int]] = field(default_factory=dict)
    key: str | None = None  # the cache key it was stored under: downstream keys build on it

    def intact(self) -> bool:
        """True while every file is still there, unchanged since the stage wrote it."""
        return storage.stamps(self.files) == self.files

    def local(self, name: str) -> str:
        """The local path of the file (or folder) ``data[name]``, every file of this result fetched first where
        they live in a remote store."""
        for location in self.files:
            storage.fetch(location)
        return str(storage.local_path(self.data[name]))


def produced(data: dict, *locations: str | os.PathLike) -> Produced:
    """Record a stage's result and the files it wrote (paths, or URLs of a store, committed); call it last in the
    task."""
    txn = get_transaction()
    found = storage.stamps(os.fspath(p) for p in locations)
    files = {location: stamp for location, stamp in found.items() if stamp is not None}
    return Produced(data, files, txn.key if txn is not None else None)


def canonical(value: Any) -> Any:
    """What of a task input identifies content: a model's fingerprint (not its path), an upstream result's key,
    a model plan's settings (not its id)."""
    if isinstance(value, ModelSource):
        return {
            "kind": value.kind,
            "fingerprint": value.fingerprint,
            "ref": value.ref if value.kind != "local" else None,
        }
    if isinstance(value, Produced):
        return value.key or value.files
    if isinstance(value, ModelPlan):  # a model's settings; its content is the resolved source's, its folder a path
        # the memory limit decides whether a stage may start, not what it produces
        return canonical({**dataclasses.asdict(value), "id": None, "max_memory_gb": None})
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return canonical(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def result_storage(cache_dir: str):
    """Prefect's result storage at CACHE_DIR: a local folder, or a store's URL through Prefect's fsspec-backed
    ``RemoteFileSystem`` block. Prefect wants a task's block saved on its API; the block is only a pointer (its
    basepath, no credentials: those stay in the environment), the records are in the store, so workers with
    Prefect APIs of their own share one cache."""
    if storage.is_remote(cache_dir):
        from prefect.filesystems import RemoteFileSystem

        block = RemoteFileSystem(basepath=cache_dir.rstrip("/"))
        block.save(f"modelexport-cache-{hashlib.sha256(cache_dir.encode()).hexdigest()[:12]}", overwrite=True)
        return block
    path = storage.as_local(cache_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


@dataclass
class ContentCache(CachePolicy):
    """Key = task name + canonical inputs + library versions; a hit counts only if its files are intact."""

    exclude: list[str] = field(default_factory=list)

    def compute_key(self, task_ctx, inputs, flow_parameters, **kwargs) -> str | None:
        parts = {name: canonical(value) for name, value in sorted(inputs.items()) if name not in self.exclude}
        base = hash_objects(task_ctx.task.name, parts, library_versions(), raise_on_failure=True)
        store = task_ctx.result_store
        for generation in range(MAX_GENERATIONS):
            key = f"{task_ctx.task.name}-{base}-{generation}"
            try:  # one read: Prefect's `exists` reads and deserializes the whole record as well
                result = store.read(key).result
            except Exception:  # no record yet, or one cut short (the process was killed while writing it)
                return key
            if not isinstance(result, Produced) or result.intact():
                return key
        return None


CONTENT = ContentCache()
# ...for the stages that take the model's memory limit, which decides whether they may start, not what they produce
CONTENT_BUT_LIMITS = ContentCache(exclude=["max_memory_gb"])
