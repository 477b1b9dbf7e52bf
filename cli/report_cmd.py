"""Write the hierarchy report of an exported file: report.md, report.json and OUTPUT_STEM.graphml.

The report holds the module tree with node counts per module and op type, and tag coverage. The GraphML file holds
every node with its tag, op type and module (group by them in yEd or Gephi) and the model itself, so
`modelexport import-graphml` can rebuild the ONNX file. Default DIR: OUTPUT_STEM_report beside the ONNX file.
"""

from __future__ import annotations

NAME = "report"
HELP = "write the hierarchy report (Markdown, JSON) and a GraphML graph"


def add_arguments(p) -> None:
    p.add_argument("onnx", metavar="OUTPUT.onnx", help="ONNX file written by modelexport export")
    p.add_argument("--output-dir", metavar="DIR", help="where to write the report (default OUTPUT_STEM_report)")


def run(args) -> int:
    from pathlib import Path

    from modelexport.report import write_hierarchy_report

    from .terminal import new_console

    onnx_path = Path(args.onnx)
    output_dir = Path(args.output_dir) if args.output_dir else onnx_path.with_name(f"{onnx_path.stem}_report")
    paths = write_hierarchy_report(onnx_path, output_dir)
    new_console().print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0
