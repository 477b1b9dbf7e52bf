"""``usage`` — module scopes from forward hooks only; never reads the exporter's scope names.

While the TorchScript exporter traces the model, a forward pre-hook and a forward hook on every module with a tag of
its own (built-in ``torch.nn`` leaves and containers share their parent's) close the span of ops traced since the
last marker with a marker (``modelexport::Mark``) naming the module call those ops ran in: the innermost tagged call
being traced, or the root. A span with no op (an exit straight into the next sibling's entry) gets no marker: each
costs the tracer about a millisecond, and ResNet-50 has 71 spans for its 152 entries and exits. The markers form a
chain beside the data path: each takes the previous marker's output (the first takes nothing) and the last one's
output becomes one extra graph output, so they sit in the graph in trace order without touching the model's values:
the exporter folds and fuses exactly as it does for ``htp`` (a marker between a Conv and its BatchNorm would keep
them apart). One output for all of them, not one each: every graph output costs the exporter's passes (ResNet-50's
capture, in CPU seconds: 1.05 times htp's, 1.07-1.16 with an output per marker). Each node then gets the module of
the first marker after it (the root after the last); the markers and their values are removed; nodes computed from
weights and constants only are left to tagging, which gives them their consumers' module.

Where it is less exact than ``htp``/``dynamo``: it trusts the trace order of the nodes, so constants the exporter
hoists or folds, and a graph-output Identity the export adds at the end, are placed by the markers around their new
position (the root, or the module around them) rather than where they were computed.
"""

from __future__ import annotations

import itertools

import onnx
import torch

from ..hierarchy import Hierarchy
from ..wrapping import KeywordWrapper
from .base import Capture, Strategy, register, torchscript_export

DOMAIN = "modelexport"
ROOT = -1  # the module id of the model itself (its ops outside every tagged submodule)
MARK_OUTPUT = "modelexport_marks"  # the name of the last marker's graph output, removed after the export


class Mark(torch.autograd.Function):
    """A scalar in eager mode; exported as ``modelexport::Mark(previous, module=i)``, the first without an input, so
    it consumes no tensor of the model (and no two markers are alike, each taking the one before it)."""

    @staticmethod
    def forward(ctx, previous, module: int, first: bool):
        return previous.clone()

    @staticmethod
    def symbolic(g, previous, module: int, first: bool):
        out = g.op(f"{DOMAIN}::Mark", *([] if first else [previous]), module_i=module)
        out.setType(previous.type())
        return out


class MarkingWrapper(KeywordWrapper):
    """The keyword wrapper, returning the last marker of the call (the end of their chain) after the model's
    outputs."""

    mark: torch.Tensor | None

    def forward(self, *args):
        self.mark = None
        outputs = super().forward(*args)
        if self.mark is None:
            return outputs
        self.output_names.append(MARK_OUTPUT)
        return (*outputs, self.mark)


def install_markers(model: torch.nn.Module, wrapper: MarkingWrapper,
                    hierarchy: Hierarchy | None = None) -> tuple[list[str], list]:
    """Hook the submodules of `model` that have a tag of their own in `hierarchy` (all of them without one) so that
    each of their entries and exits closes the span of ops traced since the last marker, with a marker naming the
    module call it ran in; returns the attribute paths (marker ids index them) and the hook handles.

    A span with no op gets no marker (an exit straight into the next sibling's entry, a block that calls its first
    child first), and a built-in ``torch.nn`` leaf or a container shares its parent's tag: each marker costs the
    tracer ~1 ms (ResNet-50: 76 of its 278 modules have a tag of their own, 152 entries and exits, 71 markers)."""
    tagged = None if hierarchy is None else {info.module for info in hierarchy.modules.values()}
    paths: list[str] = []
    handles = []
    seed = torch.zeros(())
    inside: list[int] = []  # the tagged module calls being traced, innermost last
    after_mark: str | None = None  # the last traced node after the last marker (the marker's own trail)

    def close_span() -> None:
        nonlocal after_mark
        state = torch._C._get_tracing_state()
        graph = state.graph() if state is not None else None
        if graph is not None:
            last = _last_node(graph)
            if last is None or (wrapper.mark is not None and last == after_mark):
                return  # nothing traced since the start, or since this trace's last marker
        first = wrapper.mark is None
        wrapper.mark = Mark.apply(seed if first else wrapper.mark, inside[-1] if inside else ROOT, first)
        if graph is not None:
            after_mark = _last_node(graph)

    def enter(index: int) -> None:
        close_span()
        inside.append(index)

    def leave() -> None:
        close_span()
        inside.pop()

    for path, module in model.named_modules():
        if not path or (tagged is not None and path not in tagged):
            continue  # the root's ops are those of spans marked ROOT and those after the last marker
        index = len(paths)
        paths.append(path)
        handles.append(module.register_forward_pre_hook(lambda _m, _args, index=index: enter(index)))
        handles.append(module.register_forward_hook(lambda _m, _args, _out: leave()))
    return paths, handles


def _last_node(graph) -> str | None:
    """The last op the tracer added, by its first output's unique name; None before the first. Constants are no
    ops (a marker's seed is one), and the tracer nests each module call's ops in a block of its own."""

    def last_in(node):
        while node.kind() != "prim::Param":  # the start of the block
            if node.kind() == "prim::TracedModuleForward":
                inner = last_in(next(node.blocks()).returnNode().prev())
                if inner is not None:
                    return inner
            elif node.kind() != "prim::Constant":
                return node
            node = node.prev()
        return None

    node = last_in(graph.return_node().prev())
    if node is None:
        return None
    # An op without outputs has no name: a new one each time, so its span is always marked.
    return node.outputsAt(0).debugName() if node.outputsSize() else f"{node.kind()}#{next(_unnamed)}"


_unnamed = itertools.count()


def scopes_from_markers(graph: onnx.GraphProto, paths: list[str], constants: set[str]) -> list[str | None]:
    """Give each node the module of the first marker after it (the root after the last one); remove the markers and
    their values; one scope per remaining node. `constants` names the initializers."""
    scopes: list[str | None] = []
    kept: list[onnx.NodeProto] = []
    span: list[int] = []  # the nodes (indices into `scopes`) since the last marker
    constant = set(constants)  # values computed from weights and constants only
    marks: set[str] = set()  # the markers' outputs
    for node in graph.node:
        if node.domain == DOMAIN and node.op_type == "Mark":
            marks.update(node.output)
            module = next(a.i for a in node.attribute if a.name == "module")
            for i in span:
                scopes[i] = paths[module] if module != ROOT else ""
            span = []
            continue
        kept.append(node)
        if all(name in constant for name in node.input):
            constant.update(node.output)
            scopes.append(None)  # a constant belongs to its consumers: tagging projects it
        else:
            span.append(len(scopes))
            scopes.append("")
    del graph.node[:]
    graph.node.extend(kept)
    for values in (graph.output, graph.value_info):
        kept_values = [v for v in values if v.name not in marks]
        del values[:]
        values.extend(kept_values)
    return scopes


@register
class UsageStrategy(Strategy):
    name = "usage"
    description = "forward hooks mark the ops traced in each module call; scopes from the markers"

    def capture(self, model, inputs, opset, positional, hierarchy=None):
        wrapper = MarkingWrapper(model, inputs.names, positional=positional).eval()
        paths, handles = install_markers(model, wrapper, hierarchy)
        try:
            proto, weights = torchscript_export(wrapper, inputs, opset, custom_opsets={DOMAIN: 1})
        finally:
            for handle in handles:
                handle.remove()
        constants = {i.name for i in proto.graph.initializer} | set(weights.names)
        scopes = scopes_from_markers(proto.graph, paths, constants)
        kept = [o for o in proto.opset_import if o.domain != DOMAIN]
        del proto.opset_import[:]
        proto.opset_import.extend(kept)
        return Capture(proto, scopes, exporter=f"torch.onnx {torch.__version__} (TorchScript, hook markers)",
                       weights=weights)
