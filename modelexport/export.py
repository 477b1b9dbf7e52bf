"""Export one model: load it, build inputs, capture it with a strategy, tag every node, write ONNX + sidecar."""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import onnx

from . import atomic, crosscheck, dtypes, image_sizes, onnx_io, seq2seq, tagging, with_past
from .candidate_check import EXPORT_SHAPE_ONLY, FROZEN_ADVICE, check_candidate
from .errors import BadInputError, ExportFailedError, ModelExportError, one_line
from .hierarchy import Hierarchy, build_hierarchy
from .inputs import ExampleInputs, InputSpec, inputs_from_spec, resolve_spec
from .loading import LoadedModel, load, load_config
from .memory import check_memory, peak_rss
from .source import ModelSource, resolve
from .strategies import STRATEGIES
from .strategies.base import root_reason
from .streamed_weights import StreamedWeights
from .versions import library_versions

DEFAULT_OPSET = 18
SIDECAR_FORMAT = "modelexport.hierarchy/1"
# Order tried by `--strategy auto`: the first that succeeds (and passes the coverage check) wins. htp is fast and
# exact; dynamo follows what tracing cannot (torch.cond, Python control flow torch.export handles) at ~2 s; usage
# takes modules from forward hooks where the exporter's attribute names cannot be resolved; fx rarely traces what
# the others miss.
AUTO_ORDER = ("htp", "dynamo", "usage", "fx")


@dataclass
class Attempt:
    strategy: str
    ok: bool
    seconds: float
    reason: str | None = None


@dataclass
class ExportResult:
    onnx_path: Path
    sidecar_path: Path
    strategy: str
    stats: tagging.TagStats
    attempts: list[Attempt]
    seconds: float
    sidecar: dict = field(repr=False)


def sidecar_path_for(onnx_path: str | os.PathLike) -> Path:
    """``out/model.onnx`` -> ``out/model.hierarchy.json``."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(f"{onnx_path.stem}.hierarchy.json")


def check_output(output: str | os.PathLike) -> Path:
    """Fail early, before any work, if the ONNX file (or its sidecar) cannot be written where asked."""
    output = Path(output)
    if output.suffix != ".onnx":
        raise BadInputError(f"output {output} must end in .onnx")
    if output.is_dir():
        raise BadInputError(
            f"output {output} is a directory: pass the path of a file to write, or remove the directory"
        )
    for path, what in ((sidecar_path_for(output), "sidecar"), (onnx_io.external_data_path(output), "weights file")):
        if path.is_dir():
            raise BadInputError(
                f"{path} (the {what} of {output}) is a directory: remove it or choose another output name"
            )
    parent = output.parent
    if not parent.is_dir():
        raise BadInputError(f"output directory {parent} does not exist: create it first")
    try:
        with tempfile.TemporaryFile(dir=parent):  # unnamed where the OS allows: nothing left even if killed
            pass
    except OSError:
        raise BadInputError(f"output directory {parent} is not writable: choose another location") from None
    return output


def check_opset(opset: int | None) -> int:
    """The opset to export with (None: the default), or a one-line error for one no exporter supports."""
    if opset is None:
        return DEFAULT_OPSET
    if not 7 <= opset <= 23:
        raise BadInputError(f"opset {opset} is out of range: use 7..23 (default {DEFAULT_OPSET})")
    return opset


def example_spec(loaded: LoadedModel, spec: InputSpec | None, task: str | None = None) -> InputSpec:
    """The inputs to export with: the user's spec, else the model's config and forward signature call for (a
    with-past task's include the cache, `with_past`)."""
    if with_past.is_with_past(task):
        with_past.check_supported(loaded.model, loaded.config, task)
        return spec or with_past.example_spec(loaded.model, loaded.config, task)
    return resolve_spec(loaded.model, loaded.config, spec)


def check_inputs(loaded: LoadedModel, inputs: ExampleInputs) -> None:
    """Run the model once on the example inputs: when every strategy failed, says whether the inputs are why."""
    from .wrapping import call_model

    try:
        outputs = call_model(loaded.model, inputs.tensors, positional=loaded.positional)
    except Exception as exc:  # the model's own code: any error means the inputs do not fit
        raise BadInputError(
            f"{type(loaded.model).__name__} fails on the example inputs "
            f"({', '.join(f'{n} ' + 'x'.join(map(str, t.shape)) for n, t in inputs.tensors.items())}: "
            f"{one_line(exc)}): pass a matching --input-spec FILE"
        ) from None
    if not outputs:
        raise BadInputError(f"{type(loaded.model).__name__} returns no tensors: nothing to export")


def capture_and_tag(loaded, inputs, strategies, opset, hierarchy: Hierarchy, check=None, stream_weights=False):
    """Try `strategies` in order; the first whose export succeeds and whose tags pass the check wins. `check`,
    if given, is called with each candidate Capture and raises to reject it (``candidate_check``);
    `stream_weights`: see ``Strategy.capture``."""
    attempts: list[Attempt] = []
    for name in strategies:
        start = time.perf_counter()
        try:
            capture = STRATEGIES[name].capture(
                loaded.model, inputs, opset, loaded.positional, hierarchy, stream_weights=stream_weights
            )
            tagging.name_nodes(capture.onnx_model.graph)
            tags, projected = tagging.project_tags(capture.onnx_model.graph, capture.scopes, hierarchy)
            mapping = tagging.node_tags(capture.onnx_model, tags)
            stats = tagging.stats_for(mapping, hierarchy.root, projected)
            check_tags(stats, has_submodules=len(hierarchy.modules) > 1)
            if check is not None:
                check(capture)
        except Exception as exc:  # a strategy failing is data: record why and try the next
            reason = root_reason(exc)
            attempts.append(Attempt(name, False, round(time.perf_counter() - start, 3), reason))
            continue
        attempts.append(Attempt(name, True, round(time.perf_counter() - start, 3)))
        return capture, mapping, stats, attempts
    check_inputs(loaded, inputs)
    error = ExportFailedError(failure_message(attempts))
    error.attempts = attempts  # for callers that report every attempt (export --strategy all)
    raise error


def failure_message(attempts: list[Attempt]) -> str:
    """One line: each strategy's reason; "try another --strategy" only when others were left untried; what to do
    about a file right at the export shape only, once."""
    reasons = "; ".join(f"{a.strategy}: {a.reason}" for a in attempts)
    if any(EXPORT_SHAPE_ONLY in (a.reason or "") for a in attempts):
        reasons += f"; {FROZEN_ADVICE}"
    if len(attempts) == 1:
        return (
            f"the export failed ({reasons}); try another --opset or --strategy, or change the part of the model "
            "it names"
        )
    return f"every strategy failed ({reasons}); try another --opset, or change the part of the model they name"


def check_tags(stats: tagging.TagStats, has_submodules: bool) -> None:
    """Our own coverage check: every node tagged, and a model with submodules not lumped onto its root."""
    if stats.tagged_nodes < stats.total_nodes:
        raise ExportFailedError(f"only {stats.tagged_nodes}/{stats.total_nodes} nodes tagged")
    if has_submodules and stats.total_nodes and stats.root_tagged_nodes == stats.total_nodes:
        raise ExportFailedError("every node fell back to the root tag: module scopes were lost")


def export_model(
    model: str | ModelSource,
    output: str | os.PathLike,
    *,
    strategy: str = "auto",
    opset: int | None = DEFAULT_OPSET,
    clean: bool = False,
    torch_modules: bool = False,
    input_spec: InputSpec | None = None,
    task: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    cross_check: str | None = None,
    max_memory_gb: float | None = None,
    stream_weights: bool = False,
    dtype: str | None = None,
) -> ExportResult | seq2seq.Seq2SeqExport:
    """Export `model` to `output` with every node tagged; write the sidecar beside it. See the README. An
    encoder-decoder with its cache (`seq2seq`) is a directory of two files, each with its sidecar.

    `cross_check` names a second strategy whose tags the chosen ones are compared with per (module, op family)
    (`crosscheck.family_agreement`); the result goes to the sidecar's ``cross_check``, nothing else is written.
    A model whose estimated need exceeds `max_memory_gb` is refused before it is loaded (`memory.check_memory`);
    the sidecar's ``peak_rss_mb`` is the largest RSS while loading, capturing and tagging. `stream_weights` writes
    the weights from the model's own tensors, one at a time (``streamed_weights``; always so past protobuf's 2 GB),
    and skips auto's in-process ONNX Runtime check, which would hold them twice. `dtype` (float32, float16,
    bfloat16; None: as saved) is what the weights are loaded as and the graph computes in."""
    start = time.perf_counter()
    strategies = list(AUTO_ORDER) if strategy == "auto" else [strategy]
    unknown = [s for s in [*strategies, *([cross_check] if cross_check else [])] if s not in STRATEGIES]
    if unknown:
        raise BadInputError(f"unknown strategy '{unknown[0]}': use auto or one of {', '.join(STRATEGIES)}")
    opset = check_opset(opset)
    dtypes.check_dtype(dtype)
    if dtype not in (None, "float32") and (with_past.is_with_past(task) or seq2seq.is_seq2seq(task)):
        raise BadInputError(
            f"--dtype {dtype} does not work with --task {task} yet (its cache inputs and decode check are float32): "
            "export in float32, or without the cache"
        )
    if seq2seq.is_seq2seq(task):
        output = seq2seq.check_output_directory(output, input_spec)
    else:
        output = check_output(output)
    source = model if isinstance(model, ModelSource) else resolve(model, revision=revision)
    options = dict(strategies=strategies, opset=opset, clean=clean, torch_modules=torch_modules, task=task)
    options |= dict(cross_check=cross_check, start=start, stream_weights=stream_weights)
    check_memory(source.path, "export", max_memory_gb, streamed=stream_weights, dtype=dtype)
    if seq2seq.is_seq2seq(task):  # a directory of encoder_model.onnx and decoder_model.onnx
        seq2seq.check_config(load_config(source, trust_remote_code), task)
        loaded = load(source, task=task, trust_remote_code=trust_remote_code, dtype=dtype)
        return seq2seq.export_seq2seq(source, output, loaded, **options)
    if with_past.is_with_past(task):
        with_past.check_config(load_config(source, trust_remote_code), task)
    with peak_rss() as peak:
        loaded = load(source, task=task, trust_remote_code=trust_remote_code, dtype=dtype)
        spec = example_spec(loaded, input_spec, task)
        inputs = dtypes.cast_inputs(inputs_from_spec(spec), loaded.model)
        if with_past.is_with_past(task):
            with_past.check_cache_returned(loaded, inputs, task)
        # auto checks each candidate in ORT before taking it; a with-past export is checked by decoding (validate)
        checked = strategy == "auto" and not with_past.is_with_past(task)
        check = partial(check_candidate, loaded=loaded, spec=spec) if checked else None
        try:
            return export_loaded(source, loaded, inputs, output, check=check, peak=peak, **options)
        except ExportFailedError as exc:
            if not image_sizes.has_image_axes(spec):
                raise
            # no strategy exports the image at other sizes (the model runs at them): the export's size, said so
            spec = image_sizes.without_image_axes(spec)
            check = partial(check_candidate, loaded=loaded, spec=spec) if checked else None
            note = image_sizes.fixed_note(spec, exc)
            try:
                return export_loaded(
                    source, loaded, inputs_from_spec(spec), output, check=check, peak=peak, note=note, **options
                )
            except ExportFailedError:
                raise exc from None  # not the image's size: the first failure says why


def export_loaded(
    source,
    loaded,
    inputs,
    output: Path,
    *,
    strategies,
    opset,
    clean,
    torch_modules,
    task,
    cross_check,
    start=None,
    part=None,
    check=None,
    peak=None,
    stream_weights=False,
    note=None,
) -> ExportResult:
    """Capture `loaded` on `inputs`, tag it and write `output` with its sidecar (`part`: which file of a
    directory export this is, recorded in the sidecar's options; `check`: auto's check of each candidate file;
    `peak`: the stage's memory.peak_rss, recorded in the sidecar; `note`: a warning for the sidecar)."""
    start = time.perf_counter() if start is None else start
    hierarchy = build_hierarchy(loaded.model, torch_modules=torch_modules)
    capture, mapping, stats, attempts = capture_and_tag(
        loaded, inputs, strategies, opset, hierarchy, check, stream_weights=stream_weights
    )
    streamed = isinstance(capture.weights, StreamedWeights)

    proto = capture.onnx_model
    counts: dict[str, int] = {}
    for tag in mapping.values():
        counts[tag] = counts.get(tag, 0) + 1
    tree = hierarchy.tree(counts)
    warnings = [*([note] if note else []), *crosscheck.lumped_subtrees(tree, capture.ran)]
    checked = None
    if cross_check:
        checked = run_cross_check(
            loaded, inputs, cross_check, opset, hierarchy, attempts[-1].strategy, tagged_ops(proto.graph, mapping)
        )
    if clean:
        tagging.strip_metadata(proto)
    else:
        tagging.apply_tags(proto, mapping, tree)
    sidecar = {
        "format": SIDECAR_FORMAT,
        "onnx": output.name,
        "model": source.to_dict(),
        "strategy": {"name": attempts[-1].strategy, "attempts": [asdict(a) for a in attempts]},
        "exporter": capture.exporter,
        "opset": opset,
        "versions": library_versions(),
        "inputs": inputs.describe(),
        "outputs": [o.name for o in proto.graph.output],
        "options": {"clean": clean, "torch_modules": torch_modules, "task": task}
        | {"stream_weights": streamed, "dtype": dtypes.model_dtype(loaded.model)}
        | ({"part": part} if part else {}),
        "stats": asdict(stats) | {"coverage": stats.coverage},
        "tags": {
            tag: {"module": info.module, "class": info.cls, "parameters": info.parameters, "nodes": counts.get(tag, 0)}
            for tag, info in hierarchy.modules.items()
        },
        "warnings": warnings,
        "cross_check": checked,
        "peak_rss_mb": round(peak.mb, 1) if peak is not None else None,
        "tree": tree,
        "node_tags": mapping,
    }
    sidecar_path = sidecar_path_for(output)
    try:
        onnx_io.save_atomic(proto, output, capture.weights)
    except OSError as exc:
        raise atomic.write_error(output, exc) from None
    try:
        atomic.write_text(sidecar_path, json.dumps(sidecar, indent=1))
    except OSError as exc:
        output.unlink(missing_ok=True)  # never an ONNX without its sidecar
        raise atomic.write_error(sidecar_path, exc) from None
    return ExportResult(
        output, sidecar_path, attempts[-1].strategy, stats, attempts, round(time.perf_counter() - start, 3), sidecar
    )


def tagged_ops(graph: onnx.GraphProto, mapping: dict[str, str]) -> list[tuple[str, str]]:
    """(tag, op type) of every node computed from the model's inputs, subgraphs included."""
    live = crosscheck.computed_from_inputs(graph)
    return [(mapping[node.name], node.op_type) for node in tagging.iter_nodes(graph) if node.name in live]


def run_cross_check(
    loaded, inputs, name: str, opset: int, hierarchy: Hierarchy, chosen: str, chosen_ops: list[tuple[str, str]]
) -> dict:
    """Capture and tag with strategy `name` too (in memory) and compare its tags with the chosen strategy's per
    (module, op family). A failure of the second strategy is recorded, never raised."""
    record = {"strategy": name, "against": chosen, "ok": False, "seconds": 0.0, "reason": None, "agreement": None}
    if name == chosen:
        return record | {"reason": f"{name} is the strategy the tags came from: nothing to compare"}
    start = time.perf_counter()
    try:
        capture, mapping, _stats, _attempts = capture_and_tag(loaded, inputs, [name], opset, hierarchy)
    except ModelExportError as exc:
        attempts = getattr(exc, "attempts", None)
        reason = attempts[-1].reason if attempts else str(exc)
        return record | {"seconds": round(time.perf_counter() - start, 3), "reason": reason}
    result = crosscheck.family_agreement(
        crosscheck.family_counts(chosen_ops), crosscheck.family_counts(tagged_ops(capture.onnx_model.graph, mapping))
    )
    return record | {"ok": True, "seconds": round(time.perf_counter() - start, 3)} | result.to_dict()


def read_sidecar(onnx_path: str | os.PathLike) -> dict | None:
    """The sidecar written beside an ONNX file, or None if there is none."""
    path = sidecar_path_for(onnx_path)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def read_tags(onnx_path: str | os.PathLike, model: onnx.ModelProto | None = None) -> tuple[dict[str, str], dict | None]:
    """Each node's tag (from the ONNX metadata, else the sidecar) and the module tree."""
    model = model if model is not None else onnx_io.load_graph(onnx_path)
    mapping = {}
    for node in tagging.iter_nodes(model.graph):
        for prop in node.metadata_props:
            if prop.key == tagging.TAG_KEY:
                mapping[node.name] = prop.value
    tree = next((json.loads(p.value) for p in model.metadata_props if p.key == tagging.HIERARCHY_KEY), None)
    if not mapping or tree is None:
        sidecar = read_sidecar(onnx_path)
        if sidecar is not None:
            mapping = mapping or sidecar.get("node_tags", {})
            tree = tree or sidecar.get("tree")
    return mapping, tree
