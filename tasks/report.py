"""The hierarchy report of the export (Markdown, JSON) and its GraphML graph."""

from __future__ import annotations

from prefect import task

from modelexport import storage

from .policy import CONTENT, Produced, produced


@task(name="report", cache_policy=CONTENT, persist_result=True)
def report_onnx(export: Produced, output_dir: str) -> Produced:
    """Keyed on the export alone: validation and profiling settings do not change it."""
    from modelexport.report import write_reports

    folder = storage.Folder(output_dir)
    paths = write_reports(export.local("onnx_path"), folder.local)
    locations = dict(zip(paths, folder.commit(paths.values()), strict=True))
    return produced(locations, *locations.values())
