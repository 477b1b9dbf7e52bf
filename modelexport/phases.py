"""The two phases of generating with a with-past export, as inputs to profile: prefill and one decode step.

Prefill takes a prompt of `PROMPT` tokens with pasts of length 0; a decode step takes one token after a past of
`PROMPT` (what every later token of a generation costs). Batch 1, as a single generation runs. Token ids are 0 and 1:
their values do not change the work, and fit any vocabulary.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

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


def file_phases(directory: str | os.PathLike, prompt: int = PROMPT) -> dict[str, tuple[Path, Callable]] | None:
    """An encoder-decoder export's phases, each ``(file, make)``: ``encode`` (the encoder on a prompt of `prompt`
    tokens), ``prefill`` (the decoder's first step: one token, pasts of length 0, the cross-attention cache
    computed) and ``decode`` (one token after a past of `prompt`); None for anything else."""
    from . import seq2seq

    if not seq2seq.is_export_directory(directory):
        return None
    files = seq2seq.part_paths(directory)
    return {
        "encode": (files["encoder"], lambda _path, session: step_feeds(session, past=0, new=prompt)),
        "prefill": (files["decoder"], lambda _path, session: step_feeds(session, past=0, new=1, encoder=prompt)),
        "decode": (files["decoder"], lambda _path, session: step_feeds(session, past=prompt, new=1, encoder=prompt)),
    }


def step_feeds(session, past: int, new: int, batch: int = 1, encoder: int = 0) -> dict[str, np.ndarray]:
    """Inputs of one run: `new` tokens after a past of `past` (random keys and values); an encoder-decoder's
    decoder attends to `encoder` encoded tokens (random hidden states)."""
    rng = np.random.default_rng(0)
    feeds = {}
    for i in session.get_inputs():
        if PAST.match(i.name):
            feeds[i.name] = rng.standard_normal((batch, i.shape[1], past, i.shape[3])).astype(np.float32)
        elif i.name == "input_features":  # a speech encoder's mel frames, fixed by its config
            feeds[i.name] = rng.standard_normal((batch, *i.shape[1:])).astype(np.float32)
        elif i.name == "encoder_hidden_states":
            feeds[i.name] = rng.standard_normal((batch, encoder, i.shape[2])).astype(np.float32)
        elif i.name == "encoder_attention_mask":
            feeds[i.name] = np.ones((batch, encoder), dtype=np.int64)
        elif i.name == "attention_mask":
            feeds[i.name] = np.ones((batch, past + new), dtype=np.int64)
        elif i.name == "position_ids":
            feeds[i.name] = np.tile(np.arange(past, past + new, dtype=np.int64), (batch, 1))
        else:  # input_ids
            feeds[i.name] = rng.integers(0, 2, (batch, new), dtype=np.int64)
    return feeds
