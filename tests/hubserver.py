"""A small Hugging Face Hub-compatible HTTP server on 127.0.0.1 for tests: real huggingface_hub downloads,
revision pinning and transient faults, without the internet.

It serves what ``snapshot_download`` (huggingface_hub 2.x) asks for:
- ``GET /api/models/{repo}/revision/{rev}``: model info with the commit ``sha`` and ``siblings``;
- ``GET /api/models/{repo}/tree/{commit}``: the file listing (``type``, ``path``, ``size``, ``oid``);
- ``HEAD|GET /{repo}/resolve/{rev}/{file}``: the file, with ``X-Repo-Commit``, ``ETag`` and ``Content-Length``.

Each repo has revisions (branch or tag names) pointing at commits; each commit is a folder of files. ``fail_next``
makes the next N requests misbehave like a hub having a bad minute: answer 503, drop the connection without a
response, or stall (send nothing until the client gives up or the server closes). ``token`` makes every request
without ``Authorization: Bearer <token>`` get 401, like a private repo.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class Repo:
    commits: dict[str, Path] = field(default_factory=dict)  # commit sha -> folder of files
    refs: dict[str, str] = field(default_factory=dict)  # branch/tag -> commit sha

    def commit_for(self, revision: str) -> str | None:
        if revision in self.commits:
            return revision
        return self.refs.get(revision)


class HubServer:
    """``with HubServer() as hub: hub.add(...); os.environ["HF_ENDPOINT"] = hub.url``."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status) of every request
        self.token: str | None = None  # when set, requests must carry "Authorization: Bearer <token>"
        self.authorizations: list[str | None] = []  # the Authorization header of every request
        self._fail = 0
        self._fault = "503"
        self._lock = threading.Lock()
        self._closing = threading.Event()  # releases stalled requests when the server stops
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, repo_id: str, folder: str | Path, revisions: tuple[str, ...] = ("main",)) -> str:
        """Publish `folder` as a new commit of `repo_id` and point `revisions` at it; returns the commit sha."""
        digest = hashlib.sha1(repo_id.encode())
        for file in sorted(Path(folder).rglob("*")):
            if file.is_file():
                digest.update(file.relative_to(folder).as_posix().encode() + file.read_bytes())
        sha = digest.hexdigest()
        repo = self.repos.setdefault(repo_id, Repo())
        repo.commits[sha] = Path(folder)
        for revision in revisions:
            repo.refs[revision] = sha
        return sha

    def fail_next(self, count: int, fault: str = "503") -> None:
        """The next `count` requests fail: ``503`` (HTTP 503), ``drop`` (connection closed without a response)
        or ``stall`` (no response until the client times out)."""
        assert fault in ("503", "drop", "stall"), fault
        with self._lock:
            self._fail, self._fault = count, fault

    def _take_failure(self) -> str | None:
        with self._lock:
            if self._fail > 0:
                self._fail -= 1
                return self._fault
            return None

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _oid(file: Path) -> str:
    data = file.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id


def _handler(hub: HubServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _send(self, status: int, payload: bytes = b"", headers: dict | None = None, body: bool = True) -> None:
            hub.requests.append((self.command, self.path, status))
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if body:
                self.wfile.write(payload)

        def _json(self, status: int, data, headers: dict | None = None) -> None:
            self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})

        def _error(self, status: int, code: str, message: str) -> None:
            # huggingface_hub tells RepositoryNotFound / RevisionNotFound / EntryNotFound apart by X-Error-Code
            self._json(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

        def _serve(self, body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            if not path.startswith("/api/models/") and "/resolve/" not in path:  # e.g. the client's own lookups
                return self._error(404, "EntryNotFound", f"no route {path}")
            hub.authorizations.append(self.headers.get("Authorization"))
            fault = hub._take_failure()
            if fault == "503":
                return self._send(503, b"service unavailable", body=body)
            if fault is not None:  # drop or stall: no response at all
                hub.requests.append((self.command, self.path, 0))
                if fault == "stall":  # bounded: the client's timeout ends it, or the server's shutdown
                    hub._closing.wait(timeout=30)
                self.close_connection = True
                return None
            if hub.token and self.headers.get("Authorization") != f"Bearer {hub.token}":
                return self._error(401, "RepoNotFound", "Invalid credentials in Authorization header")
            if path.startswith("/api/models/"):
                return self._api(path[len("/api/models/") :])
            repo_id, rest = path.lstrip("/").split("/resolve/", 1)
            revision, _, filename = rest.partition("/")
            return self._file(repo_id, revision, filename, body)

        def _repo(self, repo_id: str) -> Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return repo

        def _api(self, rest: str) -> None:
            for kind in ("/revision/", "/tree/"):
                if kind in rest:
                    repo_id, revision = rest.split(kind, 1)
                    break
            else:
                return self._error(404, "EntryNotFound", f"no route {rest}")
            found = self._commit(repo_id, revision.rstrip("/"))
            if found is None:
                return None
            sha, folder = found
            files = [(f.relative_to(folder).as_posix(), f) for f in _files(folder)]
            if kind == "/tree/":
                return self._json(
                    200, [{"type": "file", "path": p, "size": f.stat().st_size, "oid": _oid(f)} for p, f in files]
                )
            self._json(
                200,
                {
                    "id": repo_id,
                    "modelId": repo_id,
                    "sha": sha,
                    "private": False,
                    "siblings": [{"rfilename": p} for p, _ in files],
                },
            )

        def _commit(self, repo_id: str, revision: str):
            """(sha, folder) of `revision` in `repo_id`, or None once a 404 is sent."""
            repo = self._repo(repo_id)
            if repo is None:
                return None
            sha = repo.commit_for(revision)
            if sha is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return sha, repo.commits[sha]

        def _file(self, repo_id: str, revision: str, filename: str, body: bool) -> None:
            found = self._commit(repo_id, revision)
            if found is None:
                return None
            sha, folder = found
            file = folder / filename
            if not file.is_file():
                return self._error(404, "EntryNotFound", f"{filename} does not exist at {sha}")
            data = file.read_bytes()
            self._send(
                200,
                data,
                {"X-Repo-Commit": sha, "ETag": f'"{_oid(file)}"', "Content-Type": "application/octet-stream"},
                body=body,
            )

    return Handler


def point_hub_client_at(monkeypatch, url: str, cache_dir) -> None:
    """Make huggingface_hub talk to `url` with an empty cache in `cache_dir` (it reads HF_ENDPOINT at import)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache_dir))
