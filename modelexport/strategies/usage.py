"""``usage`` — module scopes from forward hooks only; never reads the exporter's scope names.

While the TorchScript exporter traces the model, a forward pre-hook and a forward hook on every module with a tag of
its own (built-in ``torch.nn`` leaves and containers share their parent's) each emit a marker (``modelexport::Mark``,
kind 0 on entry, 1 on exit). A marker takes no input and its output becomes an extra graph output, so it sits in the
graph in trace order without touching the data path: the exporter folds and fuses exactly as it does for ``htp`` (a
marker between a Conv and its BatchNorm would keep them apart). Each costs the tracer about a millisecond. A stack
walk over the nodes then says which module call each op ran in: an enter marker pushes the module (after popping
calls that are not its ancestors), an exit marker pops it. The markers and their outputs are removed, and every
node keeps the scope on top of the stack when it was emitted; nodes computed from weights and constants only are
left to tagging, which gives them their consumers' module.

Where it is less exact than ``htp``/``dynamo``: it trusts the trace order of the nodes, so constants the exporter
hoists or folds, and a graph-output Identity the export adds at the end, are placed by the stack at their new
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
ENTER, EXIT = 0, 1
MARK_OUTPUT = "modelexport_mark_"  # names of the markers' graph outputs, removed after the export


class Mark(torch.autograd.Function):
    """A scalar in eager mode; exported as ``modelexport::Mark(module=i, kind=k, call=c)`` with no input, so it
    is no consumer of any tensor of the model (``call`` keeps two markers of one module distinct)."""

    @staticmethod
    def forward(ctx, seed, module: int, kind: int, call: int):
        return seed.clone()

    @staticmethod
    def symbolic(g, seed, module: int, kind: int, call: int):
        out = g.op(f"{DOMAIN}::Mark", module_i=module, kind_i=kind, call_i=call)
        out.setType(seed.type())
        return out


class MarkingWrapper(KeywordWrapper):
    """The keyword wrapper, returning the markers of the call after the model's outputs."""

    marks: list[torch.Tensor]

    def forward(self, *args):
        self.marks = []
        outputs = super().forward(*args)
        self.output_names += [f"{MARK_OUTPUT}{i}" for i in range(len(self.marks))]
        return (*outputs, *self.marks)


def install_markers(model: torch.nn.Module, wrapper: MarkingWrapper,
                    hierarchy: Hierarchy | None = None) -> tuple[list[str], list]:
    """Hook the submodules of `model` that have a tag of their own in `hierarchy` (all of them without one) to add
    their markers to `wrapper`'s; returns the attribute paths (marker ids index them) and the hook handles.

    A built-in ``torch.nn`` leaf or a container shares its parent's tag, so its markers would say nothing, and
    each marker costs the tracer ~1 ms (ResNet-50: 76 of its 278 modules have a tag of their own)."""
    tagged = None if hierarchy is None else {info.module for info in hierarchy.modules.values()}
    paths: list[str] = []
    handles = []
    seed = torch.zeros(())
    calls = itertools.count()

    def mark(index: int, kind: int) -> None:
        wrapper.marks.append(Mark.apply(seed, index, kind, next(calls)))

    for path, module in model.named_modules():
        if not path or (tagged is not None and path not in tagged):
            continue  # the root's ops are what remains outside every marker pair
        index = len(paths)
        paths.append(path)
        handles.append(module.register_forward_pre_hook(lambda _m, _args, index=index: mark(index, ENTER)))
        handles.append(module.register_forward_hook(lambda _m, _args, _out, index=index: mark(index, EXIT)))
    return paths, handles


def scopes_from_markers(graph: onnx.GraphProto, paths: list[str], constants: set[str]) -> list[str | None]:
    """Walk the nodes in order with a call stack; remove the markers and their outputs; one scope per remaining
    node. `constants` names the initializers."""
    stack: list[str] = []
    scopes: list[str | None] = []
    kept: list[onnx.NodeProto] = []
    constant = set(constants)  # values computed from weights and constants only
    for node in graph.node:
        if node.domain == DOMAIN and node.op_type == "Mark":
            attrs = {a.name: a.i for a in node.attribute}
            path = paths[attrs["module"]]
            if attrs["kind"] == ENTER:
                while stack and not path.startswith(stack[-1] + ".") and stack[-1] != path:
                    stack.pop()
                if not stack or stack[-1] != path:
                    stack.append(path)
            elif path in stack:
                while stack.pop() != path:
                    pass
            continue
        kept.append(node)
        if all(name in constant for name in node.input):
            constant.update(node.output)
            scopes.append(None)  # a constant belongs to its consumers: tagging projects it
        else:
            scopes.append(stack[-1] if stack else "")
    del graph.node[:]
    graph.node.extend(kept)
    for values in (graph.output, graph.value_info):
        kept_values = [v for v in values if not v.name.startswith(MARK_OUTPUT)]
        del values[:]
        values.extend(kept_values)
    return scopes


@register
class UsageStrategy(Strategy):
    name = "usage"
    description = "forward hooks mark each module call's entry and exit; scopes from a stack walk over the markers"

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
