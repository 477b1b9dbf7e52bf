"""Export a model to hierarchy-tagged ONNX (strategy selection, tagging, atomic ONNX + sidecar)."""

from __future__ import annotations

from dataclasses import asdict

from prefect import task

from modelexport import storage
from modelexport.source import ModelSource

from .policy import CONTENT_BUT_LIMITS, Produced, computing, produced


@task(name="export", cache_policy=CONTENT_BUT_LIMITS, persist_result=True)
def export_onnx(
    source: ModelSource,
    output: str,
    input_spec: dict,
    strategy: str = "auto",
    opset: int = 18,
    clean: bool = False,
    torch_modules: bool = False,
    task_name: str | None = None,
    trust_remote_code: bool = False,
    max_memory_gb: float | None = None,
    dtype: str | None = None,
    stream_weights: bool = False,
) -> Produced:
    """Write OUTPUT (a path, or a store's URL) and its sidecar; the result holds the strategy, node stats and every
    attempt."""
    from modelexport import seq2seq
    from modelexport.export import export_model
    from modelexport.inputs import parse_input_spec

    local = storage.local_path(output)
    local.parent.mkdir(parents=True, exist_ok=True)
    with computing():
        r = export_model(
            source,
            local,
            strategy=strategy,
            opset=opset,
            clean=clean,
            torch_modules=torch_modules,
            input_spec=None if seq2seq.is_seq2seq(task_name) else parse_input_spec(input_spec),
            task=task_name,
            trust_remote_code=trust_remote_code,
            max_memory_gb=max_memory_gb,
            dtype=dtype,
            stream_weights=stream_weights,
        )
    folder = storage.Folder(storage.parent(output))
    if hasattr(r, "parts"):  # an encoder-decoder: a directory of two files, each with its sidecar
        return _produced_directory(r, folder)
    data = {
        "onnx_path": folder.location_of(r.onnx_path),
        "sidecar_path": folder.location_of(r.sidecar_path),
        "strategy": r.strategy,
        "stats": r.sidecar["stats"],
        "attempts": [asdict(a) for a in r.attempts],
        "seconds": r.seconds,
    }
    return produced(data, *folder.commit(_files(r)))


def _files(r) -> list:
    """An export's files in the order they are committed: the ONNX file, which names the others, last."""
    from modelexport.onnx_io import external_data_path

    return [external_data_path(r.onnx_path), r.sidecar_path, r.onnx_path]


def _produced_directory(r, folder: storage.Folder) -> Produced:
    """One result for both files: the directory as ``onnx_path``, nodes summed, coverage the lower of the two,
    each file's own figures under ``parts``; every file counts for the cache."""
    parts = {
        part: {"onnx_path": folder.location_of(e.onnx_path), "strategy": e.strategy, "stats": e.sidecar["stats"]}
        for part, e in r.parts.items()
    }
    stats = [p["stats"] for p in parts.values()]
    total = {k: sum(s[k] for s in stats) for k in ("total_nodes", "tagged_nodes", "root_tagged_nodes")}
    data = {
        "onnx_path": folder.location_of(r.directory),
        "strategy": "+".join(dict.fromkeys(p["strategy"] for p in parts.values())),
        "stats": total | {"coverage": min(s["coverage"] for s in stats)},
        "attempts": [asdict(a) for e in r.parts.values() for a in e.attempts],
        "seconds": r.seconds,
        "parts": parts,
    }
    return produced(data, *folder.commit([f for e in r.parts.values() for f in _files(e)]))
