"""The ONNX graph as GraphML (networkx), grouped by module in yEd or Gephi, and back to ONNX.

Each ONNX node becomes a GraphML node with ``op_type``, ``tag``, ``module`` (attribute path), ``class``,
``namespace`` and ``label``; each graph input and output a node of kind ``input`` / ``output``; each tensor passed
between nodes an edge with its ``tensor`` name. Group or colour by ``module``/``tag`` (Gephi: Appearance →
Partition; yEd: Edit → Properties Mapper) to see the modules.

The file also carries what it takes to rebuild the model exactly, as base64-encoded protobuf: the graph attribute
``onnx_model`` is the ModelProto without its nodes (inputs, outputs, initializers, opsets, metadata) and each
node's ``onnx_node`` is its NodeProto (attributes, metadata and subgraphs included), with ``index`` giving the
original order. :func:`read_graphml` reassembles them; those protos are authoritative, the edges are for viewing.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from .errors import BadInputError, first_line

FORMAT = "modelexport.graphml/1"


def _modules(tree: dict | None) -> dict[str, dict]:
    found: dict[str, dict] = {}

    def visit(entry: dict) -> None:
        found[entry["tag"]] = entry
        for child in entry.get("children", []):
            visit(child)

    if tree:
        visit(tree)
    return found


def to_networkx(onnx_path: str | os.PathLike):
    """A MultiDiGraph of the model at `onnx_path` (weights included, for the round trip)."""
    import networkx as nx
    import onnx

    from .export import read_tags
    from .report_tree import load_onnx_graph

    load_onnx_graph(onnx_path)  # one-line errors for missing or unreadable files
    model = onnx.load(str(onnx_path))  # with external weights: the GraphML must hold everything
    tags, tree = read_tags(onnx_path, model)
    modules = _modules(tree)
    root = tree["tag"] if tree else ""
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    del skeleton.graph.node[:]
    graph = nx.MultiDiGraph(
        format=FORMAT,
        name=model.graph.name or Path(onnx_path).stem,
        onnx_model=base64.b64encode(skeleton.SerializeToString()).decode("ascii"),
    )
    producer: dict[str, str] = {}
    for i in model.graph.input:
        graph.add_node(
            f"input:{i.name}",
            kind="input",
            label=i.name,
            op_type="Input",
            tag=root,
            module="",
            namespace=root.strip("/"),
            index=-1,
        )
        producer[i.name] = f"input:{i.name}"
    for index, node in enumerate(model.graph.node):
        tag = tags.get(node.name, "")
        info = modules.get(tag, {})
        graph.add_node(
            node.name,
            kind="node",
            label=f"{node.op_type} {node.name}",
            op_type=node.op_type,
            tag=tag,
            module=info.get("module", ""),
            namespace=tag.strip("/"),
            **{"class": (info.get("class") or tag.rsplit("/", 1)[-1]).rsplit(".", 1)[-1]},
            index=index,
            onnx_node=base64.b64encode(node.SerializeToString()).decode("ascii"),
        )
        for tensor in node.input:
            if tensor in producer:
                graph.add_edge(producer[tensor], node.name, tensor=tensor)
        for tensor in node.output:
            if tensor:
                producer[tensor] = node.name
    for o in model.graph.output:
        graph.add_node(
            f"output:{o.name}",
            kind="output",
            label=o.name,
            op_type="Output",
            tag=root,
            module="",
            namespace=root.strip("/"),
            index=-1,
        )
        if o.name in producer:
            graph.add_edge(producer[o.name], f"output:{o.name}", tensor=o.name)
    return graph


def write_graphml(onnx_path: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Write the GraphML of `onnx_path` to `path`, atomically."""
    import networkx as nx

    from .atomic import atomic_path

    graph = to_networkx(onnx_path)
    with atomic_path(path) as tmp:
        nx.write_graphml(graph, tmp)
    return Path(path)


def read_graphml(path: str | os.PathLike):
    """Rebuild the ONNX ModelProto from a GraphML file written by :func:`write_graphml`."""
    import binascii
    import xml.etree.ElementTree as ET

    import networkx as nx
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path} does not exist: pass a GraphML file written by modelexport report")
    try:
        graph = nx.read_graphml(path)
    except (ET.ParseError, nx.NetworkXError, ValueError, KeyError) as exc:
        raise BadInputError(
            f"{path} is not readable GraphML ({type(exc).__name__}): pass one written by modelexport report"
        ) from None
    if graph.graph.get("format") != FORMAT or "onnx_model" not in graph.graph:
        raise BadInputError(
            f"{path} was not written by modelexport report (no {FORMAT} model): it cannot be turned back into ONNX"
        )
    try:
        model = onnx.ModelProto.FromString(base64.b64decode(graph.graph["onnx_model"]))
        nodes = sorted(
            (data for _, data in graph.nodes(data=True) if data.get("kind") == "node"),
            key=lambda data: int(data["index"]),
        )
        model.graph.node.extend(onnx.NodeProto.FromString(base64.b64decode(d["onnx_node"])) for d in nodes)
    except (KeyError, ValueError, binascii.Error, DecodeError) as exc:
        raise BadInputError(
            f"{path} holds a damaged model ({type(exc).__name__}: {exc}): re-create it with modelexport report"
        ) from None
    return model


def import_graphml(path: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Rebuild the model of GraphML `path`, check it (``full_check``) and save it atomically to `output`."""
    import onnx

    from .onnx_io import save_atomic

    output = Path(output)
    if output.suffix != ".onnx":
        raise BadInputError(f"output {output} must end in .onnx")
    if not output.parent.is_dir():
        raise BadInputError(f"output directory {output.parent} does not exist: create it first")
    model = read_graphml(path)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = first_line(exc)
        raise BadInputError(f"the model rebuilt from {path} fails the ONNX checker: {first}") from None
    save_atomic(model, output)
    return output
