"""The two phases of generating with a with-past export, as inputs to profile: prefill and one decode step.

Prefill takes a prompt of `PROMPT` tokens with pasts of length 0; a decode step takes one token after a past of
`PROMPT` (what every later token of a generation costs). Batch 1, as a single generation runs. Token ids are 0 and 1:
their values do not change the work, and fit any vocabulary.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from .kv_cache import PAST

PROMPT = 32


def phase_feeds(onnx_path: str | os.PathLike, prompt: int = PROMPT) -> dict[str, Callable] | None:
    """``{"prefill": make, "decode": make}``, each ``make(onnx_path, session) -> feeds``, for a with-past export
    (the sidecar's task); None for any other file."""
    from .export import read_sidecar
    from .with_past import is_with_past

    sidecar = read_sidecar(onnx_path) or {}
    if not is_with_past((sidecar.get("options") or {}).get("task")):
        return None
    return {
        "prefill": lambda _path, session: step_feeds(session, past=0, new=prompt),
        "decode": lambda _path, session: step_feeds(session, past=prompt, new=1),
    }


def step_feeds(session, past: int, new: int, batch: int = 1) -> dict[str, np.ndarray]:
    """Inputs of one run: `new` tokens after a past of `past` (random keys and values)."""
    rng = np.random.default_rng(0)
    feeds = {}
    for i in session.get_inputs():
        if PAST.match(i.name):
            feeds[i.name] = rng.standard_normal((batch, i.shape[1], past, i.shape[3])).astype(np.float32)
        elif i.name == "attention_mask":
            feeds[i.name] = np.ones((batch, past + new), dtype=np.int64)
        elif i.name == "position_ids":
            feeds[i.name] = np.tile(np.arange(past, past + new, dtype=np.int64), (batch, 1))
        else:  # input_ids
            feeds[i.name] = rng.integers(0, 2, (batch, new), dtype=np.int64)
    return feeds
