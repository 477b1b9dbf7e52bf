"""``dynamo`` — torch.export captures the model; the ONNX exporter records each node's module stack.

``torch.onnx.export(..., dynamo=True)`` writes, on every node it translates, ``pkg.torch.onnx.name_scopes``: the
attribute paths of the modules on the call stack, outermost first, ending with the FX node name
(``['', 'model', 'model.encoder', ..., 'linear_1']``). The deepest module path is the scope we want. Nodes its
optimizer creates carry no metadata (None here; tagging projects them). Slower than ``htp`` (~2 s fixed cost) but
follows Python control flow that tracing would freeze, as long as torch.export can capture it.
"""

from __future__ import annotations

import ast

import torch

from ..direct_calls import scope_direct_calls
from ..lowerings import dynamo_translations
from ..wrapping import WRAPPED_ATTRIBUTE, KeywordWrapper
from .base import Capture, Strategy, name_outputs, quiet_exporter, register, root_reason

NAME_SCOPES = "pkg.torch.onnx.name_scopes"


def scope_from_name_scopes(value: str | None) -> str | None:
    """Attribute path from a ``name_scopes`` value; None when absent or outside the wrapped model."""
    if not value:
        return None
    try:
        scopes = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return None
    # The last item is the FX node name; the others name the modules from the root down, each by its full path or,
    # for a module entered through another's instance `forward` (direct_calls), by its path from the one above.
    deepest = ""
    for scope in (s for s in scopes[:-1] if isinstance(s, str) and s):
        deepest = scope if not deepest or scope.startswith(deepest + ".") else f"{deepest}.{scope}"
    if not deepest:
        return None
    if deepest == WRAPPED_ATTRIBUTE:
        return ""
    if deepest.startswith(WRAPPED_ATTRIBUTE + "."):
        return deepest[len(WRAPPED_ATTRIBUTE) + 1 :]
    return None  # ops of our wrapper, or symbolic-size nodes torch.export gives no module stack


def dynamic_shapes(inputs) -> tuple | None:
    """The ``dynamic_shapes`` torch.export wants for the wrapper's ``*args``: one Dim per axis name, shared."""
    if not any(inputs.dynamic_axes.get(n) for n in inputs.names):
        return None
    dims: dict[str, torch.export.Dim] = {}
    per_input = tuple(
        {axis: dims.setdefault(name, _dim(name)) for axis, name in inputs.dynamic_axes.get(n, {}).items()} or None
        for n in inputs.names
    )
    return (per_input,)


def _dim(name: str):
    """A named Dim; an axis named for a sum (a with-past attention mask's ``past_sequence+sequence``) is no
    identifier and no Dim of its own: torch.export works out that it is the sum (``Dim.DYNAMIC``)."""
    return torch.export.Dim(name) if name.isidentifier() else torch.export.Dim.DYNAMIC


def _fixed_axes(proto, inputs) -> list[str]:
    """The declared dynamic axes that torch.export specialized (it does so, silently, where the model's Python
    branches on a size), as ``name=size``: a file that claims fewer dynamic axes than asked for."""
    fixed = {}
    for value in proto.graph.input:
        dims = value.type.tensor_type.shape.dim
        for axis, name in inputs.dynamic_axes.get(value.name, {}).items():
            if axis < len(dims) and dims[axis].HasField("dim_value"):
                fixed.setdefault(name, f"{name}={dims[axis].dim_value}")
    return list(fixed.values())


def _axis_names(inputs):
    return [name for axes in inputs.dynamic_axes.values() for name in axes.values()]


@register
class DynamoStrategy(Strategy):
    name = "dynamo"
    description = "torch.export + the dynamo ONNX exporter; scopes from its per-node name_scopes metadata"

    def capture(self, model, inputs, opset, positional, hierarchy=None, stream_weights=False):
        if stream_weights:
            raise RuntimeError("dynamo cannot stream the weights (its proto holds them all): use htp, usage or fx")
        # Outputs by name: torch.export's trace keeps no Python side effects (the wrapper's `output_names`), but
        # its output spec keeps a dict's keys.
        wrapper = KeywordWrapper(model, inputs.names, positional=positional, as_dict=True).eval()
        args = tuple(inputs.tensors.values())
        shapes = dynamic_shapes(inputs)
        try:
            with scope_direct_calls(model) as calls:
                program = self._export(wrapper, args, inputs.names, opset, shapes)
        except Exception as exc:
            if shapes is None:
                raise
            raise RuntimeError(
                f"export with dynamic axes {sorted(set(_axis_names(inputs)))} failed: {root_reason(exc)}"
            ) from None
        proto = program.model_proto
        fixed = _fixed_axes(proto, inputs)
        if fixed:
            raise RuntimeError(
                f"torch.export fixed the dynamic axes {', '.join(fixed)}: the model's code branches on their sizes"
            )
        name_outputs(proto.graph, list(program.exported_program.call_spec.out_spec.context))
        scopes = [
            scope_from_name_scopes(next((p.value for p in node.metadata_props if p.key == NAME_SCOPES), None))
            for node in proto.graph.node
        ]
        return Capture(proto, scopes, exporter=f"torch.onnx {torch.__version__} (dynamo)", ran=calls.ran_paths())

    @staticmethod
    def _export(wrapper, args, input_names, opset, shapes):
        with quiet_exporter(), torch.no_grad():
            return torch.onnx.export(
                wrapper,
                args,
                input_names=input_names,
                dynamic_shapes=shapes,
                custom_translation_table=dynamo_translations(),
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
                report=False,
            )
