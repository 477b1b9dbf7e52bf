"""SHA-256 digests of files, remembered by their stat so unchanged weights are read and hashed once.

A nightly fleet re-resolves every local model to key its caches; hashing a 440 MB checkpoint costs a quarter of
a second warm and seconds cold, every time. Like git's index, we key a file's digest on what changes whenever its
content can: device, inode, size, mtime and ctime (ctime cannot be set by users). Like git, a file modified
moments ago is not remembered ("racily clean": a change within the same timestamp tick would go unseen).
Entries live under ``$MODELEXPORT_CACHE_DIR`` (default ``~/.cache/modelexport``)/digests; set it to an empty
string to turn the memory off. A missing or unwritable folder only means hashing again.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

from . import atomic

REMEMBER_FROM_BYTES = 1 << 20  # smaller files are cheaper to hash than to look up
RACY_SECONDS = 2.0
DIGEST = re.compile(r"^[0-9a-f]{64}$")


def cache_dir() -> Path | None:
    """Where digests are remembered, or None when turned off."""
    configured = os.environ.get("MODELEXPORT_CACHE_DIR")
    if configured == "":
        return None
    base = Path(configured).expanduser() if configured else Path("~/.cache/modelexport").expanduser()
    return base / "digests"


def file_digest(path: Path) -> str:
    """Hex SHA-256 of the file at `path`, from memory when its stat is unchanged since it was hashed."""
    st = path.stat()
    folder = cache_dir() if st.st_size >= REMEMBER_FROM_BYTES else None
    entry = None
    if folder is not None:
        key = f"{path.resolve()}\0{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
        entry = folder / hashlib.sha256(key.encode()).hexdigest()
        try:
            remembered = entry.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError):
            remembered = ""
        if DIGEST.match(remembered):
            return remembered
    with path.open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    changed = max(st.st_mtime_ns, st.st_ctime_ns) / 1e9
    if entry is not None and time.time() - changed > RACY_SECONDS:
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_text(entry, digest)
        except OSError:
            pass  # a read-only home: hash again next time
    return digest
