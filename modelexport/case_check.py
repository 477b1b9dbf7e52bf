"""One case of a validation: PyTorch's outputs on a set of inputs, then ONNX Runtime's, compared output by output.

The two halves are apart (``reference_case``, ``compare_case``) so `validate` can compute PyTorch's outputs for
every case, free the model, and only then load the file in ONNX Runtime: never both copies of the weights at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import seq2seq
from .errors import BadInputError, first_line

if TYPE_CHECKING:  # inputs imports torch
    from .inputs import InputSpec


@dataclass
class OutputCheck:
    """One output of one run: how far ORT is from PyTorch, or why it could not be compared."""

    seed: int
    case: str  # "export" or "resized"
    shapes: dict[str, list[int]]  # input shapes of this case
    output: str
    passed: bool
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    torch_shape: list[int] | None = None
    onnx_shape: list[int] | None = None
    error: str | None = None  # missing output, shape mismatch, ORT failure

    @property
    def excess(self) -> float:
        """How badly this check failed, to pick the worst one: errors first, then by relative miss."""
        if self.error is not None:
            return math.inf
        return self.max_abs_diff if self.max_abs_diff is not None else 0.0


def difference(expected: np.ndarray, actual: np.ndarray, atol: float, rtol: float) -> tuple[float, float, bool]:
    """max |a-b|, max |a-b|/|b| and whether every element is within atol + rtol*|b| (NaNs must coincide).
    Computed in float64 a block at a time: a large model's logits would take several float64 copies at once."""
    expected, actual = expected.reshape(-1), actual.reshape(-1)
    if expected.dtype.kind in "biu" and actual.dtype.kind in "biu":
        diff = np.abs(expected.astype(np.int64) - actual.astype(np.int64)).astype(np.float64)
        top = float(diff.max(initial=0.0))
        return top, top, top == 0.0
    top = top_rel = 0.0
    ok = True
    for start in range(0, max(expected.size, 1), DIFFERENCE_BLOCK):
        want = expected[start : start + DIFFERENCE_BLOCK].astype(np.float64)
        got = actual[start : start + DIFFERENCE_BLOCK].astype(np.float64)
        both_nan = np.isnan(want) & np.isnan(got)
        diff = np.where(both_nan, 0.0, np.abs(want - got))
        diff = np.where(np.isnan(diff), np.inf, diff)
        rel = diff / np.maximum(np.abs(want), np.finfo(np.float32).tiny)
        ok = ok and bool(np.all(diff <= atol + rtol * np.abs(np.nan_to_num(want))))
        top = max(top, float(diff.max(initial=0.0)))
        top_rel = max(top_rel, float(np.nan_to_num(rel, nan=np.inf).max(initial=0.0)))
    return top, top_rel, ok


DIFFERENCE_BLOCK = 2**20


def case_inputs(spec: InputSpec, seed: int, adjust=None):
    """The example inputs of one case, drawn from `spec` with `seed`, then adjusted (``exercise``); and the
    positions whose outputs are compared ([batch, sequence] booleans; None: all)."""
    from .inputs import inputs_from_spec

    inputs = inputs_from_spec(spec, seed=seed)
    return inputs, adjust(inputs.tensors) if adjust is not None else None


@dataclass
class ReferenceCase:
    """One case's inputs and what PyTorch computes on them: all validation needs of the model, so the model can be
    freed before ONNX Runtime loads the file."""

    case: str
    seed: int
    inputs: object  # ExampleInputs
    compared: object  # [batch, sequence] booleans of the positions compared; None: all
    expected: dict


def reference_case(loaded, spec: InputSpec, seed: int, case: str, adjust=None, optional=False) -> ReferenceCase | None:
    """PyTorch's outputs on one case's inputs. An `optional` case the PyTorch model itself cannot run (a longest
    sequence past what its positions really allow) is None: left out, not failed."""
    from .dtypes import cast_inputs
    from .wrapping import call_model

    inputs, compared = case_inputs(spec, seed, adjust)
    inputs = cast_inputs(inputs, loaded.model)  # a float16 model's float inputs are float16
    try:
        expected = dict(call_model(loaded.model, inputs.tensors, positional=loaded.positional))
    except Exception:
        if optional:
            return None
        raise
    expected = {name: value.detach() for name, value in expected.items()}  # no autograd graph keeps the weights
    return ReferenceCase(case, seed, inputs, compared, expected)


def check_case(
    session, loaded, spec: InputSpec, seed: int, case: str, atol: float, rtol: float, adjust=None, optional=False
) -> list[OutputCheck]:
    """Run both on one set of inputs and compare every output (`optional`: see `reference_case`)."""
    reference = reference_case(loaded, spec, seed, case, adjust, optional)
    return [] if reference is None else compare_case(session, reference, atol, rtol)


def compare_case(session, reference: ReferenceCase, atol: float, rtol: float) -> list[OutputCheck]:
    """Run ONNX Runtime on a reference case's inputs and compare every output with PyTorch's."""
    inputs, compared, expected = reference.inputs, reference.compared, reference.expected
    seed, case = reference.seed, reference.case
    shapes = {name: list(t.shape) for name, t in inputs.tensors.items()}
    onnx_inputs = [i.name for i in session.get_inputs()]
    unread = seq2seq.unread_inputs(session, inputs.tensors)  # declared for decode loops, never read
    unknown = [n for n in onnx_inputs if n not in inputs.tensors and n not in unread]
    if unknown:
        raise BadInputError(
            f"the ONNX file takes input '{unknown[0]}' that the model's inputs do not have: "
            "pass a matching --input-spec FILE"
        )
    onnx_outputs = [o.name for o in session.get_outputs()]
    feeds = {n: _numpy(inputs.tensors[n]) for n in onnx_inputs if n not in unread} | unread
    try:
        actual = dict(zip(onnx_outputs, session.run(None, feeds)))
    except Exception as exc:  # ORT refusing these shapes is the failure we are looking for
        reason = first_line(exc)
        return [OutputCheck(seed, case, shapes, "(all outputs)", False, error=f"ONNX Runtime failed: {reason}")]
    checks = []
    for name in dict.fromkeys([*expected, *onnx_outputs]):
        if name not in actual:
            checks.append(OutputCheck(seed, case, shapes, name, False, error="missing from the ONNX outputs"))
            continue
        if name not in expected:
            checks.append(
                OutputCheck(
                    seed,
                    case,
                    shapes,
                    name,
                    False,
                    onnx_shape=list(actual[name].shape),
                    error="the PyTorch model does not return it",
                )
            )
            continue
        want = expected[name].detach().float().numpy() if expected[name].is_floating_point() else expected[name].numpy()
        got = _float32(np.asarray(actual[name]))
        check = OutputCheck(seed, case, shapes, name, False, torch_shape=list(want.shape), onnx_shape=list(got.shape))
        if want.shape != got.shape:
            check.error = f"shape {list(got.shape)} instead of PyTorch's {list(want.shape)}"
        else:
            if compared is not None and want.shape[:2] == compared.shape:  # padding's own outputs are undefined
                want, got = want[compared], got[compared]
            check.max_abs_diff, check.max_rel_diff, check.passed = difference(want, got, atol, rtol)
        checks.append(check)
    return checks


def _numpy(tensor) -> np.ndarray:
    """A feed for ONNX Runtime; bfloat16, which numpy lacks, as ORT's bfloat16 (its bits in uint16)."""
    import torch

    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.uint16).numpy()
    return tensor.numpy()


def _float32(array: np.ndarray) -> np.ndarray:
    """An ORT output to compare: half types as float32 (ORT returns bfloat16 as its uint16 bits)."""
    if array.dtype == np.uint16:  # only bfloat16 comes back this way: no ONNX output of ours is uint16
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(np.float32) if array.dtype == np.float16 else array
