"""Shared pieces: the benchmark models, interleaved A/B timing, and the {median, min, max} summary.

Ratios are taken pair by pair: A and B run alternately (A B, B A, A B, ...), so load from other processes on a
shared machine hits both sides alike, and each pair gives one ratio; the summary is over those ratios.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

WORK = Path(__file__).parent / ".work"  # models and exports (gitignored); the models are reused between runs


@dataclass(frozen=True)
class BenchModel:
    name: str
    class_name: str | None = None  # transformers class...
    config: Callable[[], object] | None = None
    factory: str | None = None  # ...or a plain torch ``module.path:factory`` (benchmarks/plain_models.py)


def _bert_base():
    from transformers import BertConfig

    return BertConfig()


def _resnet_50():
    from transformers import ResNetConfig

    return ResNetConfig()


def _tiny(name: str):
    def config():
        from modelexport.demo_models import _configs

        return _configs()[name][1]

    return config


FULL_MODELS = (BenchModel("bert-base", "BertModel", _bert_base), BenchModel("resnet-50", "ResNetModel", _resnet_50))
# For strategies that cannot trace the transformers classes (fx): plain torch models of the same sizes.
TORCH_MODELS = (
    BenchModel("bert-base-torch", factory="benchmarks.plain_models:bert_base"),
    BenchModel("resnet-50-torch", factory="benchmarks.plain_models:resnet_50"),
)
QUICK_MODELS = (
    BenchModel("tiny-bert", "BertModel", _tiny("tiny-bert")),
    BenchModel("tiny-resnet", "ResNetModel", _tiny("tiny-resnet")),
)


def build(model: BenchModel, directory: Path = WORK / "models") -> Path:
    """Save `model` with random weights (seed 0) under `directory`, once; later runs reuse it."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    path = directory / model.name
    if not (path / "model.safetensors").is_file():
        torch.manual_seed(0)
        getattr(transformers, model.class_name)(model.config()).save_pretrained(path)
    return path


def summary(values: list[float], **extra) -> dict:
    """The figure's median over the repetitions, with min and max (and anything else worth keeping)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values), **extra}


def timed(fn: Callable[[], object], before: Callable[[], object] | None = None) -> float:
    """Seconds `fn` takes; `before` runs first, untimed."""
    if before is not None:
        before()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def in_turns(items: Sequence, rep: int) -> list:
    """`items` in the order of repetition `rep`: rotated by one each repetition, so each goes first as often."""
    turn = rep % len(items)
    return [*items[turn:], *items[:turn]]


MIN_REPS = 3  # a figure's median is over at least this many repetitions, however late the run is


def another(done: int, reps: int, deadline: float = math.inf) -> bool:
    """Whether to start repetition `done` + 1 of `reps`; past the run's `deadline` (see run.BUDGET_S) only up to
    MIN_REPS, so that on a slow day of the machine `make bench` ends in time with fewer repetitions, not later."""
    return done < reps and (done < MIN_REPS or time.perf_counter() < deadline)


def interleaved(
    a: Callable[[], object],
    b: Callable[[], object],
    reps: int,
    warmup: bool = True,
    min_seconds: float = 0.0,
    before: Callable[[], object] | None = None,
    deadline: float = math.inf,
) -> dict:
    """Time `a` and `b` alternately (after one untimed run of each) `reps` times and, for quick pairs, until
    `min_seconds` have passed (at most 4 × `reps`): a short pair's ratio is noisier. Past `deadline`, no pair beyond
    MIN_REPS starts (:func:`another`). `before` runs, untimed, before each timed run. Summary of the a/b ratios.
    """
    if warmup:
        a(), b()
    a_s, b_s = [], []
    start = time.perf_counter()

    def wanted() -> int:
        return 4 * reps if time.perf_counter() - start < min_seconds else reps

    while another(len(a_s), wanted(), deadline):
        if len(a_s) % 2 == 0:
            a_s.append(timed(a, before)), b_s.append(timed(b, before))
        else:
            b_s.append(timed(b, before)), a_s.append(timed(a, before))
    return summary([x / y for x, y in zip(a_s, b_s)], a_s=statistics.median(a_s), b_s=statistics.median(b_s))


RAM_DISK = Path("/dev/shm")
RAM_DISK_ROOM = 4_000_000_000  # bytes free it needs: two BERT-base exports (440 MB each) with room to spare


@contextlib.contextmanager
def scratch_folder(name: str) -> Iterator[Path]:
    """A new folder for the files timed runs write, removed afterwards: on the RAM disk where there is one with
    room, else under WORK. On this VM's disk (ext4 mounted with online discard) writing a new 100 MB file stalled
    for ~0.2 s every other run (0.02 s otherwise; on the RAM disk 0.035-0.041 s each time), a noise as large as
    the figures; both sides of a ratio write the same bytes, so what remains is what each side computes."""
    root = RAM_DISK if RAM_DISK.is_dir() and shutil.disk_usage(RAM_DISK).free > RAM_DISK_ROOM else WORK
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"modelexport-bench-{name}-", dir=root))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def quiet_disk(*paths: Path) -> None:
    """Remove `paths` and write every dirty page to disk: the next timed run starts with nothing of the last one's
    ~440 MB still being written back (the kernel throttles a writer while it is), and pays no unlink either."""
    import os

    from modelexport.onnx_io import external_data_path

    for path in paths:
        path.unlink(missing_ok=True)
        external_data_path(path).unlink(missing_ok=True)
    os.sync()


def failed(reason: str) -> dict:
    """A figure that could not be measured, with the reason (kept in results.json, shown in the table)."""
    return {"median": None, "min": None, "max": None, "n": 0, "error": reason}
