"""Put hierarchy tags on ONNX nodes: project the exporter's per-node module scopes onto every node.

A strategy tells, for each top-level node, the attribute path of the module whose ``forward`` ran it, or None
where the exporter recorded nothing (constants, weight-sharing Identity nodes, optimizer-made nodes). Those get
the deepest common ancestor of their consumers' tags (a constant belongs to the module that uses it), failing
that of their producers'. Subgraph nodes (If/Loop bodies) take the tag of the node that holds the subgraph.
Every step is one pass over the nodes and edges: linear in the size of the graph.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import onnx

from .hierarchy import Hierarchy, common_ancestor

TAG_KEY = "hierarchy_tag"
HIERARCHY_KEY = "modelexport.hierarchy"
# Google's Model Explorer groups nodes into collapsible layers by this key ("a/b/c").
NAMESPACE_KEY = "namespace"


@dataclass
class TagStats:
    total_nodes: int
    tagged_nodes: int
    root_tagged_nodes: int
    projected_nodes: int  # nodes the exporter gave no scope, tagged from their neighbours

    @property
    def coverage(self) -> float:
        return self.tagged_nodes / self.total_nodes if self.total_nodes else 1.0


def project_tags(graph: onnx.GraphProto, scopes: Sequence[str | None], hierarchy: Hierarchy) -> tuple[list[str], int]:
    """One tag per top-level node of `graph`; returns the tags and how many had to be projected."""
    tags: list[str | None] = [None if s is None else hierarchy.tag_for_path(s) for s in scopes]
    consumers: dict[str, list[int]] = defaultdict(list)
    producer: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            consumers[name].append(i)
        for name in node.output:
            producer[name] = i
    projected = sum(t is None for t in tags)
    for i in reversed(range(len(tags))):  # consumers come after producers: resolve them first
        if tags[i] is None:
            around = {tags[j] for out in graph.node[i].output for j in consumers[out] if tags[j] is not None}
            if around:
                tags[i] = common_ancestor(around)
    for i, node in enumerate(graph.node):
        if tags[i] is None:
            around = {tags[producer[x]] for x in node.input if x in producer and tags[producer[x]] is not None}
            tags[i] = common_ancestor(around) if around else hierarchy.root
    return tags, projected


def iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of `graph`, subgraphs (If/Loop/Scan bodies) included, parents before children."""
    for node in graph.node:
        yield node
        yield from subgraph_nodes(node)


def subgraph_nodes(node: onnx.NodeProto) -> Iterator[onnx.NodeProto]:
    """Every node inside the subgraphs that `node` holds as attributes."""
    for sub in subgraphs(node):
        yield from iter_nodes(sub)


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The graphs `node` holds as attributes (If branches, Loop and Scan bodies), not those nested in them."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def _set_meta(props, key: str, value: str) -> None:
    for entry in props:
        if entry.key == key:
            entry.value = value
            return
    props.add(key=key, value=value)


def name_nodes(graph: onnx.GraphProto) -> None:
    """Give every node a unique name (some exporters leave names empty); tags and profiles key on names."""
    seen: set[str] = set()
    for i, node in enumerate(iter_nodes(graph)):
        if not node.name or node.name in seen:
            base = node.name or f"{node.op_type}_{i}"
            name, n = base, 0
            while name in seen:
                n += 1
                name = f"{base}__{n}"
            node.name = name
        seen.add(node.name)


def node_tags(model: onnx.ModelProto, tags: Sequence[str]) -> dict[str, str]:
    """Map every node name (subgraph nodes included) to its tag."""
    mapping: dict[str, str] = {}
    for node, tag in zip(model.graph.node, tags, strict=True):
        mapping[node.name] = tag
        for sub in subgraph_nodes(node):
            mapping[sub.name] = tag
    return mapping


def apply_tags(model: onnx.ModelProto, mapping: dict[str, str], tree: dict, namespace: bool = True) -> None:
    """Write each node's tag into its ``metadata_props`` and the module tree into the model's."""
    for node in iter_nodes(model.graph):
        tag = mapping[node.name]
        _set_meta(node.metadata_props, TAG_KEY, tag)
        if namespace:
            _set_meta(node.metadata_props, NAMESPACE_KEY, tag.strip("/"))
    _set_meta(model.metadata_props, HIERARCHY_KEY, json.dumps(tree, separators=(",", ":")))


def strip_metadata(model: onnx.ModelProto) -> None:
    """Remove every node's metadata and our model-level keys: the `--clean` form."""
    for node in iter_nodes(model.graph):
        del node.metadata_props[:]
    keep = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith("modelexport.")]
    del model.metadata_props[:]
    for key, value in keep:
        model.metadata_props.add(key=key, value=value)


def stats_for(mapping: dict[str, str], root: str, projected: int) -> TagStats:
    counts = Counter(mapping.values())
    return TagStats(
        total_nodes=len(mapping),
        tagged_nodes=sum(1 for t in mapping.values() if t),
        root_tagged_nodes=counts.get(root, 0),
        projected_nodes=projected,
    )
