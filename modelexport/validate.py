"""Check that an exported ONNX file computes what the PyTorch model computes, as ONNX Runtime runs it.

Both run on the same random inputs for several seeds and at two shapes: the export-time shape and one where every
dynamic axis has another size (half, or one more when small), so a graph that froze a dynamic size fails here and
not in production. Every output is compared element-wise like ``numpy.allclose``: ``|ort - torch| <= atol +
rtol * |torch|``. :func:`validate` returns data (one record per seed, shape case and output); the caller decides
what a failure means (the CLI exits 1, see :func:`raise_for_failure`).

Defaults: ``atol=1e-4``, ``rtol=1e-3`` for float32; float32 exports of the tiny test models differ from PyTorch
by ~1e-6 (see tests/test_validate.py, which prints the figures); real models accumulate more over depth, which the
relative term absorbs. An export in another dtype (its sidecar says) is compared with PyTorch run in that dtype,
with that dtype's defaults (``dtypes.TOLERANCES``). Integer and boolean outputs must match exactly.

PyTorch's outputs for every case are computed first and the model freed before ONNX Runtime loads the file
(``case_check``), so the weights are held once at a time; a decode check (with-past) needs both.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import atomic, seq2seq
from .case_check import OutputCheck, case_inputs, compare_case, reference_case
from .errors import BadInputError, ValidationFailedError, first_line
from .memory import check_memory, peak_rss, release_freed

if TYPE_CHECKING:  # inputs imports torch: keep `modelexport validate --help` instant
    from .inputs import InputSpec

DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3
DEFAULT_SEEDS = (0, 1)


@dataclass
class ValidationReport:
    """Every check of one ONNX file against its PyTorch model, and the tolerances used."""

    onnx_path: str
    model: str
    atol: float
    rtol: float
    seeds: list[int]
    checks: list[OutputCheck] = field(default_factory=list)
    decode: object | None = None  # decode_check.DecodeReport of a with-past export
    localization: dict | None = None  # localize.Divergence of the worst failed check (or on request), as a dict
    peak_rss_mb: float | None = None  # the largest RSS while the checks ran
    skipped: dict[str, str] = field(default_factory=dict)  # exercising case -> why it was not run (`exercise`)

    @property
    def passed(self) -> bool:
        decoded = self.decode is None or self.decode.passed
        return bool(self.checks) and all(c.passed for c in self.checks) and decoded

    @property
    def worst(self) -> OutputCheck | None:
        """The failed check furthest off (or, if all passed, the largest difference)."""
        pool = [c for c in self.checks if not c.passed] or self.checks
        return max(pool, key=lambda c: c.excess, default=None)

    def summary(self) -> str:
        """One line: passed, or which output was how far off."""
        worst = self.worst
        if worst is None:
            return "no outputs were compared"
        if self.decode is not None and worst.passed:
            text = self.decode.summary()
            return text if not self.decode.passed else f"{self._checks_summary(worst)}; {text}"
        text = self._checks_summary(worst)
        if self.localization is not None:
            text += f"; {self.localization['summary']}"
        return text

    def _checks_summary(self, worst: OutputCheck) -> str:
        where = f"(seed {worst.seed}, inputs {_shapes_text(worst.shapes)})"
        if self.passed:
            return (
                f"{len(self.checks)} checks passed; largest difference {worst.max_abs_diff:.3g} on "
                f"{worst.output} {where}"
            )
        if worst.error is not None:
            what = worst.output if worst.output.startswith("(") else f"output {worst.output}"
            return f"{what} {where}: {worst.error}"
        return (
            f"output {worst.output} {where} is off by {worst.max_abs_diff:.3g} absolute, "
            f"{worst.max_rel_diff:.3g} relative (atol {self.atol:g}, rtol {self.rtol:g})"
        )

    def to_dict(self) -> dict:
        return {
            "onnx": self.onnx_path,
            "model": self.model,
            "passed": self.passed,
            "tolerances": {"atol": self.atol, "rtol": self.rtol},
            "seeds": self.seeds,
            "summary": self.summary(),
            "checks": [asdict(c) for c in self.checks],
            "decode": None if self.decode is None else self.decode.to_dict(),
            "localization": self.localization,
            "peak_rss_mb": self.peak_rss_mb,
            "skipped": self.skipped,
        }


def _shapes_text(shapes: dict[str, list[int]]) -> str:
    return ", ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in shapes.items())


def resized_spec(spec: InputSpec) -> InputSpec | None:
    """The same inputs with every dynamic axis at another size (consistent per axis name); None if none is dynamic."""
    from .inputs import parse_input_spec

    sizes: dict[str, int] = {}
    data = {}
    for name, ts in spec.root.items():
        shape = list(ts.shape)
        for axis, axis_name in ts.dynamic_axes.items():
            if axis_name not in sizes:
                sizes[axis_name] = shape[axis] // 2 if shape[axis] >= 4 else shape[axis] + 1
            shape[axis] = sizes[axis_name]
        data[name] = ts.model_dump() | {"shape": shape}
    return parse_input_spec(data) if sizes else None


def spec_for(onnx_path: str | os.PathLike, loaded, input_spec: InputSpec | None, task: str | None = None) -> InputSpec:
    """The inputs to validate with: the user's spec, else the model's config, else what the sidecar recorded."""
    from . import with_past
    from .export import read_sidecar
    from .inputs import resolve_spec

    if input_spec is None and with_past.is_with_past(task):
        return with_past.example_spec(loaded.model, loaded.config, task)
    recorded = (read_sidecar(onnx_path) or {}).get("inputs") if input_spec is None and loaded.config is None else None
    return resolve_spec(loaded.model, loaded.config, input_spec, recorded)


def load_reference(
    onnx_path: str | os.PathLike,
    model=None,
    task: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    max_memory_gb: float | None = None,
    dtype: str | None = None,
):
    """The PyTorch model to compare with: a LoadedModel, a model reference, or the one the sidecar recorded, in
    `dtype` (the export's)."""
    from .export import read_sidecar
    from .loading import LoadedModel, load
    from .source import ModelSource, resolve

    if isinstance(model, LoadedModel):
        return model, type(model.model).__name__
    if model is None:
        sidecar = read_sidecar(onnx_path) or {}
        recorded = sidecar.get("model")
        if not recorded:
            raise BadInputError(f"{onnx_path} has no sidecar recording its model: pass --model MODEL")
        source = ModelSource(**recorded)
        if source.kind != "factory" and not (source.path and Path(source.path, "config.json").is_file()):
            source = resolve(source.ref, revision=revision or source.revision)
        task = task or (sidecar.get("options") or {}).get("task")
    else:
        source = model if isinstance(model, ModelSource) else resolve(str(model), revision=revision)
    check_memory(source.path, "validate", max_memory_gb, dtype=dtype)
    return load(source, task=task, trust_remote_code=trust_remote_code, dtype=dtype), source.ref


def ort_session(onnx_path: str | os.PathLike, threads: int | None = None, log_level: int = 3, dtype: str | None = None):
    """A CPU ORT session, or a one-line error if ORT cannot load the file (`dtype`, the export's, names what the CPU
    provider lacks a kernel for). `log_level` 4 keeps ORT's own error log off stderr (a check that reports the
    failure itself)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = log_level
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types for invalid and unsupported models
        from .dtypes import unloadable

        raise unloadable(onnx_path, first_line(exc), dtype) from None


def _records_peak_rss(validate_fn):
    """The report's ``peak_rss_mb``: the largest RSS while `validate_fn` ran."""

    @functools.wraps(validate_fn)
    def measured(*args, **kwargs):
        with peak_rss() as peak:
            report = validate_fn(*args, **kwargs)
        report.peak_rss_mb = peak.mb
        return report

    return measured


@_records_peak_rss
def validate(
    onnx_path: str | os.PathLike,
    model=None,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    seeds: tuple[int, ...] = DEFAULT_SEEDS,
    input_spec: InputSpec | None = None,
    task: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    new_tokens: int = 16,
    localize: bool = False,
    max_memory_gb: float | None = None,
) -> ValidationReport:
    """Compare `onnx_path` under ORT with the PyTorch `model` (a reference, a LoadedModel, or None: the sidecar's).

    Runs every seed at the export shape and at a resized shape (when any axis is dynamic). Returns the report;
    it raises only for bad input (missing files, unloadable models), never for a numerical mismatch. A with-past
    export (its task, given or in the sidecar) is also greedy-decoded for `new_tokens` steps (`decode_check`).
    When an output check fails (or with `localize`), the first module whose outputs differ on the worst check's
    inputs is found (`localize`) and named in the summary. A model whose estimated need exceeds `max_memory_gb` is
    refused before it is loaded; ``peak_rss_mb`` is the largest RSS while the checks ran.
    """
    onnx_path = Path(onnx_path)
    if seq2seq.is_export_directory(onnx_path) and (atol or 0) >= 0 and (rtol or 0) >= 0 and seeds:  # encoder-decoder
        from .seq2seq_check import validate_directory

        atol, rtol = (DEFAULT_ATOL if atol is None else atol), (DEFAULT_RTOL if rtol is None else rtol)
        kwargs = dict(atol=atol, rtol=rtol, seeds=seeds, revision=revision, trust_remote_code=trust_remote_code)
        return validate_directory(onnx_path, model, new_tokens=new_tokens, **kwargs)
    if not onnx_path.is_file():
        raise BadInputError(f"{onnx_path} does not exist: pass an ONNX file written by modelexport export")
    if (atol or 0) < 0 or (rtol or 0) < 0:
        raise BadInputError(f"tolerances must be >= 0 (atol {atol}, rtol {rtol})")
    if not seeds:
        raise BadInputError("give at least one seed")
    import torch

    from . import dtypes, with_past
    from .export import read_sidecar

    sidecar = read_sidecar(onnx_path) or {}
    task = task or (sidecar.get("options") or {}).get("task")
    dtype = (sidecar.get("options") or {}).get("dtype")
    atol, rtol = dtypes.tolerances(dtype, atol, rtol)
    reference = dict(revision=revision, trust_remote_code=trust_remote_code, max_memory_gb=max_memory_gb)
    loaded, ref = load_reference(onnx_path, model, task=task, dtype=dtype, **reference)
    spec = spec_for(onnx_path, loaded, input_spec, task)
    from .image_sizes import as_exported  # an image export that fell back to one size is checked at it

    onnx_shapes = input_shapes(onnx_path)  # from the graph: ONNX Runtime loads the file after PyTorch has run
    spec = as_exported(spec, onnx_shapes)
    report = ValidationReport(str(onnx_path), ref, atol, rtol, list(seeds))
    cases = {"export": (spec, None)}
    resized = resized_spec(spec)
    if resized is not None:
        cases["resized"] = (resized, None)
    torch.manual_seed(0)
    references = [reference_case(loaded, s, seed, case) for case, (s, _) in cases.items() for seed in seeds]
    # the user's own inputs are checked as given; a with-past export is exercised by decoding (below)
    if input_spec is None and not with_past.is_with_past(task):
        from .exercise import exercising_cases, skipped_cases

        report.skipped = skipped_cases(spec, loaded.model, loaded.config, onnx_shapes)
        for case, case_spec, adjust in exercising_cases(spec, loaded.config, onnx_shapes):
            cases[case] = (case_spec, adjust)
            references.append(reference_case(loaded, case_spec, seeds[0], case, adjust, optional=True))
    if not with_past.is_with_past(task) and model is not loaded:  # decoding needs both; else one at a time
        del loaded
        release_freed()
        loaded = None
    session = ort_session(onnx_path, dtype=dtype)
    for reference_outputs in references:
        if reference_outputs is not None:
            report.checks.extend(compare_case(session, reference_outputs, atol, rtol))
    worst = report.worst
    if worst is not None and worst.error is None and (localize or not worst.passed):
        if loaded is None:  # localizing loads the model again (only now, on a failure): one of the two at a time
            del session
            release_freed()
            loaded, session = load_reference(onnx_path, model, task=task, dtype=dtype, **reference)[0], None
        report.localization = _localization(onnx_path, loaded, *cases[worst.case], worst.seed, atol, rtol)
    if with_past.is_with_past(task):
        from .decode_check import decode_check

        report.decode = decode_check(session, loaded, new_tokens, atol, rtol)
    return report


def input_shapes(onnx_path) -> dict[str, list]:
    """The ONNX file's input shapes as ORT reports them (a named dimension as its name), read from the graph."""
    from .onnx_io import load_graph

    return {i.name: [_dim(d) for d in i.type.tensor_type.shape.dim] for i in load_graph(onnx_path).graph.input}


def _dim(dim) -> int | str | None:
    if dim.HasField("dim_param"):
        return dim.dim_param
    return dim.dim_value if dim.HasField("dim_value") else None


def _localization(onnx_path, loaded, spec: InputSpec, adjust, seed: int, atol: float, rtol: float) -> dict:
    from .localize import first_divergence

    diffs: dict[str, float] = {}
    divergence = first_divergence(onnx_path, loaded, case_inputs(spec, seed, adjust)[0], atol, rtol, diffs)
    if divergence is None:
        summary = "every tagged module's outputs match: the difference is in the root's own ops"
        return {"tag": None, "summary": summary, "module_diffs": diffs}
    return divergence.to_dict() | {"summary": divergence.describe(), "module_diffs": diffs}


def write_validation(report: ValidationReport, path: str | os.PathLike) -> Path:
    """Write the full report as JSON, atomically; with a localization, also ``parity.node_data.json`` beside it:
    a Model Explorer overlay of each node's module output difference (``overlays``)."""
    path = Path(path)
    if report.localization and report.localization.get("module_diffs"):
        from .export import read_sidecar
        from .overlays import write_node_data

        node_tags = (read_sidecar(report.onnx_path) or {}).get("node_tags") or {}
        diffs = report.localization["module_diffs"]
        per_node = {node: diffs[tag] for node, tag in node_tags.items() if tag in diffs}
        write_node_data(
            path.with_name("parity.node_data.json"), per_node, f"max abs diff ({Path(report.onnx_path).name})"
        )
    return atomic.write_text(path, json.dumps(report.to_dict(), indent=1))


def raise_for_failure(report: ValidationReport) -> None:
    """Raise ValidationFailedError with the one-line summary when any check failed."""
    if not report.passed:
        raise ValidationFailedError(f"validation failed: {report.summary()}")
