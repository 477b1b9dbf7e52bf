"""``usage`` — module scopes from forward hooks only; never resolves the exporter's module names.

While the TorchScript exporter traces the model, a forward pre-hook on every module with a tag of its own (built-in
``torch.nn`` leaves and containers share their parent's) opens a tracer scope naming that module by its index, and a
forward hook closes it. The tracer files every op it records under the scopes open at that moment, and the exporter
writes them into each node's name, ours among its own (``/model/~usage3/encoder/~usage9/layer.0/.../MatMul``): a
node's module is the innermost index in its name, the root where there is none. The indices are then taken out of
the node and value names, which become the exporter's own (those of ``htp``). Nothing is resolved from attribute
names, as ``htp`` must (a called ``Sequential``'s children are named relative to its holder, a second call gets a
suffix): the hook knew which module ran. It adds no node to the graph. An earlier design marked each module's entry
and exit with a marker op in the graph; the markers' nodes cost the exporter's passes 5-15% of a ResNet-50 export
(71 markers), where two scope calls per module call cost nothing measurable.

Where it is less exact than ``htp``/``dynamo``: only a module called through ``__call__`` is seen (its hooks run);
a direct ``child.forward(x)`` is sent through ``__call__`` for the export (`direct_calls.py`), but ops a module runs
with a child's parameters are the caller's. A
module's forward hooks registered before ours run inside its scope, so their ops are the module's, where ``htp``
gives them to the parent. Nodes the exporter names outside every scope (none on the test models) are left to
tagging, which gives them their neighbours' module.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

import onnx
import torch

from ..direct_calls import scope_direct_calls
from ..hierarchy import Hierarchy
from ..tagging import subgraphs
from ..wrapping import KeywordWrapper
from .base import Capture, Strategy, register, torchscript_export

SCOPE_PREFIX = "~usage"  # a level no attribute name can be: the exporter writes the part after "::" into names
# One of our levels in a node or value name; a module called again may get the exporter's call suffix (``_1``).
LEVEL = re.compile(rf"/{re.escape(SCOPE_PREFIX)}(\d+)(?:_\d+)?(?=/)")


def install_scopes(model: torch.nn.Module, hierarchy: Hierarchy | None = None) -> tuple[list[str], list]:
    """Hook the submodules of `model` that have a tag of their own in `hierarchy` (all of them without one) so that
    each call of one, while tracing, runs in a tracer scope naming the module's index; returns the attribute paths
    (the indices index them) and the hook handles."""
    tagged = None if hierarchy is None else {info.module for info in hierarchy.modules.values()}
    paths: list[str] = []
    handles = []

    def enter(scope: str) -> None:
        state = torch._C._get_tracing_state()
        if state is not None:
            state.push_scope(scope)

    def leave() -> None:
        state = torch._C._get_tracing_state()
        if state is not None:
            state.pop_scope()

    for path, module in model.named_modules():
        if not path or (tagged is not None and path not in tagged):
            continue  # the root's ops are those outside every scope of ours
        scope = f"modelexport::{SCOPE_PREFIX}{len(paths)}"
        paths.append(path)
        handles.append(module.register_forward_pre_hook(lambda _m, _args, scope=scope: enter(scope)))
        handles.append(module.register_forward_hook(lambda _m, _args, _out: leave()))
    return paths, handles


def scope_of(name: str, paths: list[str]) -> str | None:
    """The module of a node by its name: its innermost level of ours; the root ("") where it has none; None where
    the exporter named it outside every scope."""
    if not name.startswith("/"):
        return None
    levels = LEVEL.findall(name)
    return paths[int(levels[-1])] if levels else ""


def strip_levels(graph: onnx.GraphProto, keep: set[str]) -> None:
    """Take our levels out of node and value names, subgraphs included. A value named in `keep` (the weights,
    whose names are in their serialized bytes) keeps its name, as does one whose plain name would not be unique."""
    graphs = list(_graphs(graph))
    values = {name for g in graphs for name in _value_names(g)}
    plain = {name: LEVEL.sub("", name) for name in values - keep}
    plain = {name: new for name, new in plain.items() if new != name}
    taken = Counter(new for new in plain.values()) + Counter(values - plain.keys())
    renamed = {name: new for name, new in plain.items() if taken[new] == 1}
    for g in graphs:
        for node in g.node:
            node.name = LEVEL.sub("", node.name)
            for field in (node.input, node.output):
                for i, name in enumerate(field):
                    if name in renamed:
                        field[i] = renamed[name]
        for value in (*g.input, *g.output, *g.value_info):
            value.name = renamed.get(value.name, value.name)


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for sub in subgraphs(node):
            yield from _graphs(sub)


def _value_names(graph: onnx.GraphProto) -> Iterator[str]:
    for node in graph.node:
        yield from node.input
        yield from node.output
    for value in (*graph.input, *graph.output, *graph.value_info):
        yield value.name


@register
class UsageStrategy(Strategy):
    name = "usage"
    description = "forward hooks open a tracer scope per module call; scopes read back from our own levels"

    def capture(self, model, inputs, opset, positional, hierarchy=None, stream_weights=False):
        wrapper = KeywordWrapper(model, inputs.names, positional=positional).eval()
        paths, handles = install_scopes(model, hierarchy)
        try:
            with scope_direct_calls(model) as calls:
                proto, weights = torchscript_export(wrapper, inputs, opset, stream_weights)
        finally:
            for handle in handles:
                handle.remove()
        scopes = [scope_of(node.name, paths) for node in proto.graph.node]
        strip_levels(proto.graph, {i.name for i in proto.graph.initializer} | set(weights.names))
        return Capture(
            proto,
            scopes,
            exporter=f"torch.onnx {torch.__version__} (TorchScript, hook scopes)",
            weights=weights,
            ran=calls.ran_paths(),
        )
