"""Module times that add up to the latency a user measures.

ONNX Runtime's profiler times each kernel, and timing costs about the same for every kernel event: on a model of
many small kernels the events sum to several times the unprofiled latency, and modules with many small kernels
look costlier than they are. So the profiler's cost per event is measured (:func:`profiler_overhead_us`: a chain of
trivial kernels timed with and without the profiler), taken off every kernel event of the model, and what is left
is scaled to the unprofiled p50 (the profiled run is slower as a whole too: caches, the events' bookkeeping), so that
the module times add up to the latency. The profiler's own figures are kept beside them.
"""

from __future__ import annotations

import functools
import statistics
import time
from dataclasses import dataclass

METHOD = "profiler overhead per kernel taken off, then scaled to the p50 latency"
CHAIN = 300  # kernels of the chain the overhead is measured on


@dataclass(frozen=True)
class Calibration:
    """How the profiler's kernel times were made to add up to the latency (profile.json's ``module_time``)."""

    method: str
    latency_ms: float  # what the module times add up to: the unprofiled p50
    kernel_ms: float  # what the profiler's kernel events added up to, per run
    kernels_per_run: float
    overhead_us_per_kernel: float  # measured, and taken off each kernel event
    scale: float  # latency ÷ the kernel time left after the overhead is taken off


def calibrate(times_us: dict[str, float], counts: dict[str, int], runs: int, latency_ms: float, overhead_us: float):
    """Per node, the milliseconds of one run that add up to `latency_ms`, and how they were found.

    `times_us` and `counts` are the kernel microseconds and kernel events per node summed over `runs` profiled
    runs; `overhead_us` is what the profiler adds to each event. A node whose events are all overhead gets 0.
    """
    per_run = {name: us / runs for name, us in times_us.items()}
    events = {name: max(counts.get(name, 1), 1) / runs for name in per_run}
    left = {name: max(us - overhead_us * events[name], 0.0) for name, us in per_run.items()}
    if not sum(left.values()):  # every kernel below the overhead: keep the profiler's proportions
        left, overhead_us = per_run, 0.0
    total = sum(left.values())
    scale = 1000.0 * latency_ms / total if total else 0.0
    calibration = Calibration(
        METHOD, latency_ms, sum(per_run.values()) / 1000.0, sum(events.values()), overhead_us, scale
    )
    return {name: us * scale / 1000.0 for name, us in left.items()}, calibration


@functools.cache
def profiler_overhead_us(threads: int) -> float:
    """What ORT's profiler adds to one kernel event, in µs: a chain of CHAIN one-element Adds, its profiled events'
    mean less its unprofiled time per kernel (median of runs). Measured once per process and thread count."""
    import json
    import tempfile

    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Add", [f"t{i}", "one"], [f"t{i + 1}"], name=f"n{i}") for i in range(CHAIN)]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info(f"t{CHAIN}", TensorProto.FLOAT, [1])],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()
    feeds = {"t0": np.zeros(1, np.float32)}
    with tempfile.TemporaryDirectory(prefix="modelexport-overhead-") as tmp:
        timings = {}
        for profiled in (False, True):
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            if profiled:
                options.enable_profiling = True
                options.profile_file_prefix = f"{tmp}/chain"
            session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
            for _ in range(10):
                session.run(None, feeds)
            seconds = []
            for _ in range(50):
                start = time.perf_counter()
                session.run(None, feeds)
                seconds.append(time.perf_counter() - start)
            timings[profiled] = session.end_profiling() if profiled else statistics.median(seconds)
        events = json.loads(open(timings[True], encoding="utf-8").read())
    durations = [e["dur"] for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    per_kernel_unprofiled = 1e6 * timings[False] / CHAIN
    return max(statistics.median(durations) - per_kernel_unprofiled, 0.0)
