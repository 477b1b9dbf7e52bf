"""Encoder-decoders exported ready to generate: a directory of ``encoder_model.onnx`` and ``decoder_model.onnx``.

``text2text-generation-with-past`` (T5-, BART-style) and ``automatic-speech-recognition-with-past`` (Whisper: the
encoder takes ``input_features``, the decoder no ``encoder_attention_mask``) write optimum's two files, each
tagged with its own sidecar:

* ``encoder_model.onnx``: ``input_ids``, ``attention_mask`` -> ``last_hidden_state``;
* ``decoder_model.onnx``: ``input_ids`` (decoder ids), ``encoder_attention_mask``, ``encoder_hidden_states``,
  ``past_key_values.{i}.decoder.key`` / ``.value``, ``past_key_values.{i}.encoder.key`` / ``.value`` (declared, not
  read) -> ``logits``, ``present.{i}.decoder.key`` / ``.value``, ``present.{i}.encoder.key`` / ``.value``.

The first decoder step runs through the same file with decoder pasts of length 0. The model chooses at run time
whether to compute its cross-attention keys and values from the encoder's output or to reuse the cached ones, and
tracing freezes that choice; the file is traced with an empty cross-attention cache, so it always computes them
from ``encoder_hidden_states`` (two matmuls per layer over the encoder's length, per step) and outputs them as
``present.{i}.encoder.*``. It still declares ``past_key_values.{i}.encoder.key`` / ``.value`` inputs, as the layout
users' decode loops are written against has them (they feed each step's presents back): the graph does not read
them (:func:`declare_encoder_pasts`). optimum instead writes a second decoder (``decoder_with_past_model.onnx``)
that reads them and skips the recomputation, or merges both behind an ``If``; one file that is right at every step
is what we trade that for.

Each file is traced from a *part*: a module mirroring the model's children (the same instances, so tags are the
model's own, ``/T5ForConditionalGeneration/T5Stack.decoder/...``) whose forward runs one half of the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from .errors import BadInputError
from .inputs import InputSpec, TensorSpec

# task -> the task without a cache, named in the error when a model cannot export with one
TASKS = {
    "text2text-generation-with-past": "text2text-generation",
    "automatic-speech-recognition-with-past": "automatic-speech-recognition",  # Whisper: input_features in
}
PARTS = ("encoder", "decoder")
BATCH, ENCODER_SEQUENCE, SEQUENCE, PAST = 2, 16, 8, 8


def is_seq2seq(task: str | None) -> bool:
    return task in TASKS


def file_name(part: str) -> str:
    return f"{part}_model.onnx"


def part_paths(directory: str | os.PathLike) -> dict[str, Path]:
    """``{"encoder": DIR/encoder_model.onnx, "decoder": DIR/decoder_model.onnx}``."""
    return {part: Path(directory) / file_name(part) for part in PARTS}


def is_export_directory(path: str | os.PathLike) -> bool:
    """True for a directory holding both files of an encoder-decoder export."""
    return Path(path).is_dir() and all(p.is_file() for p in part_paths(path).values())


def check_config(config, task: str) -> None:
    """Before loading: a one-line error for a config that is no encoder-decoder, naming the task that works."""
    if config is None:
        raise BadInputError(f"--task {task} needs a transformers model saved with save_pretrained, not a factory")
    name = type(config).__name__.removesuffix("Config")
    if not getattr(config, "is_encoder_decoder", False):
        raise BadInputError(f"{name} is no encoder-decoder: export it with --task text-generation-with-past")
    if task != (wanted := task_for(config)):
        raise BadInputError(f"{name} takes {'audio' if 'speech' in wanted else 'text'}: export it with --task {wanted}")


def task_for(config) -> str:
    """The with-past task of an encoder-decoder config: speech (mel bins) or text."""
    speech = getattr(config, "num_mel_bins", None)
    return "automatic-speech-recognition-with-past" if speech else "text2text-generation-with-past"


def is_audio(model) -> bool:
    """True for a speech encoder (Whisper's ``input_features``, no attention mask): its inputs and the decoder's
    differ from a text encoder-decoder's."""
    return getattr(model, "main_input_name", "input_ids") == "input_features"


def _encoder_forward(self, input_ids, attention_mask):
    return self._whole.get_encoder()(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)


def _audio_encoder_forward(self, input_features):
    return self._whole.get_encoder()(input_features=input_features, return_dict=True)


def _decoder_forward(self, input_ids, encoder_hidden_states, encoder_attention_mask=None, past_key_values=None, **_):
    from transformers.modeling_outputs import BaseModelOutput

    from .kv_cache import cache_keyword

    model = self._whole
    out = type(model).forward(
        model,
        decoder_input_ids=input_ids,
        attention_mask=encoder_attention_mask,
        encoder_outputs=BaseModelOutput(last_hidden_state=encoder_hidden_states),
        use_cache=True,
        return_dict=True,
        **{cache_keyword(model) or "cache": past_key_values},
    )
    return {"logits": out.logits, "past_key_values": out.past_key_values}


def part_module(model: nn.Module, part: str) -> nn.Module:
    """A module whose children are `model`'s (the same instances) and whose forward runs its `part`; its class
    has the model's name, so the tags are the model's own."""
    cls = type(model)
    encoder = _audio_encoder_forward if is_audio(model) else _encoder_forward
    forward = {"encoder": encoder, "decoder": _decoder_forward}[part]
    attrs = {"forward": forward, "__module__": cls.__module__, "__qualname__": cls.__qualname__}
    module = type(cls.__name__, (nn.Module,), attrs)()
    for name, child in model.named_children():
        module.add_module(name, child)
    object.__setattr__(module, "_whole", model)  # not a child: its modules are already ours
    module.config = model.config
    return module.eval()


def empty_cache(config):
    """An encoder-decoder cache of nothing yet: the decoder computes the cross-attention cache itself."""
    from transformers import DynamicCache, EncoderDecoderCache

    return EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))


def cache_shapes(model) -> list[tuple[int, int]]:
    """(kv_heads, head_dim) of each decoder layer's self-attention cache, read from one real decoder step
    (configs name them differently: T5's ``num_heads``/``d_kv``, BART's ``decoder_attention_heads``)."""
    import torch

    config = model.config
    start = config.decoder_start_token_id or 0
    hidden = getattr(config, "d_model", None) or config.hidden_size
    mask = {} if is_audio(model) else {"attention_mask": torch.ones(1, 2, dtype=torch.long)}
    with torch.inference_mode():
        out = model(
            decoder_input_ids=torch.full((1, 1), start),
            encoder_outputs=(torch.zeros(1, 2, hidden),),
            use_cache=True,
            **mask,
            **{_keyword(model): empty_cache(config)},
        )
    cache = out.past_key_values.self_attention_cache
    return [(layer.keys.shape[1], layer.keys.shape[3]) for layer in cache.layers]


def _keyword(model) -> str:
    from .kv_cache import cache_keyword

    return cache_keyword(model) or "cache"


def example_spec(model, part: str) -> InputSpec:
    """The example inputs of one file: 16 encoder tokens; for the decoder, 8 new tokens after a past of 8 (all
    even and >= 4, so validation's halved second shape stays consistent)."""
    config = model.config
    vocab = config.vocab_size
    batch_enc = {0: "batch", 1: "encoder_sequence"}
    mask = TensorSpec(shape=[BATCH, ENCODER_SEQUENCE], dtype="int64", dynamic_axes=batch_enc, low=1, high=2)
    audio = is_audio(model)
    if part == "encoder" and audio:  # Whisper's frames are fixed by its config: only the batch is dynamic
        frames = audio_frames(model)
        features = TensorSpec(shape=[BATCH, config.num_mel_bins, frames], dtype="float32", dynamic_axes={0: "batch"})
        return InputSpec({"input_features": features})
    if part == "encoder":
        ids = TensorSpec(shape=[BATCH, ENCODER_SEQUENCE], dtype="int64", dynamic_axes=batch_enc, high=vocab)
        return InputSpec({"input_ids": ids, "attention_mask": mask})
    hidden = getattr(config, "d_model", None) or config.hidden_size
    specs = {
        "input_ids": TensorSpec(
            shape=[BATCH, SEQUENCE], dtype="int64", dynamic_axes={0: "batch", 1: "sequence"}, high=vocab
        )
    }
    if not audio:
        specs["encoder_attention_mask"] = mask
    specs["encoder_hidden_states"] = TensorSpec(
        shape=[BATCH, ENCODER_SEQUENCE, hidden], dtype="float32", dynamic_axes=batch_enc
    )
    for i, (heads, head_dim) in enumerate(cache_shapes(model)):
        for kind in ("key", "value"):
            specs[f"past_key_values.{i}.decoder.{kind}"] = TensorSpec(
                shape=[BATCH, heads, PAST, head_dim], dtype="float32", dynamic_axes={0: "batch", 2: "past_sequence"}
            )
    return InputSpec(specs)


def audio_frames(model) -> int:
    """The number of mel frames a speech encoder takes (Whisper: twice ``max_source_positions``)."""
    encoder = model.get_encoder()
    stride = encoder.conv1.stride[0] * encoder.conv2.stride[0]
    return model.config.max_source_positions * stride


def loaded_part(loaded, part: str):
    """`loaded` as the LoadedModel of one file: its part module, the same config."""
    from .loading import LoadedModel

    return LoadedModel(part_module(loaded.model, part), loaded.config, positional=False)


@dataclass
class Seq2SeqExport:
    """Both files of an encoder-decoder export."""

    directory: Path
    parts: dict[str, object]  # part -> export.ExportResult
    seconds: float


def check_output_directory(output: str | os.PathLike, input_spec=None) -> Path:
    """Fail early, before any work, for an output that cannot be the export's directory."""
    output = Path(output)
    if input_spec is not None:
        raise BadInputError(
            "--input-spec does not apply to an encoder-decoder with its cache: each file's inputs come from the config"
        )
    if output.suffix == ".onnx" or output.is_file():
        raise BadInputError(
            f"output {output} must be a directory for an encoder-decoder: it gets {file_name('encoder')} and "
            f"{file_name('decoder')}"
        )
    if not output.parent.is_dir():
        raise BadInputError(f"output directory {output.parent} does not exist: create it first")
    return output


def export_seq2seq(source, output: Path, loaded, **options) -> Seq2SeqExport:
    """Export both files of `loaded` into the directory `output` (created if missing). `options` are
    export_loaded's (strategies, opset, clean, ...)."""
    import time

    from .export import check_output, export_loaded
    from .inputs import inputs_from_spec

    start = options.get("start") or time.perf_counter()
    output.mkdir(exist_ok=True)
    results = {}
    for part, path in part_paths(output).items():
        check_output(path)
        part_loaded = loaded_part(loaded, part)
        inputs = inputs_from_spec(example_spec(loaded.model, part))
        results[part] = export_loaded(source, part_loaded, inputs, path, **(options | {"start": None, "part": part}))
        if part == "decoder":
            declare_encoder_pasts(path)
    return Seq2SeqExport(output, results, round(time.perf_counter() - start, 3))


def unread_inputs(session, tensors: dict) -> dict:
    """Empty values for the encoder-past inputs a decoder file declares and never reads (:func:`declare_encoder_pasts`)
    that `tensors` lack: a check of the file against the model feeds them as a decode loop's first step does."""
    import numpy as np

    from .kv_cache import PAST

    batch = next((t.shape[0] for t in tensors.values() if getattr(t, "ndim", 0)), 1)
    return {
        i.name: np.zeros((batch, i.shape[1], 0, i.shape[3]), dtype=np.float32)
        for i in session.get_inputs()
        if i.name not in tensors and (m := PAST.match(i.name)) and m.group(2) == "encoder"
    }


def declare_encoder_pasts(path: Path) -> None:
    """Give the decoder file ``past_key_values.{i}.encoder.*`` inputs shaped like its ``present.{i}.encoder.*``
    outputs (batch and encoder length dynamic). No node reads them: the cross-attention cache is recomputed from
    ``encoder_hidden_states`` at every step, so whatever a decode loop feeds there (empty at the first step, the
    presents after) gives the same, right, logits."""
    import onnx

    from . import onnx_io

    model = onnx.load(str(path))
    declared = {i.name for i in model.graph.input}
    for output in list(model.graph.output):
        name = output.name
        if not (name.startswith("present.") and ".encoder." in name):
            continue
        past = onnx.ValueInfoProto()
        past.CopyFrom(output)
        past.name = "past_key_values." + name.removeprefix("present.")
        dims = past.type.tensor_type.shape.dim
        for axis, symbol in ((0, "batch"), (2, "encoder_sequence")):
            dims[axis].Clear()
            dims[axis].dim_param = symbol
        # heads and head size as the layer's self-attention past has them (the exporter may leave them symbolic)
        own = next(i for i in model.graph.input if i.name == past.name.replace(".encoder.", ".decoder."))
        for axis in (1, 3):
            dims[axis].CopyFrom(own.type.tensor_type.shape.dim[axis])
        if past.name not in declared:
            model.graph.input.append(past)
    onnx_io.save_atomic(model, path)
