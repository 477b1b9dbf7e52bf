"""Atomic file writes: a reader sees the old file or the complete new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


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
