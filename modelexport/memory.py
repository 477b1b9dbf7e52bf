"""Memory: the peak resident set of a stage, and the estimate that keeps a model too large for a worker from
starting at all.

A stage's peak is sampled by a thread while it runs (``ru_maxrss`` only grows over the process's life, so in a
fleet it would report the largest model so far for every later one). The estimate is the weight bytes on disk
times what a stage was measured to need per weight byte (docs/exporting.md, "Memory").
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import ResourceLimitError

# What a model of W weight bytes is estimated to need: FIXED_NEED_GB (the imports, ~0.5 GB measured) + W x the
# stage's factor. "export" serializes the weights in memory: 4.2, the whole peak ÷ W measured on a 483M-parameter
# LLaMA-style model. The others are the slopes measured between two LLaMA-style sizes (benchmarks/memory_cost.py:
# export 1.10, validate 0.97), with a margin that covers the 1.1B model's float16 export (22 float32 weights more).
# "export-streamed" writes the weights from the model's tensors (streamed_weights).
NEED_PER_WEIGHT_BYTE = {"export": 4.2, "export-streamed": 1.2, "validate": 1.1}
FIXED_NEED_GB = 0.6
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "float32": 4, "float16": 2, "bfloat16": 2}


@dataclass
class Peak:
    mb: float = 0.0


@contextlib.contextmanager
def peak_rss(interval_s: float = 0.02) -> Iterator[Peak]:
    """The largest RSS of this process (MB) while the block runs, in ``.mb`` when it ends."""
    import psutil

    process, peak, done = psutil.Process(), Peak(), threading.Event()

    def sample() -> None:
        while True:
            peak.mb = max(peak.mb, process.memory_info().rss / 2**20)
            if done.wait(interval_s):
                return

    sampler = threading.Thread(target=sample, name="peak-rss", daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()
        peak.mb = round(max(peak.mb, process.memory_info().rss / 2**20), 1)


def release_freed() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc keeps them otherwise), so the next stage's
    peak does not stack on the last one's."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


MADV_PAGEOUT = 21  # Linux 5.4+: reclaim these pages now; their contents stay (file pages are re-read if touched)


def page_out(tensor) -> None:
    """Take the pages of `tensor`'s memory out of this process's resident set. Weights memory-mapped from a
    safetensors file stay resident once read until the whole file is unmapped, so casting them one by one would
    still end with both types resident; paged out, only the cast ones count. Non-destructive, so harmless on any
    memory; a no-op where the kernel lacks it."""
    import ctypes

    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    first, last = -(-start // PAGE) * PAGE, end // PAGE * PAGE  # whole pages inside the tensor only
    if last <= first:
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:  # not glibc
        return
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.madvise(first, last - first, MADV_PAGEOUT)


PAGE = 4096


def weight_bytes(path: str | Path | None) -> int:
    """The bytes of a model folder's weight files (safetensors, else pickled ``*.bin``); 0 for no folder."""
    if not path:
        return 0
    folder = Path(path)
    files = list(folder.glob("*.safetensors")) or list(folder.glob("*.bin"))
    return sum(f.stat().st_size for f in files)


def saved_dtype(path: str | Path | None) -> str | None:
    """The dtype of the first tensor in a model folder's first safetensors file (its header only); None if none."""
    import json
    import struct

    files = sorted(Path(path).glob("*.safetensors")) if path else []
    if not files:
        return None
    with open(files[0], "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    return next((v["dtype"] for k, v in header.items() if k != "__metadata__"), None)


def estimated_need(path: str | Path | None, stage: str, streamed: bool = False, dtype: str | None = None):
    """(GB a stage is estimated to need, the weight bytes it counts, the factor applied): an export with `streamed`
    weights (or weights past protobuf's limit, which always are) costs less; `dtype` scales the weights from the
    type they were saved in."""
    from .streamed_weights import STREAM_ABOVE_BYTES

    weights = weight_bytes(path)
    saved = saved_dtype(path)
    # ONNX Runtime's CPU provider runs half-precision files with float32 copies of the weights: only export halves
    target = dtype if stage == "export" or dtype is None else "float32"
    if target is not None and saved in DTYPE_BYTES:
        weights = weights * DTYPE_BYTES[target] // DTYPE_BYTES[saved]
    factor = NEED_PER_WEIGHT_BYTE[stage]
    if stage == "export" and (streamed or weights > STREAM_ABOVE_BYTES):
        factor = NEED_PER_WEIGHT_BYTE["export-streamed"]
    fixed = 0.0 if stage == "export" and factor == NEED_PER_WEIGHT_BYTE["export"] else FIXED_NEED_GB
    return fixed + weights * factor / 1e9, weights, factor


def check_memory(
    path: str | Path | None,
    stage: str,
    max_memory_gb: float | None,
    streamed: bool = False,
    dtype: str | None = None,
) -> None:
    """Refuse at once a model whose estimated need for `stage` (`estimated_need`) exceeds `max_memory_gb` (None: no
    limit)."""
    if max_memory_gb is None:
        return
    need_gb, weights, factor = estimated_need(path, stage, streamed, dtype)
    if need_gb > max_memory_gb:
        raise ResourceLimitError(
            f"{stage} needs an estimated {need_gb:.1f} GB ({weights / 1e9:.2f} GB of weights x {factor}"
            + (f" + {FIXED_NEED_GB} GB" if need_gb > weights * factor / 1e9 else "")
            + f") but max_memory_gb is {max_memory_gb:g}: run it on a larger worker or raise max_memory_gb"
        )
