"""The module tree of an exported file, with each module's nodes and op types, as data and as a terminal tree."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from pathlib import Path

from .errors import BadInputError


def load_onnx_graph(path: str | os.PathLike):
    """Load an ONNX graph (no weights) or fail with a one-line reason."""
    import onnx
    from google.protobuf.message import DecodeError

    from .onnx_io import load_graph

    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path} does not exist: pass an ONNX file written by modelexport export")
    try:
        return load_graph(path)
    except (DecodeError, onnx.onnx_cpp2py_export.checker.ValidationError, ValueError, OSError) as exc:
        raise BadInputError(f"{path} is not a readable ONNX file ({type(exc).__name__})") from None


def load_tree(path: str | os.PathLike, model=None) -> dict:
    """The module tree with, per module, `nodes` (own), `total` (with descendants) and `op_types` (own)."""
    from .export import read_tags
    from .tagging import iter_nodes

    model = model if model is not None else load_onnx_graph(path)
    mapping, tree = read_tags(path, model)
    if tree is None or not mapping:
        raise BadInputError(f"{path} carries no hierarchy tags and has no sidecar: export it with modelexport export")
    ops: dict[str, Counter] = defaultdict(Counter)
    for node in iter_nodes(model.graph):
        ops[mapping.get(node.name, tree["tag"])][node.op_type] += 1

    def fill(entry: dict) -> int:
        own = ops.get(entry["tag"], Counter())
        entry["nodes"] = sum(own.values())
        entry["op_types"] = dict(own.most_common())
        entry["total"] = entry["nodes"] + sum(fill(child) for child in entry["children"])
        return entry["total"]

    fill(tree)
    return tree


def render_tree(tree: dict, depth: int | None = None, op_types: bool = False):
    """A rich Tree: one line per module with its node counts (and top op types)."""
    from rich.tree import Tree

    def label(entry: dict) -> str:
        segment = entry["tag"].rsplit("/", 1)[-1]
        total = entry.get("total", entry.get("nodes", 0))
        text = f"[bold]{segment}[/] [dim]{entry.get('module') or '(root)'}[/] — {entry.get('nodes', 0)} nodes"
        if total != entry.get("nodes", 0):
            text += f", {total} with children"
        if op_types and entry.get("op_types"):
            shown = list(entry["op_types"].items())
            text += " [cyan]" + ", ".join(f"{op}×{n}" for op, n in shown[:6]) + (" …" if len(shown) > 6 else "") + "[/]"
        return text

    def add(node, entry: dict, level: int) -> None:
        for child in entry["children"]:
            branch = node.add(label(child))
            if depth is None or level + 1 < depth:
                add(branch, child, level + 1)

    root = Tree(label(tree))
    if depth is None or depth > 0:
        add(root, tree, 0)
    return root
