"""The tagging pass: projection onto unscoped nodes, and its cost growing linearly with the graph."""

from __future__ import annotations

import sys

from onnx import helper

from modelexport.hierarchy import build_hierarchy
from modelexport.tagging import project_tags
from tests.plain_models import OpSignatureNet


def _chain(n: int):
    """A chain of n Relu nodes, each fed also by its own Constant (unscoped, like TorchScript's constants)."""
    nodes = []
    prev = "x"
    for i in range(n):
        nodes.append(helper.make_node("Constant", [], [f"c{i}"], name=f"Constant_{i}"))
        nodes.append(helper.make_node("Add", [prev, f"c{i}"], [f"y{i}"], name=f"/model/encoder/Add_{i}"))
        prev = f"y{i}"
    return helper.make_graph(nodes, "chain", [], [])


def _scopes(graph):
    return [
        None if n.op_type == "Constant" else ("head" if i % 4 == 3 else "encoder") for i, n in enumerate(graph.node)
    ]


def test_unscoped_nodes_take_their_consumers_tag():
    graph = _chain(4)
    hierarchy = build_hierarchy(OpSignatureNet())
    tags, projected = project_tags(graph, _scopes(graph), hierarchy)
    assert projected == 4
    for i in range(0, len(tags), 2):  # each Constant takes the tag of the Add it feeds
        assert tags[i] == tags[i + 1]
    assert set(tags) == {"/OpSignatureNet/Encoder", "/OpSignatureNet/Head"}


def test_a_constant_shared_by_two_modules_takes_their_common_ancestor():
    nodes = [
        helper.make_node("Constant", [], ["c"], name="Constant_0"),
        helper.make_node("Add", ["x", "c"], ["a"], name="a"),
        helper.make_node("Add", ["a", "c"], ["b"], name="b"),
    ]
    graph = helper.make_graph(nodes, "g", [], [])
    tags, _ = project_tags(graph, [None, "encoder.layers.0", "encoder.layers.1"], build_hierarchy(OpSignatureNet()))
    assert tags == ["/OpSignatureNet/Encoder", "/OpSignatureNet/Encoder/LayerA.0", "/OpSignatureNet/Encoder/LayerB.1"]


def _calls(n: int) -> int:
    graph = _chain(n)
    scopes = _scopes(graph)
    hierarchy = build_hierarchy(OpSignatureNet())
    count = 0

    def profiler(frame, event, arg):
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(profiler)
    try:
        project_tags(graph, scopes, hierarchy)
    finally:
        sys.setprofile(None)
    return count


def test_tagging_work_is_linear_in_the_number_of_nodes():
    """Counted function calls, not seconds: 16x the nodes must cost 16x the calls (within 10%)."""
    small, large = _calls(250), _calls(4000)
    ratio = large / small
    print(f"\ncalls: {small} for 500 nodes, {large} for 8000 nodes: ratio {ratio:.2f} (linear: 16)")
    assert 14.5 <= ratio <= 17.5
