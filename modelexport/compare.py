"""Compare the tags of two exported ONNX files: per-module node counts and op types, and overall agreement.

Two agreement figures, because node names only match between exports of the same exporter:

* ``agreement`` — overlap of the two node-count distributions over modules,
  ``sum over tags of min(a_t / A, b_t / B)``: 1.0 when every module holds the same share of nodes in both. It
  works across exporters (htp vs dynamo) but cannot see two nodes swapping modules.
* ``name_agreement`` — among nodes whose name occurs in both files, the share with the same tag; None when fewer
  than half of the smaller file's nodes are shared (different exporters name nodes differently).

``family_agreement`` is finer than ``agreement``: the same overlap per (module, op family), so a module's matrix
products moving to its parent show even when the node counts per module happen to match (see `crosscheck.py`).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field

from .errors import BadInputError


@dataclass
class ModuleRow:
    tag: str
    a_nodes: int
    b_nodes: int
    a_op_types: dict[str, int] = field(default_factory=dict)
    b_op_types: dict[str, int] = field(default_factory=dict)

    @property
    def same(self) -> bool:
        return self.a_op_types == self.b_op_types


@dataclass
class Comparison:
    a: str
    b: str
    a_nodes: int
    b_nodes: int
    agreement: float
    name_agreement: float | None
    shared_names: int
    modules: list[ModuleRow]
    only_in_a: list[str]
    only_in_b: list[str]
    family_agreement: float | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        for row, entry in zip(self.modules, data["modules"]):
            entry["same_op_types"] = row.same
        return data


def tagged_nodes(path: str | os.PathLike) -> tuple[dict[str, tuple[str, str]], set[str]]:
    """Node name -> (tag, op type) for every node of an exported file (tags from metadata or the sidecar), and the
    names of the nodes computed from its inputs (``crosscheck.computed_from_inputs``)."""
    from .crosscheck import computed_from_inputs
    from .export import read_tags
    from .report_tree import load_onnx_graph
    from .tagging import iter_nodes

    model = load_onnx_graph(path)
    mapping, _tree = read_tags(path, model)
    if not mapping:
        raise BadInputError(f"{path} carries no hierarchy tags and has no sidecar: export it with modelexport export")
    nodes = {node.name: (mapping.get(node.name, ""), node.op_type) for node in iter_nodes(model.graph)}
    return nodes, computed_from_inputs(model.graph)


def distribution_agreement(a: Counter, b: Counter) -> float:
    """Overlap of two node-count histograms over tags, each normalised to 1."""
    total_a, total_b = sum(a.values()), sum(b.values())
    if not total_a or not total_b:
        return 1.0 if total_a == total_b else 0.0
    return sum(min(a[t] / total_a, b[t] / total_b) for t in a.keys() & b.keys())


def compare_files(a: str | os.PathLike, b: str | os.PathLike) -> Comparison:
    """Per-module counts and op types of `a` and `b`, the tags only one of them has, and their agreement."""
    from .crosscheck import family_agreement, family_counts

    (nodes_a, live_a), (nodes_b, live_b) = tagged_nodes(a), tagged_nodes(b)
    ops_a: dict[str, Counter] = {}
    ops_b: dict[str, Counter] = {}
    for nodes, ops in ((nodes_a, ops_a), (nodes_b, ops_b)):
        for tag, op in nodes.values():
            ops.setdefault(tag, Counter())[op] += 1
    counts_a = Counter({t: sum(c.values()) for t, c in ops_a.items()})
    counts_b = Counter({t: sum(c.values()) for t, c in ops_b.items()})
    shared = nodes_a.keys() & nodes_b.keys()
    name_agreement = None
    if shared and len(shared) >= 0.5 * min(len(nodes_a), len(nodes_b)):
        name_agreement = sum(nodes_a[n][0] == nodes_b[n][0] for n in shared) / len(shared)
    tags = sorted(ops_a.keys() | ops_b.keys())
    rows = [
        ModuleRow(
            t,
            counts_a[t],
            counts_b[t],
            dict(ops_a.get(t, Counter()).most_common()),
            dict(ops_b.get(t, Counter()).most_common()),
        )
        for t in tags
    ]
    return Comparison(
        a=str(a),
        b=str(b),
        a_nodes=len(nodes_a),
        b_nodes=len(nodes_b),
        agreement=round(distribution_agreement(counts_a, counts_b), 4),
        name_agreement=None if name_agreement is None else round(name_agreement, 4),
        shared_names=len(shared),
        modules=rows,
        only_in_a=[t for t in tags if t not in ops_b],
        only_in_b=[t for t in tags if t not in ops_a],
        family_agreement=family_agreement(
            family_counts(v for n, v in nodes_a.items() if n in live_a),
            family_counts(v for n, v in nodes_b.items() if n in live_b),
        ).agreement,
    )
