"""What the key/value cache buys: one decode step with it ÷ recomputing the whole prefix without it.

Each model is exported twice with ``htp``: ``--task text-generation-with-past`` (one new token after a past of
`PAST` tokens, random keys and values: `modelexport.phases.step_feeds`) and ``--task text-generation`` (the same
`PAST` + 1 tokens computed from scratch, which is what a file without a cache does for every token). Both sessions
are open at once, one intra-op thread, ``ORT_ENABLE_ALL``, and run in alternating blocks (runtime_cost); each
block pair gives one ratio of mean latencies. Batch 1, as one generation runs.
"""

from __future__ import annotations

import numpy as np

from .common import WORK, BenchModel, build, summary
from .runtime_cost import _block

PAST = 128


def _gpt2_small():
    from transformers import GPT2Config

    return GPT2Config()  # 124M parameters, 12 layers of 768


def _llama_style():
    from transformers import LlamaConfig

    return LlamaConfig(  # GPT-2-small-sized, with LLaMA's grouped-query attention, rotary positions and SwiGLU
        vocab_size=32000,
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=4,
        max_position_embeddings=2048,
    )


def _tiny_gpt2():
    from transformers import GPT2Config

    return GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=2, n_positions=256)


def _tiny_llama():
    from modelexport.demo_models import _configs

    config = _configs()["tiny-llama-lm"][1]
    config.max_position_embeddings = 256
    return config


FULL = (
    BenchModel("gpt2-small-lm", "GPT2LMHeadModel", _gpt2_small),
    BenchModel("llama-style-lm", "LlamaForCausalLM", _llama_style),
)
QUICK = (
    BenchModel("tiny-gpt2-lm", "GPT2LMHeadModel", _tiny_gpt2),
    BenchModel("tiny-llama-lm", "LlamaForCausalLM", _tiny_llama),
)


def prefix_feeds(session, tokens: int) -> dict[str, np.ndarray]:
    """Inputs of a file without a cache computing `tokens` tokens from scratch."""
    feeds = {}
    for i in session.get_inputs():
        if i.name == "attention_mask":
            feeds[i.name] = np.ones((1, tokens), dtype=np.int64)
        elif i.name == "position_ids":
            feeds[i.name] = np.arange(tokens, dtype=np.int64)[None, :]
        else:
            feeds[i.name] = np.random.default_rng(0).integers(0, 2, (1, tokens), dtype=np.int64)
    return feeds


def exports(model: BenchModel):
    """The with-past and the plain htp export of `model` (kept under WORK between runs)."""
    from modelexport.export import export_model

    directory = WORK / "decode"
    directory.mkdir(parents=True, exist_ok=True)
    path = build(model)
    files = {}
    for task in ("text-generation-with-past", "text-generation"):
        files[task] = directory / f"{model.name}.{task}.onnx"
        if not files[task].is_file():
            export_model(str(path), files[task], strategy="htp", task=task)
    return files["text-generation-with-past"], files["text-generation"]


def cache_over_prefix(model: BenchModel, block_s: float, reps: int, past: int = PAST) -> dict:
    """Latency of one decode step with the cache ÷ the same step recomputing its prefix."""
    from modelexport.phases import step_feeds
    from modelexport.profile import _session

    with_past, plain = exports(model)
    a, b = _session(with_past, "all", 1), _session(plain, "all", 1)
    feeds_a, feeds_b = step_feeds(a, past=past, new=1), prefix_feeds(b, past + 1)
    per_run = max(_block(a, feeds_a, 3), _block(b, feeds_b, 3))
    runs = max(3, round(block_s / per_run))
    a_s, b_s = [], []
    for i in range(reps):
        pairs = [(a, feeds_a, a_s), (b, feeds_b, b_s)]
        for session, feeds, out in pairs if i % 2 == 0 else pairs[::-1]:
            out.append(_block(session, feeds, runs))
    ratios = [x / y for x, y in zip(a_s, b_s)]
    return summary(ratios, a_ms=1000 * float(np.median(a_s)), b_ms=1000 * float(np.median(b_s)), runs=runs, past=past)


def measure(quick: bool, log) -> dict:
    """``{"decode_cache_over_prefix": {model: figure}}``."""
    figures = {}
    for model in QUICK if quick else FULL:
        log(f"decode step with cache vs without on {model.name}")
        figures[model.name] = cache_over_prefix(model, block_s=0.05 if quick else 0.6, reps=3 if quick else 8)
    return {"decode_cache_over_prefix": figures}
