"""Export a model to hierarchy-tagged ONNX (strategy selection, tagging, atomic ONNX + sidecar)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import task

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
) -> Produced:
    """Write OUTPUT and its sidecar; the result holds the strategy, node stats and every attempt."""
    from modelexport.export import export_model
    from modelexport.inputs import parse_input_spec
    from modelexport.onnx_io import external_data_path

    Path(output).parent.mkdir(parents=True, exist_ok=True)
    with computing():
        r = export_model(
            source,
            output,
            strategy=strategy,
            opset=opset,
            clean=clean,
            torch_modules=torch_modules,
            input_spec=parse_input_spec(input_spec),
            task=task_name,
            trust_remote_code=trust_remote_code,
            max_memory_gb=max_memory_gb,
        )
    data = {
        "onnx_path": str(r.onnx_path),
        "sidecar_path": str(r.sidecar_path),
        "strategy": r.strategy,
        "stats": r.sidecar["stats"],
        "attempts": [asdict(a) for a in r.attempts],
        "seconds": r.seconds,
    }
    return produced(data, r.onnx_path, r.sidecar_path, external_data_path(r.onnx_path))
