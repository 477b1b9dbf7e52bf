"""Where a run keeps its files: a local folder, or an fsspec URL (``s3://bucket/prefix``, ``file:///...``).

A *location* is a path or URL. Stages always work on local files: for a remote location they write into a scratch
folder that mirrors the store (``local_path``), then :func:`commit` uploads each file under a temporary key and
moves it onto its final one, so a worker killed mid-upload leaves only ``*.partial-*`` keys, never an object that
looks complete. :func:`fetch` brings a stored file or folder back into the scratch mirror, once. For a local
location all of this is the identity: the core already writes its files atomically in place.

The scratch folder is ``MODELEXPORT_SCRATCH_DIR``, else ``.modelexport/scratch`` in the working directory, so two
workers in two working directories share nothing but the store. Credentials come from fsspec's usual places (for
S3: the AWS variables, ``AWS_ENDPOINT_URL`` for an S3-compatible server), never from the URL.
"""

from __future__ import annotations

import os
import posixpath
import secrets
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .errors import BadInputError

LOCAL_PROTOCOLS = ("file", "local")
SCRATCH_ENV = "MODELEXPORT_SCRATCH_DIR"
PARTIAL = ".partial-"  # the infix of a key being uploaded


def is_remote(location: str | os.PathLike) -> bool:
    """True for a URL of a store other than the local file system."""
    text = os.fspath(location)
    return "://" in text and text.split("://", 1)[0] not in LOCAL_PROTOCOLS


def as_local(location: str | os.PathLike) -> Path:
    """A local location as a path (``file://`` stripped)."""
    text = os.fspath(location)
    return Path(urlsplit(text).path) if text.startswith("file://") else Path(text)


def join(location: str | os.PathLike, *parts: str) -> str:
    """LOCATION/part/...: a URL stays a URL, a path a path."""
    text = os.fspath(location)
    if is_remote(text):
        return posixpath.join(text.rstrip("/"), *parts)
    return str(as_local(text).joinpath(*parts))


def filesystem(location: str):
    """The fsspec file system of LOCATION and the path in it; a clear error when its protocol is not installed."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(location)
    except ImportError as exc:
        protocol = location.split("://", 1)[0]
        raise BadInputError(
            f"{location}: the {protocol}:// store needs {exc.name or 'its fsspec driver'}: pip install "
            f"{'s3fs' if protocol in ('s3', 's3a') else exc.name}"
        ) from None
    except ValueError as exc:
        raise BadInputError(f"{location}: {exc}") from None


def scratch_root() -> Path:
    return Path(os.environ.get(SCRATCH_ENV) or Path.cwd() / ".modelexport" / "scratch").absolute()


def local_path(location: str | os.PathLike) -> Path:
    """Where a stage reads and writes LOCATION on this machine: itself if local, its scratch mirror if remote."""
    text = os.fspath(location)
    if not is_remote(text):
        return as_local(text)
    protocol, rest = text.split("://", 1)
    return scratch_root() / protocol / rest.strip("/")


def parent(location: str | os.PathLike) -> str:
    """The folder LOCATION is in."""
    text = os.fspath(location)
    return posixpath.dirname(text.rstrip("/")) if is_remote(text) else str(as_local(text).parent)


@dataclass(frozen=True)
class Folder:
    """A folder of the store, and the local folder a stage writes its files in (the same one for a local store)."""

    location: str

    @property
    def local(self) -> Path:
        return local_path(self.location)

    def location_of(self, path: str | os.PathLike) -> str:
        """The location of PATH, a file the stage wrote under ``local``."""
        if not is_remote(self.location):
            return os.fspath(path)
        return join(self.location, *Path(path).absolute().relative_to(self.local.absolute()).parts)

    def commit(self, paths: Iterable[str | os.PathLike]) -> list[str]:
        """Upload those of PATHS that exist, in order (the file that names the others last); their locations."""
        locations = [self.location_of(p) for p in paths if Path(p).exists()]
        commit(locations)
        return locations


def commit(locations: Iterable[str]) -> None:
    """Upload each remote location's local file (in the order given: put the file that says "complete" last),
    each under a temporary key moved onto the final one. Local locations are already in place."""
    for location in locations:
        if not is_remote(location):
            continue
        fs, path = filesystem(location)
        partial = f"{path}{PARTIAL}{_owner()}-{secrets.token_hex(4)}"
        try:
            fs.put_file(str(local_path(location)), partial)
            fs.mv(partial, path)
        except BaseException:
            _remove_quietly(fs, partial)
            raise


def fetch(location: str | os.PathLike) -> Path:
    """A local path holding LOCATION's content (a file, or a folder and everything in it), downloaded into the
    scratch mirror unless an up-to-date copy is already there; the path may not exist if nothing is stored."""
    text = os.fspath(location)
    if not is_remote(text):
        return as_local(text)
    fs, path = filesystem(text)
    fs.invalidate_cache(path)  # another worker may have written it since this process last looked
    target = local_path(text)
    entries = [e for e in fs.find(path, detail=True).values() if e["type"] == "file"] if fs.isdir(path) else None
    try:
        found = entries if entries is not None else [fs.info(path)]
    except FileNotFoundError:  # nothing stored there (a model that failed early): nothing to fetch
        return target
    for entry in found:
        if PARTIAL in entry["name"]:
            continue
        local = target / posixpath.relpath(entry["name"], path) if entries is not None else target
        if not _up_to_date(local, entry):
            local.parent.mkdir(parents=True, exist_ok=True)
            staged = local.with_name(f".{local.name}{PARTIAL}{_owner()}")
            fs.get_file(entry["name"], str(staged))
            os.replace(staged, local)
    return target


def stamps(locations: Iterable[str]) -> dict[str, list | None]:
    """What identifies each location's current content, None where it is missing: [size, mtime_ns] for a local
    file, [size, ETag or modification time] for a stored one (one listing per folder)."""
    result: dict[str, list | None] = {}
    by_folder: dict[str, list[str]] = {}
    for location in locations:
        if is_remote(location):
            by_folder.setdefault(posixpath.dirname(location), []).append(location)
        else:
            result[location] = _local_stamp(as_local(location))
    for folder, members in by_folder.items():
        fs, path = filesystem(folder)
        try:
            listing = {e["name"].rstrip("/"): e for e in fs.ls(path, detail=True, refresh=True)}
        except FileNotFoundError:
            listing = {}
        for location in members:
            entry = listing.get(filesystem(location)[1].rstrip("/"))
            result[location] = _remote_stamp(entry) if entry is not None else None
    return result


def check_writable(location: str, option: str) -> None:
    """Refuse, before anything runs, a store that cannot be written: its bucket (or folder) must exist and take a
    small object."""
    fs, path = filesystem(location)
    probe = posixpath.join(path.rstrip("/"), f".modelexport-probe{PARTIAL}{_owner()}")
    try:
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except Exception as exc:  # noqa: BLE001 — any refusal of the store is the user's to fix
        reason = "no such bucket or folder" if isinstance(exc, FileNotFoundError) else f"{type(exc).__name__}: {exc}"
        raise BadInputError(f"{option} {location}: cannot write there ({reason}); create it or fix the URL") from None


def _up_to_date(local: Path, entry: dict) -> bool:
    """The local copy has the stored size and is no older than the stored object (it was written or fetched
    after it)."""
    try:
        st = local.stat()
    except OSError:
        return False
    modified = entry.get("LastModified") or entry.get("mtime")
    stored_ns = int(modified.timestamp() * 1e9) if hasattr(modified, "timestamp") else int((modified or 0) * 1e9)
    return st.st_size == entry["size"] and st.st_mtime_ns >= stored_ns - 10**9  # clocks agree to a second


def _local_stamp(path: Path) -> list | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _remote_stamp(entry: dict) -> list:
    tag = entry.get("ETag") or entry.get("etag") or entry.get("LastModified") or entry.get("mtime")
    return [entry["size"], str(tag)]


def _owner() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _remove_quietly(fs, path: str) -> None:
    try:
        fs.rm_file(path)
    except Exception:  # noqa: BLE001 — it may never have been written
        pass
