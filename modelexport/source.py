"""Where a model comes from: a local directory, a Hugging Face hub id, or a ``module.path:factory``.

Resolving pins it down: a hub id becomes a downloaded snapshot at a known commit; a local directory gets a hash
of its files. That fingerprint is what caches key on, so a changed model is never mistaken for an old one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from .digests import file_digest
from .errors import BadInputError, TransientError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
# Weights and configs we can use; other frameworks' files are never downloaded.
IGNORE_ON_DOWNLOAD = [
    "*.h5",
    "*.msgpack",
    "*.ot",
    "*.onnx",
    "*.onnx_data",
    "*.tflite",
    "*.gguf",
    "flax_model*",
    "tf_model*",
    "rust_model*",
    "coreml/*",
    "onnx/*",
    "openvino/*",
]


@dataclass(frozen=True)
class ModelSource:
    """A resolved model reference."""

    kind: Literal["local", "hub", "factory"]
    ref: str  # what the user gave
    path: str | None  # directory holding config.json and weights (local and hub)
    revision: str | None  # resolved hub commit
    fingerprint: str  # what identifies the exact weights and code: commit or content hash

    def to_dict(self) -> dict:
        return asdict(self)


def resolve(
    ref: str, revision: str | None = None, cache_dir: str | None = None, token: str | None = None
) -> ModelSource:
    """Pin `ref` down to files on disk (downloading from the hub if needed) and fingerprint them."""
    path = Path(ref).expanduser()
    if path.exists():
        if not path.is_dir():
            raise BadInputError(f"{ref} is a file, not a model directory: pass a folder saved with save_pretrained")
        if not (path / "config.json").is_file():
            raise BadInputError(
                f"{ref} is not a model directory (no config.json): pass a folder saved with save_pretrained, "
                "a hub id or module.path:factory"
            )
        return ModelSource("local", ref, str(path.resolve()), None, "sha256:" + hash_directory(path))
    if FACTORY.match(ref):
        module_name = ref.split(":")[0]
        try:
            spec = importlib.util.find_spec(module_name)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            raise BadInputError(f"cannot find Python module '{module_name}' for {ref}: check the name and PYTHONPATH")
        origin = Path(spec.origin) if spec.origin and os.path.exists(spec.origin) else None
        digest = hashlib.sha256(origin.read_bytes()).hexdigest() if origin else "unknown"
        return ModelSource("factory", ref, None, None, f"sha256:{digest}")
    if ref.startswith((".", "/", "~")) or "\\" in ref or not HUB_ID.match(ref) or ".." in ref:
        raise BadInputError(f"{ref} does not exist: pass an existing model directory, a hub id or module.path:factory")
    return download(ref, revision=revision, cache_dir=cache_dir, token=token)


def download(
    repo_id: str, revision: str | None = None, cache_dir: str | None = None, token: str | None = None
) -> ModelSource:
    """Download a hub snapshot with huggingface_hub; the snapshot folder's name is the resolved commit."""
    import httpx2
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    _bound_hub_requests()
    try:
        folder = snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, token=token, ignore_patterns=IGNORE_ON_DOWNLOAD
        )
    except RevisionNotFoundError:
        raise BadInputError(
            f"hub model {repo_id} has no revision '{revision}': pass an existing branch, tag or commit"
        ) from None
    except GatedRepoError:
        raise BadInputError(f"hub model {repo_id} is gated: accept its terms and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise BadInputError(
            f"no model '{repo_id}' on the hub (or it is private): check the id, or set HF_TOKEN for a private model"
        ) from None
    except LocalEntryNotFoundError:
        raise TransientError(
            f"cannot reach the Hugging Face Hub to fetch {repo_id} and it is not cached: check the network or "
            "HF_ENDPOINT, or pass a local directory"
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status is not None and status < 500 and status != 429:
            raise BadInputError(f"the hub refused {repo_id} (HTTP {status}): check the id and HF_TOKEN") from None
        raise TransientError(f"the hub failed while fetching {repo_id} (HTTP {status}); try again") from None
    except (OSError, ConnectionError, TimeoutError, httpx2.TransportError) as exc:  # dropped, reset, timed out
        raise TransientError(f"network error while fetching {repo_id} ({type(exc).__name__}); try again") from None
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise BadInputError(f"hub repo {repo_id} has no config.json: it is not a transformers model")
    return ModelSource("hub", repo_id, str(folder), folder.name, f"git:{folder.name}")


def _bound_hub_requests() -> None:
    """Bound every wait of huggingface_hub's shared HTTP client: its API calls (model info, file tree) pass
    ``timeout=None``, so a hub that stalls would hang the run forever. A request hook gives each request without
    a read timeout HF_HUB_ETAG_TIMEOUT seconds (default 10); file downloads keep their HF_HUB_DOWNLOAD_TIMEOUT."""
    from huggingface_hub import get_session

    session = get_session()
    hooks = session.event_hooks
    if _bounded_timeout not in hooks["request"]:
        hooks["request"].append(_bounded_timeout)
        session.event_hooks = hooks


def _bounded_timeout(request) -> None:
    from huggingface_hub import constants

    timeout = request.extensions.get("timeout") or {}
    if timeout.get("read") is None:
        seconds = float(constants.HF_HUB_ETAG_TIMEOUT)
        request.extensions = {
            **request.extensions,
            "timeout": dict.fromkeys(("connect", "read", "write", "pool"), seconds),
        }


def hash_directory(path: Path) -> str:
    """SHA-256 over the relative name and SHA-256 of every file below `path`, in a stable order (each file's
    digest is remembered while its stat is unchanged: see digests.py)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(f"{file.relative_to(path).as_posix()}\0{file_digest(file)}\n".encode())
    return digest.hexdigest()
