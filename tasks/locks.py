"""Prefect's lock manager on the store that holds the cache, so that two workers (two machines, two Prefect APIs)
picking up the same model at once compute it once: the second waits, then finds the first one's cache record.

A lock is a small JSON object ``<folder>/<key>.lock`` created only if absent (S3's conditional put, ``O_EXCL``
locally), holding its holder and when it expires. A holder renews its lease while it works, so a worker killed
mid-export frees the model within one lease (``MODELEXPORT_LOCK_LEASE_S``, default 60 s); a lock left by a dead
process of this machine is taken over at once.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

from prefect.locking.protocol import LockManager

from modelexport import storage

LEASE_S = float(os.environ.get("MODELEXPORT_LOCK_LEASE_S", "60"))
POLL_S = 0.2


class StoreLocks(LockManager):
    """Locks in FOLDER, a path or fsspec URL (see module doc)."""

    def __init__(self, folder: str):
        self.folder = folder
        self._renewals: dict[str, threading.Event] = {}

    def __reduce__(self):  # shipped to Dask workers with the task: a fresh manager there
        return StoreLocks, (self.folder,)

    def _location(self, key: str) -> str:
        return storage.join(self.folder, f"{key}.lock")

    def _info(self, key: str) -> dict | None:
        fs, path = storage.filesystem(self._location(key))
        try:
            return json.loads(fs.cat_file(path))
        except (FileNotFoundError, ValueError):
            return None

    def _write(self, key: str, holder: str, create: bool) -> bool:
        fs, path = storage.filesystem(self._location(key))
        body = json.dumps(
            {"holder": holder, "expires": time.time() + LEASE_S, "host": socket.gethostname(), "pid": os.getpid()}
        ).encode()
        if not create:
            fs.pipe_file(path, body)
            return True
        if not storage.is_remote(self.folder):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            fs.pipe_file(path, body, mode="create")
        except FileExistsError:
            return False
        return True

    def acquire_lock(self, key, holder, acquire_timeout=None, hold_timeout=None) -> bool:
        deadline = None if acquire_timeout is None else time.monotonic() + acquire_timeout
        while not self._write(key, holder, create=True):
            info = self._info(key)
            if info is not None and info.get("holder") == holder:
                return True
            if info is not None and _abandoned(info):
                self._remove(key)
                continue
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(POLL_S)
        self._renew_while_held(key, holder)
        return True

    async def aacquire_lock(self, key, holder, acquire_timeout=None, hold_timeout=None) -> bool:
        import anyio

        return await anyio.to_thread.run_sync(self.acquire_lock, key, holder, acquire_timeout, hold_timeout)

    def release_lock(self, key: str, holder: str) -> None:
        stop = self._renewals.pop(key, None)
        if stop is not None:
            stop.set()
        info = self._info(key)
        if info is not None and info.get("holder") == holder:
            self._remove(key)

    def is_locked(self, key: str) -> bool:
        info = self._info(key)
        return info is not None and not _abandoned(info)

    def is_lock_holder(self, key: str, holder: str) -> bool:
        if key not in self._renewals:  # the common case, answered without a request
            return False
        info = self._info(key)
        return info is not None and info.get("holder") == holder

    def wait_for_lock(self, key: str, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_locked(key):
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(POLL_S)
        return True

    async def await_for_lock(self, key: str, timeout: float | None = None) -> bool:
        import anyio

        return await anyio.to_thread.run_sync(self.wait_for_lock, key, timeout)

    def _remove(self, key: str) -> None:
        fs, path = storage.filesystem(self._location(key))
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            pass

    def _renew_while_held(self, key: str, holder: str) -> None:
        stop = self._renewals[key] = threading.Event()

        def renew() -> None:
            while not stop.wait(LEASE_S / 3):
                self._write(key, holder, create=False)

        threading.Thread(target=renew, name=f"lease-{key[:24]}", daemon=True).start()


def _abandoned(info: dict) -> bool:
    """Its lease ran out, or its holder was a process of this machine that is gone."""
    if info.get("expires", 0) < time.time():
        return True
    if info.get("host") == socket.gethostname():
        import psutil

        return not psutil.pid_exists(int(info.get("pid", 0)))
    return False
