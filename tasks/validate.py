"""Check the ONNX file against PyTorch under ONNX Runtime (several seeds, a second shape) and write the report."""

from __future__ import annotations

from prefect import task

from modelexport import storage
from modelexport.fleet import ValidateSettings
from modelexport.source import ModelSource

from .policy import CONTENT_BUT_LIMITS, Produced, computing, produced


@task(name="validate", cache_policy=CONTENT_BUT_LIMITS, persist_result=True)
def validate_onnx(
    source: ModelSource,
    export: Produced,
    input_spec: dict | None,
    settings: ValidateSettings,
    output: str,
    task_name: str | None = None,
    trust_remote_code: bool = False,
    max_memory_gb: float | None = None,
) -> Produced:
    """A numerical mismatch is data (``passed`` false), not an exception: the flow marks the model failed.
    INPUT_SPEC is the user's (checked as given); without one, validation derives the model's inputs as the inputs
    stage did and adds the cases that exercise it (token types, padding, the longest sequence, a second size)."""
    from modelexport import seq2seq
    from modelexport.inputs import parse_input_spec
    from modelexport.validate import validate, write_validation

    with computing():
        report = validate(
            export.local("onnx_path"),
            source,
            atol=settings.atol,
            rtol=settings.rtol,
            input_spec=None if input_spec is None or seq2seq.is_seq2seq(task_name) else parse_input_spec(input_spec),
            task=task_name,
            trust_remote_code=trust_remote_code,
            max_memory_gb=max_memory_gb,
        )
    written = [write_validation(report, storage.local_path(output))]
    overlay = written[0].with_name("parity.node_data.json")
    if report.localization and overlay.exists():
        written.append(overlay)
    written = storage.Folder(storage.parent(output)).commit(written)
    worst = report.worst
    return produced(
        {
            "passed": report.passed,
            "summary": report.summary(),
            "atol": report.atol,
            "rtol": report.rtol,
            "checks": len(report.checks),
            "max_abs_diff": worst.max_abs_diff if worst else None,
            "decode": None
            if report.decode is None
            else {"passed": report.decode.passed, "summary": report.decode.summary()},
        },
        *written,
    )
