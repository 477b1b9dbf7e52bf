"""``--strategy auto``'s check of each candidate file before it is accepted: does ONNX Runtime load it, and does it
compute what PyTorch computes at the export shape and at a second shape?

A strategy can write a graph that exports cleanly and still is wrong: a broadcast ONNX Runtime refuses, a shape
inference error at load, a size traced into the graph that breaks at any other shape. `auto` would hand that
file over while a later strategy writes a correct one, so each candidate goes through the same comparison as
``modelexport validate`` (``case_check.check_case``), kept cheap: one seed, the export shape and one resized
shape, in a temporary folder. An explicit ``--strategy`` is not checked (``validate`` is the full check), nor is
a capture whose weights are streamed (``streamed_weights``): ONNX Runtime would load a second copy of them beside
the model's, the very thing streaming avoids; nor a bfloat16 one (ONNX Runtime's CPU provider has almost no
bfloat16 kernels; ``validate`` says so).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .case_check import check_case
from .errors import ExportFailedError, ModelExportError
from .inputs import InputSpec
from .onnx_io import save_atomic
from .validate import ValidationReport, ort_session, resized_spec

SEED = 0


class CandidateRejected(ExportFailedError):
    """A strategy's file exported but does not load or does not match PyTorch: `auto` tries the next one."""


def check_candidate(capture, loaded, spec: InputSpec, atol: float | None = None, rtol: float | None = None):
    """Raise CandidateRejected saying why `capture` (a strategy's Capture) is not a file to hand over (tolerances:
    the defaults of the model's dtype)."""
    import torch

    from .dtypes import model_dtype, tolerances
    from .streamed_weights import StreamedWeights

    dtype = model_dtype(loaded.model)
    if isinstance(capture.weights, StreamedWeights) or dtype == "bfloat16":  # ORT's CPU provider lacks bfloat16
        return
    atol, rtol = tolerances(dtype, atol, rtol)
    with tempfile.TemporaryDirectory(prefix="modelexport-check-") as tmp:
        path = Path(tmp) / "candidate.onnx"
        save_atomic(capture.onnx_model, path, capture.weights)
        try:
            session = ort_session(path, log_level=4)
        except ModelExportError as exc:
            raise CandidateRejected(str(exc).replace(f" {path}", " its file")) from None
        report = ValidationReport(str(path), type(loaded.model).__name__, atol, rtol, [SEED])
        cases = [("export", spec)]
        resized = resized_spec(spec)
        if resized is not None:
            cases.append(("resized", resized))
        torch.manual_seed(0)
        for case, case_spec in cases:
            try:
                report.checks.extend(check_case(session, loaded, case_spec, SEED, case, atol, rtol))
            except ModelExportError as exc:  # e.g. the file takes an input the model's inputs do not have
                raise CandidateRejected(f"ONNX check: {exc}") from None
            except Exception as exc:  # noqa: BLE001  the PyTorch model itself fails at the resized shape
                from .errors import one_line

                raise CandidateRejected(f"PyTorch fails at the {case} shape: {one_line(exc)}") from None
    if not report.passed:
        raise CandidateRejected(f"{_frozen_hint(report)}ONNX check failed: {report.summary()}")


EXPORT_SHAPE_ONLY = "right at the export shape only"
FROZEN_ADVICE = (
    "a file right at the export shape only has a size or a data-dependent loop frozen into it at capture (sizes "
    "read as Python numbers, as_strided strides, a loop over nonzero() such as per-expert token lists): export and "
    "validate at the shape you will run (an --input-spec without dynamic_axes, to both), or make that code tensor ops"
)


def _frozen_hint(report: ValidationReport) -> str:
    """The likely cause when the export shape matches and the resized one does not; empty otherwise."""
    failed = {c.case for c in report.checks if not c.passed}
    return f"{EXPORT_SHAPE_ONLY}; " if failed == {"resized"} else ""
