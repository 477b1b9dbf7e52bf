"""``htp`` — hierarchy trace & project: TorchScript tracing records the module scope of every op.

The TorchScript exporter names each ONNX node after the scope it was traced in
(``/model/encoder/layer.0/attention/self/query/MatMul``): the attribute path of the module whose ``forward``
ran it. We read that path back, and project it onto the few nodes the exporter leaves unscoped. Fast (no
torch.export), exact where the tracer saw the op; fails on data-dependent control flow, which tracing freezes.
"""

from __future__ import annotations

import re

import torch

from ..direct_calls import scope_direct_calls
from ..wrapping import WRAPPED_ATTRIBUTE, KeywordWrapper
from .base import Capture, Strategy, register, torchscript_export


def scope_of(node_name: str, module_paths: set[str]) -> str | None:
    """Attribute path in a TorchScript node name (``/model/a/b.0/Op_3`` -> ``a.b.0``); None if unscoped.

    Each level of the name is a module's path relative to an enclosing scope, usually its parent, but the
    children of a called ``Sequential`` are named relative to the Sequential's holder (``layer/layer.0``), so
    each level is resolved against the current scope first and then against its ancestors. A module called
    again is named with a call suffix (``attention_1``); all its calls belong to the one module.
    """
    if not node_name.startswith("/"):
        return None
    parts = node_name.split("/")[1:-1]
    if not parts or parts[0] != WRAPPED_ATTRIBUTE:
        return None  # ops of our wrapper, not of the model
    current = ""
    for level in parts[1:]:
        found = _descend(current, level, module_paths)
        if found is None and CALL_SUFFIX.search(level):
            found = _descend(current, CALL_SUFFIX.sub("", level), module_paths)
        if found is None:
            return current  # an unknown level: keep the deepest module found
        current = found
    return current


def scopes_from_names(model, proto) -> list[str | None]:
    """The module path of each top-level node, read from the scope in its TorchScript name."""
    paths = {name for name, _ in model.named_modules(remove_duplicate=False)}
    return [scope_of(node.name, paths) for node in proto.graph.node]


CALL_SUFFIX = re.compile(r"_\d+$")


def _descend(current: str, level: str, module_paths: set[str]) -> str | None:
    """The module path below `current` named `level` relative to `current` or to one of its ancestors."""
    base = current
    while True:
        candidate = f"{base}.{level}" if base else level
        if candidate in module_paths and candidate.startswith(current):
            return candidate
        if not base:
            break
        base = base.rsplit(".", 1)[0] if "." in base else ""
    # a module called without its parent's forward running (an encoder-decoder's part calls
    # ``model.encoder`` directly): the tracer names it relative to that parent; take it if only one matches
    below = [p for p in module_paths if p.endswith(f".{level}") and p.startswith(f"{current}." if current else "")]
    return below[0] if len(below) == 1 else None


@register
class HTPStrategy(Strategy):
    name = "htp"
    description = "TorchScript tracing; node scopes read from the tracer, projected onto unscoped nodes"

    def capture(self, model, inputs, opset, positional, hierarchy=None, stream_weights=False):
        wrapper = KeywordWrapper(model, inputs.names, positional=positional).eval()
        with scope_direct_calls(model) as calls:
            proto, weights = torchscript_export(wrapper, inputs, opset, stream_weights)
        exporter = f"torch.onnx {torch.__version__} (TorchScript)"
        return Capture(
            proto, scopes_from_names(model, proto), exporter=exporter, weights=weights, ran=calls.ran_paths()
        )
