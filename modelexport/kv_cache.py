"""Key/value caches as flat, named tensors: the generation layout ONNX consumers read (optimum's names).

A transformers decoder takes its past keys and values as a cache object (``DynamicCache``; an
``EncoderDecoderCache`` of two for encoder-decoders) and returns the grown cache. Exporters trace tensors, not
objects, so a model's inputs named ``past_key_values.{i}.key`` / ``.value`` (``past_key_values.{i}.decoder.key``,
``.encoder.key`` for encoder-decoders) are packed into a cache before the model is called (:func:`pack`) and a
cache it returns is flattened into ``present.{i}.key`` / ``.value`` (``present.{i}.decoder.key`` ...) outputs
(:func:`flatten`). The packing runs inside the wrapper every strategy traces (``wrapping.KeywordWrapper``), so the
tags stay the model's own modules.

The forward's keyword is ``cache`` from transformers 5.24 on (``past_key_values`` before, still accepted with a
warning by 5.25): whichever the signature names is used.
"""

from __future__ import annotations

import inspect
import re
import sys

PAST = re.compile(r"^past_key_values\.(\d+)\.(?:(decoder|encoder)\.)?(key|value)$")
KEYWORDS = ("cache", "past_key_values")


def past_names(layers: int, encoder_decoder: bool = False) -> list[str]:
    """The flat input names of a cache of `layers` layers, in the order the exports take them."""
    parts = ("decoder", "encoder") if encoder_decoder else (None,)
    return [
        f"past_key_values.{i}.{part + '.' if part else ''}{kind}"
        for i in range(layers)
        for part in parts
        for kind in ("key", "value")
    ]


def present_name(past: str) -> str:
    """``past_key_values.3.decoder.key`` -> ``present.3.decoder.key``."""
    return "present." + past.removeprefix("past_key_values.")


def cache_keyword(model) -> str | None:
    """The keyword `model`'s forward takes its cache by (``cache`` or ``past_key_values``); None: it takes none."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return None
    return next((k for k in KEYWORDS if k in params), None)


def has_past(names) -> bool:
    return any(PAST.match(n) for n in names)


def pack(model, kwargs: dict) -> dict:
    """`kwargs` with its ``past_key_values.*`` tensors replaced by one cache object under the model's keyword (and
    ``use_cache=True``); unchanged when it holds none."""
    pasts = {n: kwargs[n] for n in kwargs if PAST.match(n)}
    if not pasts:
        return kwargs
    from transformers import DynamicCache, EncoderDecoderCache

    rest = {n: v for n, v in kwargs.items() if n not in pasts}
    layers: dict[tuple[str | None, int], dict[str, object]] = {}
    for name, tensor in pasts.items():
        index, part, kind = PAST.match(name).groups()
        layers.setdefault((part, int(index)), {})[kind] = tensor
    config = getattr(model, "config", None)

    def cache(part: str | None):
        entries = sorted((i, kv) for (p, i), kv in layers.items() if p == part)
        return DynamicCache(ddp_cache_data=[(kv["key"], kv["value"]) for _, kv in entries], config=config)

    if any(part is not None for part, _ in layers):
        packed = EncoderDecoderCache(cache("decoder"), cache("encoder"))
    else:
        packed = cache(None)
    keyword = cache_keyword(model) or KEYWORDS[0]
    return rest | {keyword: packed, "use_cache": True}


def is_cache(value) -> bool:
    """True for a transformers cache object (transformers is only looked at once something imported it)."""
    module = sys.modules.get("transformers.cache_utils")
    return module is not None and isinstance(value, module.Cache)


def flatten(cache) -> list[tuple[str, object]]:
    """(name, tensor) of every key and value a cache holds, named ``present.*`` in the layout's order."""
    if hasattr(cache, "self_attention_cache"):  # EncoderDecoderCache
        pairs = []
        for i, (own, cross) in enumerate(zip(cache.self_attention_cache.layers, cache.cross_attention_cache.layers)):
            pairs += [(f"present.{i}.decoder.key", own.keys), (f"present.{i}.decoder.value", own.values)]
            pairs += [(f"present.{i}.encoder.key", cross.keys), (f"present.{i}.encoder.value", cross.values)]
        return pairs
    pairs = []
    for i, layer in enumerate(cache.layers):
        pairs += [(f"present.{i}.key", layer.keys), (f"present.{i}.value", layer.values)]
    return pairs
