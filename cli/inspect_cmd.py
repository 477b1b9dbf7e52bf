"""Print the module tree of a tagged ONNX file, with node counts and op types per module."""

from __future__ import annotations

NAME = "inspect"
HELP = "show the module tree of an exported ONNX file"


def add_arguments(p) -> None:
    p.add_argument("onnx", metavar="OUTPUT.onnx", help="ONNX file written by modelexport export")
    p.add_argument("--depth", type=int, default=None, help="show modules down to this depth")


def run(args) -> int:
    from modelexport.report_tree import load_tree

    from .terminal import new_console

    tree = load_tree(args.onnx)
    from modelexport.report_tree import render_tree

    new_console().print(render_tree(tree, depth=args.depth, op_types=True))
    return 0
