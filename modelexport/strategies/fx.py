"""``fx`` — torch.fx symbolic tracing gives each op its module stack; the TorchScript exporter writes it out.

``torch.fx.symbolic_trace`` records, on every FX node, the stack of modules it was traced in
(``node.meta["nn_module_stack"]``). We run the traced graph with an FX interpreter under the TorchScript exporter
and push exactly those scopes around each node, so the exported node names carry the FX-derived module path,
read back as in ``htp``. Most Hugging Face models cannot be traced symbolically (data-dependent control flow,
item assignment on proxies): the strategy then fails at once with torch.fx's reason.
"""

from __future__ import annotations

import inspect

import torch

from ..direct_calls import scope_direct_calls
from ..errors import typed_line
from ..wrapping import WRAPPED_ATTRIBUTE, KeywordWrapper
from .base import Capture, Strategy, register, torchscript_export
from .htp import scopes_from_names


def trace(model: torch.nn.Module, input_names: list[str], positional: bool) -> torch.fx.GraphModule:
    """Symbolically trace `model`; keyword-called models get every parameter we do not feed as a constant."""
    concrete = None
    if not positional:
        params = inspect.signature(model.forward).parameters
        concrete = {
            name: p.default
            for name, p in params.items()
            if name not in input_names
            and p.default is not inspect.Parameter.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }
    try:
        return torch.fx.symbolic_trace(model, concrete_args=concrete)
    except Exception as exc:
        raise RuntimeError(f"torch.fx cannot trace {type(model).__name__}: {typed_line(exc)}") from None


class _ScopedInterpreter(torch.fx.Interpreter):
    """Runs the FX graph while the TorchScript tracer records, keeping the tracer's scopes equal to each node's
    FX module stack (consecutive nodes of one module share one scope, as a real call would)."""

    def __init__(self, graph_module, model):
        super().__init__(graph_module)
        self.model = model
        self.open: list[str] = []  # attribute paths whose scopes are pushed now

    def run(self, *args, **kwargs):
        try:
            return super().run(*args, **kwargs)
        finally:
            self._enter([])

    def run_node(self, node):
        stack = [path for path, _cls in (node.meta.get("nn_module_stack") or {}).values()]
        self._enter(stack[:-1] if node.op == "call_module" else stack)  # a called module pushes its own scope
        return super().run_node(node)

    def _enter(self, paths: list[str]) -> None:
        state = torch._C._get_tracing_state()
        names = torch.jit._trace._trace_module_map
        if not state or names is None:
            return
        keep = 0
        while keep < min(len(paths), len(self.open)) and paths[keep] == self.open[keep]:
            keep += 1
        while len(self.open) > keep:
            self.open.pop()
            state.pop_scope()
        for path in paths[keep:]:
            name = names.get(self.model.get_submodule(path))
            if not name:
                break
            state.push_scope(name)
            self.open.append(path)


class _FxRunner(KeywordWrapper):
    """Holds the model (so scopes and weight names are the usual ``model.*``) but runs its FX graph."""

    def __init__(self, model, graph_module, input_names, positional):
        super().__init__(model, input_names, positional)
        self.__dict__["graph_module"] = graph_module  # not a submodule: its modules are the model's own

    def forward(self, *args):
        model = getattr(self, WRAPPED_ATTRIBUTE)
        names = torch.jit._trace._trace_module_map or {}
        state = torch._C._get_tracing_state()
        scope = names.get(model) if state else None
        if scope:
            state.push_scope(scope)  # the model itself is never called, so push its scope by hand
        try:
            if self.positional:
                outputs = _ScopedInterpreter(self.graph_module, model).run(*args)
            else:
                placeholders = [n.target for n in self.graph_module.graph.nodes if n.op == "placeholder"]
                given = dict(zip(self.input_names, args))
                outputs = _ScopedInterpreter(self.graph_module, model).run(*(given.get(p) for p in placeholders))
        finally:
            if scope:
                state.pop_scope()
        return self.flat(outputs)


@register
class FxStrategy(Strategy):
    name = "fx"
    description = "torch.fx symbolic trace; scopes from FX node metadata (nn_module_stack); fails fast if untraceable"

    def capture(self, model, inputs, opset, positional, hierarchy=None, stream_weights=False):
        with scope_direct_calls(model) as calls:
            graph_module = trace(model, inputs.names, positional)
            runner = _FxRunner(model, graph_module, inputs.names, positional).eval()
            proto, weights = torchscript_export(runner, inputs, opset, stream_weights)
        exporter = f"torch.fx + torch.onnx {torch.__version__} (TorchScript)"
        return Capture(
            proto, scopes_from_names(model, proto), exporter=exporter, weights=weights, ran=calls.ran_paths()
        )
