"""Example inputs derived from the config and forward signature of models of every modality (no export)."""

from __future__ import annotations

import pytest

from tests import family_models as fm


def _spec(entry):
    import torch
    import transformers

    class_name, make_config, _task = entry
    torch.manual_seed(0)
    model = getattr(transformers, class_name)(make_config()).eval()
    from modelexport.inputs import spec_from_config

    return {name: ts.shape for name, ts in spec_from_config(model, model.config).root.items()}, model


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # a dual encoder: text sized by text_config, images by vision_config (32 px, not 224)
        ("clip", {"input_ids": [2, 16], "pixel_values": [2, 3, 32, 32], "attention_mask": [2, 16]}),
        ("siglip", {"input_ids": [2, 16], "pixel_values": [2, 3, 32, 32], "attention_mask": [2, 16]}),
        # a spectrogram: [batch, max_length frames, num_mel_bins], not a waveform
        ("ast", {"input_values": [2, 64, 32]}),
        # Speech2Text: frames first, input_feat_per_channel features (Whisper has mel bins first)
        (
            "speech_to_text",
            {"input_features": [2, 64, 16], "decoder_input_ids": [2, 16], "decoder_attention_mask": [2, 16]},
        ),
        (
            "time_series_transformer",  # past = context 8 + largest lag 3; 2 time features; 4 steps ahead
            {
                "past_values": [2, 11],
                "past_time_features": [2, 11, 2],
                "past_observed_mask": [2, 11],
                "static_categorical_features": [2, 1],
                "static_real_features": [2, 1],
                "future_values": [2, 4],
                "future_time_features": [2, 4, 2],
            },
        ),
        ("patchtst", {"past_values": [2, 32, 3], "past_observed_mask": [2, 32, 3]}),
        ("wav2vec2", {"input_values": [2, 16000]}),
    ],
)
def test_inputs_follow_the_config_of_each_modality(name, expected):
    shapes, _model = _spec(fm.FAMILIES[name])
    assert shapes == expected


def test_multiple_choice_ids_have_a_choices_axis():
    shapes, _model = _spec(fm.TASK_MODELS["multiple-choice"])
    assert shapes == {"input_ids": [2, 2, 16], "attention_mask": [2, 2, 16], "token_type_ids": [2, 2, 16]}


def test_ids_of_a_multimodal_model_fit_its_text_vocabulary():
    from modelexport.errors import BadInputError
    from modelexport.inputs import check_spec_fits, parse_input_spec

    _shapes, model = _spec(fm.FAMILIES["clip"])
    spec = parse_input_spec({"input_ids": {"shape": [1, 8], "dtype": "int64", "high": 1000}})
    with pytest.raises(BadInputError, match="vocab_size is 96"):
        check_spec_fits(spec, model.config)


def test_an_input_that_cannot_be_derived_names_itself_and_the_spec_entry_to_write():
    import torch
    from transformers import BertConfig

    from modelexport.errors import BadInputError
    from modelexport.inputs import spec_from_config

    class Boxes(torch.nn.Module):
        def forward(self, input_ids, boxes):
            return input_ids * boxes

    with pytest.raises(BadInputError) as caught:
        spec_from_config(Boxes(), BertConfig(vocab_size=50))
    message = str(caught.value)
    assert "forward parameter 'boxes'" in message and "\n" not in message
    assert '--input-spec FILE, e.g. {"input_ids": {"shape": [2, 16], "dtype": "int64"' in message
    assert '"boxes": {"shape": [2, "..."], "dtype": "float32"' in message
