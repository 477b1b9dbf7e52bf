"""``usage`` — module scopes from forward hooks only; never reads the exporter's scope names.

While the TorchScript exporter traces the model, a forward pre-hook on every module passes the module's tensor
inputs through a marker op (``modelexport::Mark``, kind 0) and a forward hook its tensor outputs (kind 1). The
markers land in the ONNX graph in trace order, so a stack walk over the nodes says which module call each op ran
in: an enter marker pushes the module (after popping calls that are not its ancestors), an exit marker pops it.
The markers are then removed (consumers rewired to the marked tensor) and every node keeps the scope on top of
the stack when it was emitted; nodes computed from weights and constants only are left to tagging, which gives
them their consumers' module.

Where it is less exact than ``htp``/``dynamo``: a module whose tensors reach it other than as ``forward``
arguments (e.g. attributes) gets no enter marker and its ops go to its parent until its first child runs; a
module whose outputs are unused loses its exit marker (the next sibling's enter closes it); constants the
exporter hoists or folds are placed by the stack at their new position. Markers also stop constant folding across
module boundaries, so a few shape computations stay in the graph that ``htp`` folds away.
"""

from __future__ import annotations

import onnx
import torch
from torch.utils import _pytree as pytree

from ..wrapping import KeywordWrapper
from .base import Capture, Strategy, name_outputs, register, torchscript_export

DOMAIN = "modelexport"
ENTER, EXIT = 0, 1


class Mark(torch.autograd.Function):
    """Identity in eager mode; exported as ``modelexport::Mark(module=i, kind=k)``."""

    @staticmethod
    def forward(ctx, x, module: int, kind: int):
        return x.view_as(x) if x.dim() else x.clone()

    @staticmethod
    def symbolic(g, x, module: int, kind: int):
        out = g.op(f"{DOMAIN}::Mark", x, module_i=module, kind_i=kind)
        out.setType(x.type())
        return out


def install_markers(model: torch.nn.Module) -> tuple[list[str], list]:
    """Hook every submodule of `model`; returns the attribute paths (marker ids index them) and the handles."""
    paths: list[str] = []
    handles = []
    for path, module in model.named_modules():
        if not path:
            continue  # the root's ops are what remains outside every marker pair
        index = len(paths)
        paths.append(path)

        def mark(value, index=index, kind=ENTER):
            return pytree.tree_map_only(torch.Tensor, lambda t: Mark.apply(t, index, kind), value)

        handles.append(module.register_forward_pre_hook(
            lambda _m, args, kwargs, mark=mark: (mark(args), mark(kwargs)), with_kwargs=True))
        handles.append(module.register_forward_hook(lambda _m, _a, out, mark=mark: mark(out, kind=EXIT)))
    return paths, handles


def scopes_from_markers(graph: onnx.GraphProto, paths: list[str], constants: set[str]) -> list[str | None]:
    """Walk the nodes in order with a call stack; remove the markers; one scope per remaining node.
    `constants` names the initializers."""
    stack: list[str] = []
    scopes: list[str | None] = []
    kept: list[onnx.NodeProto] = []
    alias: dict[str, str] = {}  # marker output -> marked tensor
    constant = set(constants)  # values computed from weights and constants only

    def original(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

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
            alias[node.output[0]] = node.input[0]
            continue
        for i, name in enumerate(node.input):
            node.input[i] = original(name)
        kept.append(node)
        if all(name in constant for name in node.input):
            constant.update(node.output)
            scopes.append(None)  # a constant belongs to its consumers: tagging projects it
        else:
            scopes.append(stack[-1] if stack else "")
    del graph.node[:]
    graph.node.extend(kept)
    # Graph outputs that were marker outputs: back onto the marked tensors, under the model's output names.
    names = [output.name for output in graph.output]
    for output in graph.output:
        output.name = original(output.name)
    name_outputs(graph, names)
    scopes += [None] * (len(graph.node) - len(scopes))  # Identity copies: tagging gives them their input's module
    return scopes


@register
class UsageStrategy(Strategy):
    name = "usage"
    description = "forward hooks mark each module's inputs and outputs; scopes from a stack walk over the markers"

    def capture(self, model, inputs, opset, positional):
        wrapper = KeywordWrapper(model, inputs.names, positional=positional).eval()
        paths, handles = install_markers(model)
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
