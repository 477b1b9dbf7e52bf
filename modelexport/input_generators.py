"""Example-input generators, one per modality, driven by a transformers config and the ``forward`` parameters.

Each generator takes ``(config, name, model)`` and returns the :class:`~modelexport.inputs.TensorSpec` of that
forward parameter, or None when the parameter is not its modality. Multimodal models keep each modality's sizes
in a nested config (``text_config``, ``vision_config``, ``audio_config``); a generator reads its own part
(:func:`part`), so a CLIP-style dual encoder gets token ids sized by its text config and images sized by its
vision config. Nothing here looks at model names: the layout of an input follows from the config keys its
family defines (``num_mel_bins`` + ``max_length``: a spectrogram; ``input_feat_per_channel``: Speech2Text's
frames x features; ``context_length``: a time series).
"""

from __future__ import annotations

from .inputs import TensorSpec

BATCH, SEQUENCE = 2, 16
FRAMES = 64  # feature frames of speech encoders (subsampled 4x by Speech2Text's convolutions)
SAMPLES = 16000  # one second of 16 kHz waveform

NESTED = {"text": "text_config", "vision": "vision_config", "audio": "audio_config"}


def part(config, modality: str):
    """The config that sizes `modality`'s inputs: its nested config (``vision_config``...) if any, else `config`."""
    nested = getattr(config, NESTED[modality], None)
    return nested if nested is not None and not isinstance(nested, dict) else config


def config_size(config, *names: str) -> int | None:
    """The first of the config's `names` that is a positive integer (XLNet says -1 for no limit), else None."""
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def is_multiple_choice(model) -> bool:
    """A multiple-choice head takes ``input_ids`` as [batch, num_choices, sequence] (transformers' auto mapping)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES

    return type(model).__name__ in MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES.values()


def text(config, name: str, model) -> TensorSpec | None:
    config = part(config, "text")
    vocab = config_size(config, "vocab_size", "num_hash_buckets")  # character models hash ids (code points)
    seq = min(SEQUENCE, config_size(config, "max_position_embeddings", "n_positions") or SEQUENCE)
    decoder = name.startswith("decoder_")
    shape, axes = [BATCH, seq], {0: "batch", 1: "decoder_sequence" if decoder else "sequence"}
    if not decoder and model is not None and is_multiple_choice(model):
        shape, axes = [BATCH, 2, seq], {0: "batch", 1: "num_choices", 2: "sequence"}
    if name in ("input_ids", "decoder_input_ids") and vocab:
        return TensorSpec(shape=shape, dtype="int64", dynamic_axes=axes, low=0, high=vocab)
    if name in ("attention_mask", "decoder_attention_mask") and vocab:  # text masks; a ViT takes none
        return TensorSpec(shape=shape, dtype="int64", dynamic_axes=axes, low=1, high=2)
    if name == "token_type_ids" and config_size(config, "type_vocab_size"):
        return TensorSpec(shape=shape, dtype="int64", dynamic_axes=axes, low=0, high=1)
    return None


def vision(config, name: str, model) -> TensorSpec | None:
    if name != "pixel_values":
        return None
    config = part(config, "vision")
    size = getattr(config, "image_size", None) or 224
    height, width = (size, size) if isinstance(size, int) else tuple(size)[:2]
    channels = config_size(config, "num_channels") or 3
    return TensorSpec(shape=[BATCH, channels, height, width], dtype="float32", dynamic_axes={0: "batch"})


def audio(config, name: str, model) -> TensorSpec | None:
    config = part(config, "audio")
    mels = config_size(config, "num_mel_bins")
    if name == "input_values":
        length = config_size(config, "max_length")
        if mels and length:  # a spectrogram transformer (AST): [batch, frames, mel bins], frames fixed by positions
            return TensorSpec(shape=[BATCH, length, mels], dtype="float32", dynamic_axes={0: "batch"})
        return TensorSpec(shape=[BATCH, SAMPLES], dtype="float32", dynamic_axes={0: "batch", 1: "samples"})
    if name != "input_features":
        return None
    per_channel = config_size(config, "input_feat_per_channel")
    features = (
        per_channel * (config_size(config, "input_channels") or 1)
        if per_channel
        else config_size(config, "feature_projection_input_dim", "feature_size")
    )
    if features:  # frames first (Speech2Text, conformers): [batch, frames, features]
        return TensorSpec(shape=[BATCH, FRAMES, features], dtype="float32", dynamic_axes={0: "batch", 1: "frames"})
    # mel bins first (Whisper): [batch, mel bins, 2 x max_source_positions], fixed by the encoder's positions
    frames = 2 * (config_size(config, "max_source_positions") or 1500)
    return TensorSpec(shape=[BATCH, mels or 80, frames], dtype="float32", dynamic_axes={0: "batch"})


def time_series(config, name: str, model) -> TensorSpec | None:
    """Forecasting models: past/future values and time features, sized by context and prediction lengths."""
    context = config_size(config, "context_length")
    if context is None or not name.startswith(("past_", "future_", "static_")):
        return None
    past = context + max(getattr(config, "lags_sequence", None) or [0])
    future = config_size(config, "prediction_length") or 1
    channels = config_size(config, "input_size", "num_input_channels") or 1
    time_features = config_size(config, "num_time_features")
    axes = {0: "batch"}
    if config_size(config, "num_input_channels"):  # PatchTST-style: [batch, time, channels] even for one channel
        values = [BATCH, past, channels]
    else:
        values = [BATCH, past] if channels == 1 else [BATCH, past, channels]
    later = [BATCH, future, *values[2:]]
    if name in ("past_values", "future_values"):
        return TensorSpec(shape=values if name == "past_values" else later, dtype="float32", dynamic_axes=axes)
    if name in ("past_observed_mask", "future_observed_mask"):
        return TensorSpec(shape=values if name.startswith("past") else later, dtype="bool", dynamic_axes=axes)
    if name in ("past_time_features", "future_time_features") and time_features:
        steps = past if name.startswith("past") else future
        return TensorSpec(shape=[BATCH, steps, time_features], dtype="float32", dynamic_axes=axes)
    categorical = config_size(config, "num_static_categorical_features")
    if name == "static_categorical_features" and categorical:
        high = min(getattr(config, "cardinality", None) or [1])
        return TensorSpec(shape=[BATCH, categorical], dtype="int64", dynamic_axes=axes, low=0, high=max(high, 1))
    real = config_size(config, "num_static_real_features")
    if name == "static_real_features" and real:
        return TensorSpec(shape=[BATCH, real], dtype="float32", dynamic_axes=axes)
    return None


GENERATORS = (text, vision, audio, time_series)
# The main input of each modality: an optional one is filled unless its modality already has one.
PRIMARY = {
    "input_ids": "text",
    "pixel_values": "vision",
    "input_values": "audio",
    "input_features": "audio",
    "past_values": "time",
}
