"""Tasks that export a decoder ready to generate: past keys and values in, the grown cache out.

``text-generation-with-past`` writes one file in the layout ONNX consumers read (optimum's): inputs ``input_ids``,
``attention_mask`` (past + new tokens), ``position_ids`` where the forward takes them and
``past_key_values.{i}.key`` / ``.value`` of shape ``[batch, kv_heads, past_sequence, head_dim]``; outputs
``logits`` and ``present.{i}.key`` / ``.value``. Prefill runs through the same file with pasts of length 0: the
graph concatenates the past with the new keys, which ONNX Runtime does for an empty past too (checked by
``decode_check`` on every validation).

The example inputs are 8 new tokens after a past of 8. Both are even and at least 4, so validation's second shape
(every dynamic axis halved, per axis name) stays consistent: sequence 4, past 4, attention mask 8.
"""

from __future__ import annotations

import inspect

from .errors import BadInputError, one_line
from .inputs import InputSpec, TensorSpec

# task -> the task without a cache, named in the error when a model cannot export with one
TASKS = {"text-generation-with-past": "text-generation"}
BATCH, SEQUENCE, PAST = 2, 8, 8


def is_with_past(task: str | None) -> bool:
    return task in TASKS


def cache_shape(config) -> tuple[int, int, int]:
    """(layers, kv_heads, head_dim) of a decoder's cache, from its config."""
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    heads = getattr(text, "num_attention_heads", None)
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or (text.hidden_size // heads if heads else None)
    layers = getattr(text, "num_hidden_layers", None)
    if not (layers and kv_heads and head_dim):
        raise BadInputError(
            f"cannot tell the cache shape of {type(config).__name__} (layers, key/value heads, head size): "
            f"export it with --task {TASKS['text-generation-with-past']}"
        )
    return layers, kv_heads, head_dim


def check_config(config, task: str) -> None:
    """Before loading: a one-line error for a config the task cannot take (a plain torch module, or an
    encoder-decoder asked for a decoder-only export), naming the task that works."""
    if config is None:
        raise BadInputError(f"--task {task} needs a transformers model saved with save_pretrained, not a factory")
    if getattr(config, "is_encoder_decoder", False):
        from .seq2seq import task_for

        raise BadInputError(
            f"{type(config).__name__.removesuffix('Config')} is an encoder-decoder: export it with --task "
            f"{task_for(config)}"
        )


def check_supported(model, config, task: str) -> None:
    """A one-line error, before any export, for a model that cannot export with a cache, naming the task that
    works instead."""
    from . import kv_cache

    name = type(model).__name__
    instead = TASKS[task]
    check_config(config, task)
    if kv_cache.cache_keyword(model) is None:
        raise BadInputError(f"{name} takes no key/value cache: export it with --task {instead}")


def example_spec(model, config, task: str) -> InputSpec:
    """The example inputs of a with-past export (see the module docstring)."""
    from .kv_cache import past_names

    check_supported(model, config, task)
    layers, kv_heads, head_dim = cache_shape(config)
    vocab = config.get_text_config(decoder=True).vocab_size
    seq = {0: "batch", 1: "sequence"}
    specs = {
        "input_ids": TensorSpec(shape=[BATCH, SEQUENCE], dtype="int64", dynamic_axes=seq, high=vocab),
        "attention_mask": TensorSpec(
            shape=[BATCH, PAST + SEQUENCE],
            dtype="int64",
            dynamic_axes={0: "batch", 1: "past_sequence+sequence"},
            low=1,
            high=2,
        ),
    }
    if "position_ids" in inspect.signature(model.forward).parameters:
        specs["position_ids"] = TensorSpec(
            shape=[BATCH, SEQUENCE], dtype="int64", dynamic_axes=seq, high=PAST + SEQUENCE
        )
    for name in past_names(layers):
        specs[name] = TensorSpec(
            shape=[BATCH, kv_heads, PAST, head_dim], dtype="float32", dynamic_axes={0: "batch", 2: "past_sequence"}
        )
    return InputSpec(specs)


def check_cache_returned(loaded, inputs, task: str) -> None:
    """Run the model once on the example inputs: it must return the grown cache as ``present.*`` tensors of one
    more layer pair per past pair (a custom cache class, or a model ignoring the cache, fails here)."""
    from .wrapping import call_model

    name = type(loaded.model).__name__
    try:
        outputs = dict(call_model(loaded.model, inputs.tensors, positional=False))
    except Exception as exc:  # the model's own code: its cache handling does not take ours
        raise BadInputError(
            f"{name} fails with a key/value cache ({one_line(exc)}): export it with --task {TASKS[task]}"
        ) from None
    from .kv_cache import PAST, present_name

    wanted = [present_name(n) for n in inputs.tensors if PAST.match(n)]
    missing = [n for n in wanted if n not in outputs]
    if missing or "logits" not in outputs:
        raise BadInputError(
            f"{name} does not return its key/value cache as a DynamicCache ({missing[0] if missing else 'logits'} "
            f"missing): export it with --task {TASKS[task]}"
        )
