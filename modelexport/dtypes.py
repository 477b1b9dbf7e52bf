"""The floating-point type a model is exported, validated and profiled in (``--dtype``), and its tolerances.

Half the bytes halves an export's memory and file; the price is precision, so validation compares against
PyTorch run in the same type with tolerances that type can meet (``TOLERANCES``, docs/checking.md).
"""

from __future__ import annotations

from .errors import BadInputError

DTYPES = ("float32", "float16", "bfloat16")
# (atol, rtol) by dtype: float32's are validate's defaults; half types keep ~3 decimal digits (float16) or ~2
# (bfloat16), and differences in accumulation order grow with depth.
TOLERANCES = {"float32": (1e-4, 1e-3), "float16": (2e-2, 2e-2), "bfloat16": (1e-1, 5e-2)}


def check_dtype(dtype: str | None) -> str | None:
    """`dtype` if it is one we export in (None: as the weights were saved), else a one-line error."""
    if dtype is not None and dtype not in DTYPES:
        raise BadInputError(f"unknown dtype '{dtype}': use one of {', '.join(DTYPES)}")
    return dtype


def unloadable(onnx_path, reason: str, dtype: str | None) -> BadInputError:
    """The one-line error for a file ONNX Runtime will not load: a half-precision one it lacks kernels for says so
    (its CPU provider has almost no bfloat16 kernels)."""
    if dtype not in (None, "float32") and ("Could not find an implementation" in reason or dtype in reason):
        fallback = "float16 or float32" if dtype == "bfloat16" else "float32"
        return BadInputError(
            f"ONNX Runtime's CPU provider cannot run {onnx_path} in {dtype} ({reason}): export it in {fallback}"
        )
    return BadInputError(f"ONNX Runtime cannot load {onnx_path}: {reason}")


def torch_dtype(dtype: str):
    import torch

    return getattr(torch, dtype)


def cast_model(model, dtype: str) -> None:
    """Cast the model's floating-point weights to `dtype` one tensor at a time, paging each source out
    (``memory.page_out``): the peak is the cast weights plus one tensor, not both types of all of them. Tied
    weights stay tied (``Module._apply`` replaces each parameter's data in place)."""
    from .memory import page_out

    target = torch_dtype(dtype)

    def cast(tensor):
        if not tensor.is_floating_point() or tensor.dtype == target:
            return tensor
        out = tensor.to(target)
        page_out(tensor)
        return out

    model._apply(cast)
    if dtype in ("float16", "bfloat16") and hasattr(model, "set_attn_implementation"):
        # torch.onnx's scaled_dot_product_attention upcasts a half attention to float32 and leaves its output so:
        # the output projection then runs in float32, on a float32 copy of its weight. Eager attention computes
        # its softmax in float32 and casts back, as transformers does in PyTorch.
        try:
            model.set_attn_implementation("eager")
        except (ValueError, ImportError):  # a model without an eager path keeps its own
            pass


def model_dtype(model) -> str | None:
    """The type of the model's floating-point weights (the first one's); None for a model without any."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return str(tensor.dtype).removeprefix("torch.")
    return None


def cast_inputs(inputs, model):
    """`inputs` (ExampleInputs) with floating-point tensors in the model's type: a float16 model takes float16
    pixels. Integer inputs (ids, masks) are left alone."""
    dtype = model_dtype(model)
    if dtype is None:
        return inputs
    target = torch_dtype(dtype)
    for name, tensor in inputs.tensors.items():
        if tensor.is_floating_point() and tensor.dtype != target:
            inputs.tensors[name] = tensor.to(target)
    return inputs


def tolerances(dtype: str | None, atol: float | None, rtol: float | None) -> tuple[float, float]:
    """The tolerances to validate with: the user's, else the defaults of the export's dtype."""
    default_atol, default_rtol = TOLERANCES.get(dtype or "float32", TOLERANCES["float32"])
    return (default_atol if atol is None else atol), (default_rtol if rtol is None else rtol)
