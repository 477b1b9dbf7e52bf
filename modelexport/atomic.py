"""Atomic file writes: a reader sees the old file or the complete new one, never half of one.

Files are written under a hidden staging name beside their final one and renamed into place. A staging name
carries its writer: ``.<final>.<owner>.<random>.part`` (files) or ``.staging`` (folders), where the owner is
``<machine>-<pid>`` (the machine: a hash of the host name and PID namespace). A process killed while writing
leaves its staging behind; the next process to write into that folder removes the staging of writers of this
machine whose process is gone (:func:`sweep_stale`). A live writer's staging, a concurrent process's included,
is never touched.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import re
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import BadInputError, ModelExportError


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a new temporary path beside `final`; rename it onto `final` only if the block succeeds."""
    final = Path(final)
    tmp = _new_file(final)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _new_file(final: Path) -> Path:
    """Create an empty hidden file beside `final`, with the permissions any new file gets (0o666 less the umask):
    ``tempfile.mkstemp`` makes it 0o600, and the rename kept that, so reports and sidecars were readable by
    their owner alone while the ONNX file beside them was not."""
    sweep_stale(final.parent)
    while True:
        tmp = staging_name(final, "part")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:  # another writer's name: draw again
            continue


def new_staging_dir(final: Path) -> Path:
    """Create a hidden folder beside `final` to stage it (and its companions) in, named after its writer."""
    sweep_stale(final.parent)
    while True:
        folder = staging_name(final, "staging")
        try:
            folder.mkdir(mode=0o700)
            return folder
        except FileExistsError:
            continue


def staging_name(final: Path, kind: str) -> Path:
    """``.<final>.<machine>-<pid>.<random>.<kind>`` beside `final`."""
    return final.with_name(f".{final.name}.{_machine()}-{os.getpid()}.{secrets.token_hex(4)}.{kind}")


STAGING = re.compile(r"^\..+\.(?P<machine>[0-9a-f]{8})-(?P<pid>[0-9]+)\.[0-9a-f]{8}\.(?:part|staging)$")
# Staging of versions that did not name their writer: removed once it is this old (no export takes a day).
LEGACY_FILE = re.compile(r"^\..+\.[0-9a-f]{8}\.part$")
LEGACY_FOLDER = re.compile(r"^\.(?P<final>.+\.onnx)\.[a-z0-9_]{8}$")  # tempfile.mkdtemp's, holding the ONNX file
LEGACY_AGE_S = 24 * 3600
_swept: set[str] = set()
_swept_lock = threading.Lock()


@functools.cache
def _machine() -> str:
    """This machine and PID namespace: whose process ids a staging name's pid can be checked against."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return hashlib.sha256(f"{socket.gethostname()}\0{namespace}".encode()).hexdigest()[:8]


def sweep_stale(directory: str | os.PathLike, *, force: bool = False) -> list[Path]:
    """Remove the staging left in `directory` by writers of this machine whose process has ended (and that of
    older versions, which named no writer, once a day old). Each directory is swept once per process unless
    `force`. Returns what was removed."""
    directory = Path(directory)
    key = os.path.abspath(directory)
    with _swept_lock:
        if key in _swept and not force:
            return []
        _swept.add(key)
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if entry.name.startswith(".") and _is_stale(entry):
            try:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
            except FileNotFoundError:  # another process swept it first
                pass
            except OSError:
                continue
            removed.append(Path(entry.path))
    return removed


def _is_stale(entry: os.DirEntry) -> bool:
    try:
        mtime = entry.stat(follow_symlinks=False).st_mtime
        is_dir = entry.is_dir(follow_symlinks=False)
    except OSError:
        return False
    match = STAGING.match(entry.name)
    if match:
        return match["machine"] == _machine() and not _writer_alive(int(match["pid"]), mtime)
    if time.time() - mtime < LEGACY_AGE_S:
        return False
    if not is_dir:
        return bool(LEGACY_FILE.match(entry.name))
    legacy = LEGACY_FOLDER.match(entry.name)
    if not legacy:
        return False
    try:
        names = set(os.listdir(entry.path))
    except OSError:
        return False
    return names <= {legacy["final"], f"{legacy['final']}.data"}


def _writer_alive(pid: int, mtime: float) -> bool:
    """Whether process `pid` may still be writing a staging entry last modified at `mtime`: it exists and started
    before then (a process started later got a dead writer's recycled id)."""
    import psutil

    if pid == os.getpid():
        return True
    try:
        return psutil.Process(pid).create_time() <= mtime + 1
    except psutil.NoSuchProcess:
        return False
    except (psutil.Error, OSError):  # cannot tell: leave it alone
        return True


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_error(path: str | os.PathLike, exc: OSError) -> ModelExportError:
    """The one-line error for failing to write `path`, naming it and what to do for this cause: a full disk is the
    world's fault (exit 1); a directory in the way or a place that cannot be written is the user's (exit 2)."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return ModelExportError(f"cannot write {path}: {reason}; free space or choose another location")
    if exc.errno == errno.EISDIR:
        return BadInputError(f"cannot write {path}: a directory has that name; remove it or choose another output")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR):
        return BadInputError(f"cannot write {path}: {reason}; choose another location or fix its permissions")
    return ModelExportError(f"cannot write {path}: {reason}; choose another location")
