"""ONNX Runtime latency ratios: tagged ÷ clean export (node metadata should cost nothing), and profiling on ÷ off.

Both sides are open at once and run in alternating blocks (A B, B A, ...); each block pair gives one ratio of
mean latencies. One intra-op thread, ``ORT_ENABLE_ALL`` — what ``modelexport profile`` measures by default.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .common import summary


def _block(session, feeds, runs: int) -> float:
    start = time.perf_counter()
    for _ in range(runs):
        session.run(None, feeds)
    return (time.perf_counter() - start) / runs


def interleaved_latency(a, b, feeds, block_s: float, reps: int, warmup: int = 3) -> dict:
    """Mean latency of `a` ÷ `b` over `reps` alternating blocks of about `block_s` seconds each."""
    per_run = max(_block(session, feeds, warmup) for session in (a, b))
    runs = max(3, round(block_s / per_run))
    a_s, b_s = [], []
    for i in range(reps):
        first, second = ((a, a_s), (b, b_s)) if i % 2 == 0 else ((b, b_s), (a, a_s))
        first[1].append(_block(first[0], feeds, runs))
        second[1].append(_block(second[0], feeds, runs))
    ratios = [x / y for x, y in zip(a_s, b_s)]
    return summary(ratios, a_ms=1000 * sorted(a_s)[len(a_s) // 2], b_ms=1000 * sorted(b_s)[len(b_s) // 2], runs=runs)


def runtime_cost(tagged: Path, clean: Path, block_s: float, reps: int) -> dict:
    """Latency of the tagged ONNX ÷ the clean (``--clean``) ONNX of the same model."""
    from modelexport.profile import _session, feeds_for

    a, b = _session(tagged, "all", 1), _session(clean, "all", 1)
    return interleaved_latency(a, b, feeds_for(tagged, a), block_s, reps)


def profiling_overhead(onnx_path: Path, block_s: float, reps: int) -> dict:
    """Latency with ORT's profiler on ÷ off, same file, same level: what per-module attribution costs."""
    from modelexport.profile import _session, feeds_for

    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        off = _session(onnx_path, "all", 1)
        on = _session(onnx_path, "all", 1, profile_prefix=str(Path(tmp) / "ort"))
        figure = interleaved_latency(on, off, feeds_for(onnx_path, off), block_s, reps)
        on.end_profiling()
    return figure
