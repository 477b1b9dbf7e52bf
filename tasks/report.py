"""The hierarchy report of the export (Markdown, JSON) and its GraphML graph."""

from __future__ import annotations

from prefect import task

from .policy import CONTENT, Produced, produced


@task(name="report", cache_policy=CONTENT, persist_result=True)
def report_onnx(export: Produced, output_dir: str) -> Produced:
    """Keyed on the export alone: validation and profiling settings do not change it."""
    from modelexport.report import write_reports

    paths = write_reports(export.data["onnx_path"], output_dir)
    return produced({name: str(path) for name, path in paths.items()}, *paths.values())
