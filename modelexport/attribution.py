"""Attribute ONNX Runtime's per-node kernel times to the modules that produced the nodes.

ORT's profiler names each kernel after the node of the graph it *runs*, which at ``ORT_ENABLE_ALL`` is the
optimized graph: fused nodes get new names (``BiasGelu``, ``.../MatMulScaleFusion/``, ``<tensor>_nchwc``). We
ask ORT to save that graph (``SessionOptions.optimized_model_filepath``) and map each of its nodes back to the
exported graph, in this order:

1. ``name``: a node that kept its exported name keeps its tag;
2. ``tensors``: a fused node writes tensors of the exported graph; the exported nodes between those tensors and
   the tensors the optimized graph still has are the nodes it replaced; it takes their common ancestor tag;
3. ``name-rule``: its name embeds an exported node or tensor name (``<node>/MatMulAddFusion``,
   ``fused <node>``, ``<tensor>_nchwc``, ``<name>_token_3``);
4. ``neighbours``: otherwise (layout reorders), the common ancestor of its consumers' tags, else producers'.

Kernel time on nodes mapped by 1-3 is *attributed*; by 4, *inferred* (it still lands on a module and in the
totals, but is reported apart so a reader can judge it).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

import onnx

from .hierarchy import common_ancestor
from .tagging import iter_nodes, subgraph_nodes

DIRECT = ("name", "tensors", "name-rule")
_SUFFIXES = re.compile(r"(_nchwc|_token_\d+|_kernel_time)$")


@dataclass
class NodeOrigin:
    tag: str | None
    how: str  # name, tensors, name-rule, neighbours, or unmapped
    nodes: tuple[str, ...] = ()  # the exported nodes it stands for (none when found by its neighbours)


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output if out}


def map_nodes(
    original: onnx.ModelProto, optimized: onnx.ModelProto | None, tags: dict[str, str]
) -> dict[str, NodeOrigin]:
    """Optimized node name -> its tag in `original` and how it was found. Without `optimized`, names only."""
    if optimized is None:
        return {
            n.name: NodeOrigin(tags.get(n.name), "name", (n.name,)) if n.name in tags else NodeOrigin(None, "unmapped")
            for n in iter_nodes(original.graph)
        }
    producer = _producers(original.graph)
    kept = {t for n in optimized.graph.node for t in (*n.input, *n.output)}
    kept |= {i.name for i in optimized.graph.input} | {i.name for i in optimized.graph.initializer}
    origins: dict[str, NodeOrigin] = {}
    for node in optimized.graph.node:
        if node.name in tags:
            origins[node.name] = NodeOrigin(tags[node.name], "name", (node.name,))
        elif replaced := _replaced(node, producer, kept):
            ancestor = common_ancestor({tags.get(n.name) for n in replaced} - {None})
            origins[node.name] = NodeOrigin(ancestor, "tensors", tuple(n.name for n in replaced))
        elif (named := _by_name(node.name, tags, producer)) is not None:
            origins[node.name] = NodeOrigin(tags[named], "name-rule", (named,))
        else:
            origins[node.name] = NodeOrigin(None, "unmapped")
    _from_neighbours(optimized.graph, origins)
    for node in iter_nodes(optimized.graph):  # subgraph (If/Loop body) nodes: by name, else their parent's tag
        for sub in subgraph_nodes(node):
            origins.setdefault(
                sub.name,
                NodeOrigin(tags[sub.name], "name", (sub.name,))
                if sub.name in tags
                else NodeOrigin(origins[node.name].tag, "neighbours"),
            )
    return origins


def _replaced(node: onnx.NodeProto, producer: dict, kept: set[str]) -> list[onnx.NodeProto]:
    """The exported nodes a fused `node` stands for: from its outputs back to tensors that survived."""
    seen: dict[str, onnx.NodeProto] = {}
    stack = [producer[t] for t in node.output if t in producer]
    while stack:
        current = stack.pop()
        if current.name in seen:
            continue
        seen[current.name] = current
        stack.extend(producer[t] for t in current.input if t and t not in kept and t in producer)
    return list(seen.values())


def _by_name(name: str, tags: dict[str, str], producer: dict) -> str | None:
    """The exported node named in `name`, or producing a tensor named there."""
    name = _SUFFIXES.sub("", name.removeprefix("fused "))
    parts = name.split("/")
    for end in range(len(parts), 0, -1):
        candidate = "/".join(parts[:end])
        if candidate in tags:
            return candidate
        if candidate in producer and producer[candidate].name in tags:
            return producer[candidate].name
    return None


def _from_neighbours(graph: onnx.GraphProto, origins: dict[str, NodeOrigin]) -> None:
    """Unmapped nodes take the common ancestor of their consumers' tags, else of their producers'."""
    consumers: dict[str, list[str]] = defaultdict(list)
    producer: dict[str, str] = {}
    for node in graph.node:
        for t in node.input:
            consumers[t].append(node.name)
        for t in node.output:
            producer[t] = node.name
    for node in reversed(graph.node):
        if origins[node.name].tag is None:
            around = {origins[c].tag for t in node.output for c in consumers[t]} - {None}
            if around:
                origins[node.name] = NodeOrigin(common_ancestor(around), "neighbours")
    for node in graph.node:
        if origins[node.name].tag is None:
            around = {origins[producer[t]].tag for t in node.input if t in producer} - {None}
            if around:
                origins[node.name] = NodeOrigin(common_ancestor(around), "neighbours")


def roll_up(tree: dict, self_ms: dict[str, float], nodes: dict[str, int]) -> list[dict]:
    """One entry per module of `tree`: its own time, with descendants, and its profiled node count.

    Tags missing from the tree (should not happen) are listed as top-level entries so no time is lost.
    """
    entries: list[dict] = []
    known: set[str] = set()

    def visit(entry: dict, depth: int) -> float:
        tag = entry["tag"]
        known.add(tag)
        row = {
            "tag": tag,
            "module": entry.get("module", ""),
            "depth": depth,
            "self_ms": self_ms.get(tag, 0.0),
            "total_ms": 0.0,
            "nodes": nodes.get(tag, 0),
        }
        entries.append(row)
        row["total_ms"] = row["self_ms"] + sum(visit(child, depth + 1) for child in entry.get("children", []))
        return row["total_ms"]

    visit(tree, 0)
    for tag in sorted(set(self_ms) - known):
        entries.append(
            {
                "tag": tag,
                "module": "",
                "depth": 1,
                "self_ms": self_ms[tag],
                "total_ms": self_ms[tag],
                "nodes": nodes.get(tag, 0),
            }
        )
    return entries
