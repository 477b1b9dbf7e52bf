"""Atomic file writes: a reader sees the old file or the complete new one, never half of one."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
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
    while True:
        tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.part")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:  # another writer's name: draw again
            continue


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
