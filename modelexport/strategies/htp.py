"""``htp`` — hierarchy trace & project: TorchScript tracing records the module scope of every op.

The TorchScript exporter names each ONNX node after the scope it was traced in
(``/model/encoder/layer.0/attention/self/query/MatMul``): the attribute path of the module whose ``forward``
ran it. We read that path back, and project it onto the few nodes the exporter leaves unscoped. Fast (no
torch.export), exact where the tracer saw the op; fails on data-dependent control flow, which tracing freezes.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import onnx
import torch

from ..wrapping import WRAPPED_ATTRIBUTE, KeywordWrapper
from .base import Capture, Strategy, quiet_exporter, register


def scope_of(node_name: str, module_paths: set[str] | None = None) -> str | None:
    """Attribute path in a TorchScript node name (``/model/a/b.0/Op_3`` -> ``a.b.0``); None if unscoped.

    The exporter writes each scope relative to an enclosing one, not always its parent: the children of a called
    ``Sequential`` appear as ``layer/layer.0`` for ``layer.0``, and a module's later calls as ``name_1``. Given the model's `module_paths`, each segment is
    joined to the deepest resolved path (or, failing that, one of its ancestors) that makes a real module path.
    """
    if not node_name.startswith("/"):
        return None
    parts = node_name.split("/")[1:-1]
    if not parts or parts[0] != WRAPPED_ATTRIBUTE:
        return None  # ops of our wrapper, not of the model
    if module_paths is None:
        return ".".join(parts[1:])
    path = ""
    for segment in parts[1:]:
        base = path
        while True:
            candidate = f"{base}.{segment}" if base else segment
            if candidate in module_paths:
                path = candidate
                break
            repeated = re.sub(r"_\d+$", "", candidate)  # a module's second call: ``layer.0_1``
            if repeated in module_paths:
                path = repeated
                break
            if not base:
                return path  # not a module scope (should not happen): keep what resolved
            base = base.rsplit(".", 1)[0] if "." in base else ""
    return path


@register
class HTPStrategy(Strategy):
    name = "htp"
    description = "TorchScript tracing; node scopes read from the tracer, projected onto unscoped nodes"

    def capture(self, model, inputs, output_names, opset, positional):
        wrapper = KeywordWrapper(model, inputs.names, positional=positional).eval()
        with tempfile.TemporaryDirectory(prefix="modelexport-htp-") as tmp:
            path = Path(tmp) / "model.onnx"
            with quiet_exporter(), torch.no_grad():
                torch.onnx.export(
                    wrapper,
                    tuple(inputs.tensors.values()),
                    str(path),
                    input_names=inputs.names,
                    output_names=output_names,
                    dynamic_axes={**inputs.dynamic_axes} or None,
                    opset_version=opset,
                    do_constant_folding=True,
                    dynamo=False,
                )
            proto = onnx.load(str(path))
        paths = {path for path, _ in model.named_modules(remove_duplicate=False)}
        scopes = [scope_of(node.name, paths) for node in proto.graph.node]
        return Capture(proto, scopes, exporter=f"torch.onnx {torch.__version__} (TorchScript)")
