"""Measure an exported model under ONNX Runtime and say which ``nn.Module`` the time goes to.

Two sessions at the same graph optimisation level (default ``all``, what users run):

* a timing session without the profiler: ``warmup`` runs, then ``iterations`` timed runs give the latency
  percentiles and throughput (the profiler itself costs 2-9%);
* a profiling session (``enable_profiling``) that also saves its optimized graph: the per-node kernel times of
  its runs are mapped back to the exported nodes' tags (see :mod:`modelexport.attribution`) and rolled up the
  module tree into self and inclusive time per module.

Peak memory is the growth of the process's peak resident set (``ru_maxrss``) over both sessions: what loading
and running the model cost on top of what the process already held.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from . import atomic
from .calibration import calibrate, profiler_overhead_us
from .errors import BadInputError, first_line
from .overlays import write_node_data

LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
UNATTRIBUTED = "(unattributed)"


@dataclass
class ProfileResult:
    """What :func:`profile` measured; ``to_dict()`` is the content of profile.json."""

    onnx_path: str
    optimization: str  # ORT graph optimisation level of both the latency and the attribution
    threads: int
    warmup: int
    iterations: int
    profiled_runs: int
    inputs: dict[str, list[int]]
    latency_ms: dict[str, float]
    throughput_per_s: float
    batch_size: int
    peak_rss_mb: float
    peak_rss_delta_mb: float
    kernel_ms: float  # summed kernel time of one run, from the profiler
    attributed_fraction: float  # kernel time mapped to a tag by name, fused tensors or name rules
    inferred_fraction: float  # kernel time whose tag came from graph neighbours
    attribution: dict[str, float]  # fraction of kernel time per mapping method
    # {tag, module, depth, self_ms, total_ms, nodes, kernel_self_ms, kernel_total_ms}: self/total calibrated to add
    # up to the p50 latency (`module_time` says how), kernel_* the profiler's own figures
    modules: list[dict] = field(default_factory=list)
    module_time: dict = field(default_factory=dict)  # calibration.Calibration
    # calibrated ms per exported node (a fused kernel's time split between the nodes it replaced): the Model
    # Explorer overlay, not part of profile.json
    node_ms: dict[str, float] = field(default_factory=dict, repr=False)
    files: dict[str, str] = field(default_factory=dict)
    # a with-past export's phases (``prefill``, ``decode``), each a profile of its own; the fields above are decode's
    phases: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("node_ms")
        return data

    def top(self, n: int = 15, key: str = "self_ms") -> list[dict]:
        return sorted(self.modules, key=lambda m: m[key], reverse=True)[:n]


def feeds_for(onnx_path: str | os.PathLike, session) -> dict[str, np.ndarray]:
    """Inputs at the export-time shapes the sidecar records; else the graph's, with dynamic axes at 1."""
    from .export import read_sidecar
    from .inputs import inputs_from_spec, parse_input_spec

    sidecar = read_sidecar(onnx_path) or {}
    if sidecar.get("inputs"):
        from .seq2seq import unread_inputs

        tensors = inputs_from_spec(parse_input_spec(sidecar["inputs"], source="the sidecar's inputs")).tensors
        feeds = {i.name: tensors[i.name].numpy() for i in session.get_inputs() if i.name in tensors}
        return feeds | unread_inputs(session, tensors)  # a decoder's declared, unread encoder pasts: empty
    feeds = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        kind = i.type.removeprefix("tensor(").removesuffix(")")
        dtype = {"float": np.float32, "double": np.float64, "float16": np.float16, "bool": np.bool_}.get(kind)
        feeds[i.name] = (
            np.random.default_rng(0).standard_normal(shape).astype(dtype)
            if dtype and dtype != np.bool_
            else np.ones(shape, dtype=dtype or np.dtype(kind if kind != "int" else "int32"))
        )
    return feeds


def _session(
    onnx_path: Path, level: str, threads: int, profile_prefix: str | None = None, optimized_path: str | None = None
):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    if optimized_path:
        options.optimized_model_filepath = optimized_path
    try:
        return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT's own exception types: the file is not runnable
        from .dtypes import unloadable
        from .export import read_sidecar

        dtype = ((read_sidecar(onnx_path) or {}).get("options") or {}).get("dtype")
        raise unloadable(onnx_path, first_line(exc), dtype) from None


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def kernel_times(profile_json: str | os.PathLike, skip_runs: int = 0) -> tuple[dict[str, float], dict[str, int]]:
    """Summed kernel microseconds and the number of kernel events per node name (events ``<node>_kernel_time``),
    after the first `skip_runs` runs."""
    events = json.loads(Path(profile_json).read_text(encoding="utf-8"))
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    since = starts[skip_runs] if len(starts) > skip_runs else 0
    times: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time") and event["ts"] >= since:
            name = event["name"].removesuffix("_kernel_time")
            times[name] += float(event.get("dur", 0))
            counts[name] += 1
    return dict(times), dict(counts)


def latency_stats(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000.0
    return {
        "mean": float(ms.mean()),
        "p50": float(np.percentile(ms, 50)),
        "p90": float(np.percentile(ms, 90)),
        "p99": float(np.percentile(ms, 99)),
        "stdev": float(statistics.stdev(ms)) if len(ms) > 1 else 0.0,
    }


def profile(
    onnx_path: str | os.PathLike,
    warmup: int = 5,
    iterations: int = 50,
    threads: int = 1,
    output_dir: str | os.PathLike | None = None,
    optimization: str = "all",
    profile_runs: int | None = None,
) -> ProfileResult:
    """Measure latency and per-module kernel time of `onnx_path`; write the files when `output_dir` is given.

    `profile_runs` (default: `iterations`, at most 20) is how many runs the profiling session records.
    """
    from .export import read_tags
    from .report_tree import load_onnx_graph

    onnx_path = Path(onnx_path)
    from .phases import file_phases

    if warmup < 0 or iterations < 1 or threads < 1:
        raise BadInputError(f"need warmup >= 0, iterations >= 1, threads >= 1 (got {warmup}, {iterations}, {threads})")
    if optimization not in LEVELS:
        raise BadInputError(f"unknown optimization level '{optimization}': use one of {', '.join(LEVELS)}")
    if (files := file_phases(onnx_path)) is not None:  # an encoder-decoder's directory: a phase per file
        return _profile_files(onnx_path, files, warmup, iterations, threads, output_dir, optimization, profile_runs)
    original = load_onnx_graph(onnx_path)
    tags, tree = read_tags(onnx_path, original)
    if not tags or tree is None:
        raise BadInputError(
            f"{onnx_path} carries no hierarchy tags and has no sidecar: export it with modelexport export"
        )
    if output_dir is not None:
        output_dir = Path(output_dir)
        if output_dir.exists() and not output_dir.is_dir():
            raise BadInputError(f"{output_dir} is a file: pass a directory for the profile")
    runs = profile_runs or min(iterations, 20)
    from .phases import phase_feeds

    phases = phase_feeds(onnx_path)
    if phases is None:
        result = _measure(onnx_path, original, tags, tree, feeds_for, warmup, iterations, threads, optimization, runs)
    else:  # a with-past export: prefill and one decode step measured apart; the decode step is the headline
        measured = {
            name: _measure(onnx_path, original, tags, tree, make, warmup, iterations, threads, optimization, runs)
            for name, make in phases.items()
        }
        result = measured["decode"]
        result.phases = {name: r.to_dict() for name, r in measured.items()}
    if output_dir is not None:
        write_profile(result, output_dir)
    return result


def _profile_files(directory, files, warmup, iterations, threads, output_dir, optimization, profile_runs):
    """Each phase of an encoder-decoder export on its own file (`phases.file_phases`); decode is the headline."""
    from .export import read_tags
    from .report_tree import load_onnx_graph

    measured = {}
    for name, (path, make) in files.items():
        original = load_onnx_graph(path)
        tags, tree = read_tags(path, original)
        runs = profile_runs or min(iterations, 20)
        measured[name] = _measure(path, original, tags, tree, make, warmup, iterations, threads, optimization, runs)
    result = measured["decode"]
    result.phases = {name: r.to_dict() for name, r in measured.items()}
    if output_dir is not None:
        write_profile(result, Path(output_dir))
    return result


def _measure(onnx_path, original, tags, tree, make_feeds, warmup, iterations, threads, optimization, runs):
    """One measurement: latency without the profiler, then kernel time per module from `runs` profiled runs, on
    the inputs `make_feeds(onnx_path, session)` builds."""
    import onnx

    from .attribution import DIRECT, map_nodes, roll_up

    rss_before = _peak_rss_mb()
    session = _session(onnx_path, optimization, threads)
    feeds = make_feeds(onnx_path, session)
    for _ in range(warmup):
        session.run(None, feeds)
    seconds = []
    for _ in range(iterations):
        start = time.perf_counter()
        session.run(None, feeds)
        seconds.append(time.perf_counter() - start)
    del session

    with tempfile.TemporaryDirectory(prefix="modelexport-profile-") as tmp:
        optimized_path = str(Path(tmp) / "optimized.onnx")
        session = _session(onnx_path, optimization, threads, str(Path(tmp) / "ort"), optimized_path)
        skip = max(1, min(warmup, 3))  # warm-up runs, recorded by the profiler but not counted
        for _ in range(skip + runs):
            session.run(None, feeds)
        times, counts = kernel_times(session.end_profiling(), skip_runs=skip)
        optimized = onnx.load(optimized_path, load_external_data=False) if optimization != "disable" else None
    peak = _peak_rss_mb()

    origins = map_nodes(original, optimized, tags)
    latency = latency_stats(seconds)
    calibrated, calibration = calibrate(times, counts, runs, latency["p50"], profiler_overhead_us(threads))
    self_ms: dict[str, float] = defaultdict(float)
    self_us: dict[str, float] = defaultdict(float)
    node_ms: dict[str, float] = defaultdict(float)
    node_sets: dict[str, set] = defaultdict(set)
    by_how: dict[str, float] = defaultdict(float)
    for name, us in times.items():
        origin = origins.get(name)
        tag = origin.tag if origin is not None else tags.get(name)
        how = origin.how if origin is not None else ("name" if name in tags else "unmapped")
        by_how[how] += us
        self_us[tag or UNATTRIBUTED] += us
        self_ms[tag or UNATTRIBUTED] += calibrated[name]
        exported = origin.nodes if origin is not None else ((name,) if name in tags else ())
        for node in exported:
            node_ms[node] += calibrated[name] / len(exported)
        node_sets[tag or UNATTRIBUTED].add(name)
    total_us = sum(times.values()) or 1.0
    per_run = 1000.0 * runs
    nodes = {t: len(n) for t, n in node_sets.items()}
    modules = roll_up(tree, self_ms, nodes)
    for row, raw in zip(modules, roll_up(tree, {t: us / per_run for t, us in self_us.items()}, nodes)):
        row["kernel_self_ms"], row["kernel_total_ms"] = raw["self_ms"], raw["total_ms"]
    batch = max((a.shape[0] for a in feeds.values() if a.ndim), default=1)
    result = ProfileResult(
        onnx_path=str(onnx_path),
        optimization=LEVELS[optimization],
        threads=threads,
        warmup=warmup,
        iterations=iterations,
        profiled_runs=runs,
        inputs={n: list(a.shape) for n, a in feeds.items()},
        latency_ms=latency,
        throughput_per_s=batch * iterations / sum(seconds),
        batch_size=batch,
        peak_rss_mb=round(peak, 1),
        peak_rss_delta_mb=round(peak - rss_before, 1),
        kernel_ms=sum(times.values()) / per_run,
        attributed_fraction=sum(by_how.get(h, 0.0) for h in DIRECT) / total_us,
        inferred_fraction=by_how.get("neighbours", 0.0) / total_us,
        attribution={h: us / total_us for h, us in sorted(by_how.items())},
        modules=modules,
        module_time=asdict(calibration),
        node_ms=dict(node_ms),
    )
    return result


def write_profile(result: ProfileResult, output_dir: str | os.PathLike) -> dict[str, Path]:
    """Write profile.json, profile.md and modules.png into `output_dir` (created if needed), each atomically."""
    from .profile_plot import plot_modules

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": output_dir / "profile.json",
        "markdown": output_dir / "profile.md",
        "plot": output_dir / "modules.png",
        "node_data": output_dir / "latency.node_data.json",
    }
    for name, phase in result.phases.items():  # a with-past export: a plot per phase beside the headline one
        paths[f"plot_{name}"] = output_dir / f"modules.{name}.png"
        measured = ProfileResult(**{f.name: phase[f.name] for f in fields(ProfileResult) if f.name in phase})
        plot_modules(measured, paths[f"plot_{name}"], phase=name)
    result.files = {k: str(p) for k, p in paths.items()}
    plot_modules(result, paths["plot"])
    write_node_data(paths["node_data"], result.node_ms, f"latency ms ({Path(result.onnx_path).name})")
    atomic.write_text(paths["markdown"], profile_markdown(result))
    atomic.write_text(paths["json"], json.dumps(result.to_dict(), indent=1))
    return paths


def profile_markdown(result: ProfileResult, top: int = 20) -> str:
    """profile.md: the measurements and the modules that cost most."""
    lat = result.latency_ms
    lines = [
        f"# Profile of `{Path(result.onnx_path).name}`",
        "",
        f"ONNX Runtime CPU, {result.optimization}, {result.threads} thread(s), {result.iterations} timed runs "
        f"after {result.warmup} warm-up; attribution from {result.profiled_runs} profiled runs at the same level.",
        f"Inputs: {', '.join(f'{n} {tuple(s)}' for n, s in result.inputs.items())}.",
        "",
        "| latency (ms) | mean | p50 | p90 | p99 | stdev |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| | {lat['mean']:.3f} | {lat['p50']:.3f} | {lat['p90']:.3f} | {lat['p99']:.3f} | {lat['stdev']:.3f} |",
        "",
        f"Throughput {result.throughput_per_s:.1f} samples/s (batch {result.batch_size}); peak RSS "
        f"{result.peak_rss_mb:.0f} MB (+{result.peak_rss_delta_mb:.0f} MB). The profiler's kernel time "
        f"{result.kernel_ms:.3f} ms per run: {result.attributed_fraction:.1%} attributed to modules directly, "
        f"{result.inferred_fraction:.1%} from graph neighbours. {module_time_text(result.module_time)}",
        "",
        "## Modules by own (self) time",
        "",
        "| module | tag | self ms | self % | total ms | nodes |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    latency = result.latency_ms["p50"] or 1.0
    for m in result.top(top):
        lines.append(
            f"| `{m['module'] or '(root)'}` | `{m['tag']}` | {m['self_ms']:.4f} | "
            f"{m['self_ms'] / latency:.1%} | {m['total_ms']:.4f} | {m['nodes']} |"
        )
    lines += phases_markdown(result)
    return "\n".join(lines) + "\n"


def module_time_text(module_time: dict) -> str:
    """One sentence on how the module times were made to add up to the p50 latency."""
    if not module_time:
        return ""
    return (
        f"Module times add up to the p50 latency: the profiler's {module_time['overhead_us_per_kernel']:.2f} µs per "
        f"kernel event (measured) taken off each of {module_time['kernels_per_run']:.0f} kernels, the rest scaled "
        f"by {module_time['scale']:.3g}."
    )


def phases_markdown(result: ProfileResult, top: int = 5) -> list[str]:
    """The prefill and decode sections of a with-past export's profile.md (none for other files)."""
    lines = []
    for name, phase in result.phases.items():
        lat = phase["latency_ms"]
        inputs = phase["inputs"]
        past = next((s[2] for n, s in inputs.items() if n.startswith("past_key_values")), 0)
        what = (  # a speech encoder's phase takes mel frames, not tokens
            f"{inputs['input_ids'][1]} new tokens after a past of {past}"
            if "input_ids" in inputs
            else ", ".join(f"{n} {tuple(s)}" for n, s in inputs.items())
        )
        lines += [
            "",
            f"## Phase: {name} ({what})",
            "",
            f"Latency mean {lat['mean']:.3f} ms, p50 {lat['p50']:.3f} ms, p90 {lat['p90']:.3f} ms; kernel time "
            f"{phase['kernel_ms']:.3f} ms, {phase['attributed_fraction']:.1%} attributed to modules directly.",
            "",
            "| module | self ms | total ms |",
            "| --- | ---: | ---: |",
        ]
        for m in sorted(phase["modules"], key=lambda m: m["self_ms"], reverse=True)[:top]:
            lines.append(f"| `{m['tag']}` | {m['self_ms']:.4f} | {m['total_ms']:.4f} |")
    return lines
