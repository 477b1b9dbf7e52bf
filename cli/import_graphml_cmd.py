"""Rebuild an ONNX file from a GraphML file written by `modelexport report`.

The model is checked with the ONNX checker (full_check) before it is written; it computes exactly what the
original computed.
"""

from __future__ import annotations

NAME = "import-graphml"
HELP = "rebuild an ONNX file from a GraphML file written by modelexport report"


def add_arguments(p) -> None:
    p.add_argument("graphml", metavar="FILE.graphml", help="GraphML written by modelexport report")
    p.add_argument("output", metavar="OUT.onnx", help="ONNX file to write")


def run(args) -> int:
    from modelexport.graphml import import_graphml

    from .terminal import new_console

    path = import_graphml(args.graphml, args.output)
    new_console().print(f"wrote {path}")
    return 0
