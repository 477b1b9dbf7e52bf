"""ONNX lowerings for the ops torch's exporters lack, used by mixture-of-experts decoders.

transformers' experts (``integrations/moe.py``, the default ``grouped_mm`` implementation) sort the token-expert
pairs by expert, count them with ``torch.histc`` and multiply each expert's rows with a grouped matmul
(``torch._grouped_mm`` with offsets; under torch.export its own ``transformers::grouped_mm_fallback`` op).
TorchScript has no symbolic for ``histc`` or ``_grouped_mm``; torchlib's ``_grouped_mm`` refuses offsets and knows
nothing of transformers' op. Both lower to ops that exist: a histogram is a OneHot summed over its rows, and a
grouped matmul unrolls over the (static) number of experts, one MatMul on each expert's rows (a Range between two
offsets), concatenated. The rows are taken from the offsets at run time, so the file is right for any token count.

The TorchScript symbolics are registered only for the export's duration (`torchscript_lowerings`): torch's
registry is global, and a user's own registration for the same op is left alone. The dynamo translations are
passed to each export (`dynamo_translations`), so nothing is registered.
"""

from __future__ import annotations

import contextlib
import functools

import torch

MIN_OPSET = 11  # Range; the TorchScript lowerings are registered from here up
INT64 = 7  # onnx.TensorProto.INT64


# --- TorchScript (htp, usage, fx) ---


def _constant(g, value, like=None, dtype=None):
    from torch.onnx._internal.torchscript_exporter import _type_utils

    if like is not None:
        dtype = _type_utils.JitScalarType.from_value(like).dtype()
    return g.op("Constant", value_t=torch.tensor(value, dtype=dtype))


def _histc_symbolic(g, values, bins, low, high):
    """``histc(x, bins, min, max)`` with min < max: each value's bin, as torch's CPU kernel computes it
    (``(x - min) * bins / (max - min)``, the top edge in the last bin), one-hot and summed; values outside
    [min, max] (and NaN) fall outside the depth and count nowhere."""
    from torch.onnx._internal.torchscript_exporter import symbolic_helper
    from torch.onnx.errors import SymbolicValueError

    bins = symbolic_helper._get_const(bins, "i", "bins")
    low = symbolic_helper._get_const(low, "f", "min")
    high = symbolic_helper._get_const(high, "f", "max")
    if not low < high:
        raise SymbolicValueError(
            f"histc with min={low}, max={high} takes its range from the data, which has no ONNX lowering: "
            "pass min < max",
            values,
        )
    flat = g.op("Reshape", values, _constant(g, [-1], dtype=torch.int64))
    scaled = g.op(
        "Div",
        g.op("Mul", g.op("Sub", flat, _constant(g, low, like=values)), _constant(g, bins, like=values)),
        _constant(g, high - low, like=values),
    )
    index = g.op("Cast", g.op("Floor", scaled), to_i=INT64)
    index = g.op("Min", index, _constant(g, bins - 1, dtype=torch.int64))
    inside = g.op(
        "And",
        g.op("Not", g.op("Less", flat, _constant(g, low, like=values))),
        g.op("Not", g.op("Greater", flat, _constant(g, high, like=values))),
    )
    index = g.op("Where", inside, index, _constant(g, bins, dtype=torch.int64))  # past the depth: all zeros
    depth = _constant(g, bins, dtype=torch.int64)
    one_hot = g.op("OneHot", index, depth, _constant(g, [0, 1], like=values), axis_i=-1)
    return symbolic_helper._reducesum_helper(g, one_hot, axes_i=[0], keepdims_i=0)


def _grouped_mm_symbolic(g, rows, weights, offsets, bias=None, out_dtype=None):
    """``_grouped_mm(a (M, K), b (G, K, N), offs (G,))``: rows offs[i-1]:offs[i] of `a` times ``b[i]``."""
    from torch.onnx._internal.torchscript_exporter import symbolic_helper
    from torch.onnx.errors import SymbolicValueError

    sizes = symbolic_helper._get_tensor_sizes(weights)
    if symbolic_helper._is_none(offsets) or not sizes or len(sizes) != 3 or not isinstance(sizes[0], int):
        raise SymbolicValueError("grouped matmul is lowered only with offsets and (G, K, N) weights", rows)
    if not symbolic_helper._is_none(bias) or not symbolic_helper._is_none(out_dtype):
        raise SymbolicValueError("grouped matmul with a bias or out_dtype has no ONNX lowering", rows)
    ends = g.op("Cast", offsets, to_i=INT64)
    start, step, parts = _constant(g, 0, dtype=torch.int64), _constant(g, 1, dtype=torch.int64), []
    for group in range(sizes[0]):
        at = _constant(g, group, dtype=torch.int64)
        end = g.op("Gather", ends, at, axis_i=0)
        taken = g.op("Gather", rows, g.op("Range", start, end, step), axis_i=0)
        parts.append(g.op("MatMul", taken, g.op("Gather", weights, at, axis_i=0)))
        start = end
    return g.op("Concat", *parts, axis_i=0)


def _permute_symbolic(g, values, dims):
    """torch's own writes ``permute(0, -2, -1, 1)``'s negative dims into Transpose's perm, which ONNX refuses
    (a Mamba mixer's ``permute``); the dims count the rank, so they are taken modulo their number."""
    from torch.onnx._internal.torchscript_exporter import symbolic_helper

    dims = symbolic_helper._get_const(dims, "is", "dims")
    dims = [d % len(dims) for d in dims]
    if dims == list(range(len(dims))):
        return values
    return g.op("Transpose", values, perm_i=dims)


# ops torch has no symbolic for
TORCHSCRIPT_SYMBOLICS = {"aten::histc": _histc_symbolic, "aten::_grouped_mm": _grouped_mm_symbolic}
# torch's symbolics that write invalid ONNX, replaced
TORCHSCRIPT_FIXES = {"aten::permute": _permute_symbolic}


def _overridden(name: str, opset: int) -> bool:
    """Whether someone registered a custom symbolic for `name` (torch keeps it apart from its own)."""
    from torch.onnx._internal.torchscript_exporter import registration

    group = registration.registry.get_function_group(name)
    return group is not None and group._functions.overridden(opset)


@contextlib.contextmanager
def torchscript_lowerings(opset: int):
    """Register our symbolics at `opset` for the block, where none is registered (for a fix: where no one else
    registered one), and remove them after."""
    from torch.onnx._internal.torchscript_exporter import registration

    added = []
    if opset >= MIN_OPSET:
        for name, symbolic in TORCHSCRIPT_SYMBOLICS.items():
            if not registration.registry.is_registered_op(name, opset):
                torch.onnx.register_custom_op_symbolic(name, symbolic, opset)
                added.append(name)
        for name, symbolic in TORCHSCRIPT_FIXES.items():
            if not _overridden(name, opset):
                torch.onnx.register_custom_op_symbolic(name, symbolic, opset)
                added.append(name)
    try:
        yield
    finally:
        for name in added:
            torch.onnx.unregister_custom_op_symbolic(name, opset)


# --- dynamo ---


def _grouped_mm_function(rows, weights, offsets, bias=None, out_dtype=None):
    """The dynamo translation of a grouped matmul with offsets; as `_grouped_mm_symbolic`."""
    from onnxscript import opset18 as op

    groups = weights.shape[0]
    if offsets is None or bias is not None or out_dtype not in (None, -1) or not isinstance(groups, int):
        raise NotImplementedError("grouped matmul is lowered only with offsets and a static number of groups")
    ends = op.Cast(offsets, to=INT64)
    start, parts = op.Constant(value_int=0), []
    for group in range(groups):
        end = op.Gather(ends, op.Constant(value_int=group), axis=0)
        taken = op.Gather(rows, op.Range(start, end, op.Constant(value_int=1)), axis=0)
        parts.append(op.MatMul(taken, op.Gather(weights, op.Constant(value_int=group), axis=0)))
        start = end
    return op.Concat(*parts, axis=0)


@functools.cache
def dynamo_translations() -> dict:
    """``custom_translation_table`` for torch.onnx.export(dynamo=True): our functions for the ops torchlib lacks."""
    table = {torch.ops.aten._grouped_mm.default: _grouped_mm_function}
    try:
        import transformers.integrations.moe  # noqa: F401  registers transformers::grouped_mm_fallback
    except ImportError:
        return table
    fallback = getattr(getattr(torch.ops, "transformers", None), "grouped_mm_fallback", None)
    if fallback is not None:
        table[fallback.default] = _grouped_mm_function
    return table
