"""The hierarchy report of an exported file: module tree, node counts per module and op type, tag coverage.

Written as ``report.json`` (data) and ``report.md`` (for people), next to a GraphML file of the graph
(see :mod:`modelexport.graphml`).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from . import atomic


def build_report(onnx_path: str | os.PathLike) -> dict:
    """Tree with per-module counts, op-type totals and coverage of the tags."""
    from .export import read_sidecar, read_tags
    from .report_tree import load_onnx_graph, load_tree
    from .tagging import TAG_KEY, iter_nodes

    model = load_onnx_graph(onnx_path)
    tree = load_tree(onnx_path, model)
    mapping, _ = read_tags(onnx_path, model)
    nodes = list(iter_nodes(model.graph))
    in_metadata = sum(any(p.key == TAG_KEY for p in n.metadata_props) for n in nodes)
    tagged = sum(1 for n in nodes if mapping.get(n.name))
    known = set()

    def collect(entry: dict, depth: int, rows: list) -> list:
        known.add(entry["tag"])
        rows.append(
            {
                "tag": entry["tag"],
                "module": entry.get("module", ""),
                "class": entry.get("class"),
                "depth": depth,
                "parameters": entry.get("parameters"),
                "nodes": entry["nodes"],
                "total_nodes": entry["total"],
                "op_types": entry["op_types"],
            }
        )
        for child in entry["children"]:
            collect(child, depth + 1, rows)
        return rows

    modules = collect(tree, 0, [])
    sidecar = read_sidecar(onnx_path) or {}
    return {
        "onnx": str(onnx_path),
        "model": (sidecar.get("model") or {}).get("ref"),
        "strategy": (sidecar.get("strategy") or {}).get("name"),
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
        "coverage": {
            "total_nodes": len(nodes),
            "tagged_nodes": tagged,
            "untagged_nodes": len(nodes) - tagged,
            "root_tagged_nodes": sum(1 for n in nodes if mapping.get(n.name) == tree["tag"]),
            "tags_in_onnx_metadata": in_metadata,
            "unknown_tags": sorted({t for t in mapping.values() if t and t not in known}),
            "coverage": tagged / len(nodes) if nodes else 1.0,
            "modules": len(modules),
            "modules_with_nodes": sum(1 for m in modules if m["nodes"]),
        },
        "op_types": dict(Counter(n.op_type for n in nodes).most_common()),
        "modules": modules,
        "tree": tree,
    }


def hierarchy_markdown(report: dict) -> str:
    """report.md: coverage, then the module tree as an indented table."""
    cov = report["coverage"]
    lines = [
        f"# Hierarchy report of `{Path(report['onnx']).name}`",
        "",
        f"Model `{report['model']}`, strategy `{report['strategy']}`, opset {report['opset']}.",
        "",
        f"- nodes: {cov['total_nodes']}, tagged: {cov['tagged_nodes']} ({cov['coverage']:.1%}), on the root "
        f"module: {cov['root_tagged_nodes']}, tag in ONNX metadata: {cov['tags_in_onnx_metadata']}",
        f"- modules: {cov['modules']}, with nodes of their own: {cov['modules_with_nodes']}",
        f"- op types: {', '.join(f'{op} {n}' for op, n in report['op_types'].items())}",
        "",
        "| module | class | own nodes | with children | op types |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for m in report["modules"]:
        indent = "&nbsp;&nbsp;" * m["depth"]
        name = m["module"] or "(root)"
        cls = (m["class"] or m["tag"].rsplit("/", 1)[-1]).rsplit(".", 1)[-1]
        ops = ", ".join(f"{op}×{n}" for op, n in m["op_types"].items())
        lines.append(f"| {indent}`{name}` | {cls} | {m['nodes']} | {m['total_nodes']} | {ops} |")
    return "\n".join(lines) + "\n"


def write_reports(onnx_path: str | os.PathLike, output_dir: str | os.PathLike) -> dict[str, Path]:
    """`write_hierarchy_report` of a file, or of each file of an encoder-decoder's directory into
    ``output_dir/<stem>_report`` (keys ``encoder_model.json`` ...)."""
    from . import seq2seq

    if not seq2seq.is_export_directory(onnx_path):
        return write_hierarchy_report(onnx_path, output_dir)
    paths = {}
    for path in seq2seq.part_paths(onnx_path).values():
        for kind, written in write_hierarchy_report(path, Path(output_dir) / f"{path.stem}_report").items():
            paths[f"{path.stem}.{kind}"] = written
    return paths


def write_hierarchy_report(onnx_path: str | os.PathLike, output_dir: str | os.PathLike) -> dict[str, Path]:
    """Write report.json, report.md and ``<stem>.graphml`` into `output_dir`; returns their paths."""
    from .errors import BadInputError
    from .graphml import write_graphml

    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise BadInputError(f"{output_dir} is a file: pass a directory for the report")
    report = build_report(onnx_path)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": output_dir / "report.json",
        "markdown": output_dir / "report.md",
        "graphml": output_dir / f"{Path(onnx_path).stem}.graphml",
    }
    write_graphml(onnx_path, paths["graphml"])
    atomic.write_text(paths["markdown"], hierarchy_markdown(report))
    atomic.write_text(paths["json"], json.dumps(report, indent=1))
    return paths
