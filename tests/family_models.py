"""Tiny models of many families and task heads, built offline from transformers config classes.

Each entry is (class name, config factory, task): the class is what the model is saved as (``architectures`` in
its config.json), the task what ``--task`` is passed on export (None: the class it was saved as, ``auto``: read
from ``architectures``). Sizes are as small as each family's own checks allow, so a full export + validate of
one model takes about a second.
"""

from __future__ import annotations

from pathlib import Path

TEXT = dict(
    vocab_size=96,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=64,
)
VISION = dict(
    image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
)


def _bert(**extra):
    from transformers import BertConfig

    return BertConfig(**TEXT, **extra)


def _clip():
    from transformers import CLIPConfig

    return CLIPConfig(text_config=dict(TEXT), vision_config=dict(VISION), projection_dim=16)


def _siglip():
    from transformers import SiglipConfig

    return SiglipConfig(text_config=dict(TEXT), vision_config=dict(VISION))


def _ast(**extra):
    from transformers import ASTConfig

    return ASTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_length=64,
        num_mel_bins=32,
        patch_size=16,
        frequency_stride=8,
        time_stride=8,
        **extra,
    )


def _speech2text():
    from transformers import Speech2TextConfig

    return Speech2TextConfig(
        vocab_size=96,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=64,
        max_target_positions=64,
        input_feat_per_channel=16,
        conv_channels=32,
        num_conv_layers=2,
    )


def _time_series():
    from transformers import TimeSeriesTransformerConfig

    return TimeSeriesTransformerConfig(
        prediction_length=4,
        context_length=8,
        lags_sequence=[1, 2, 3],
        num_time_features=2,
        num_static_categorical_features=1,
        cardinality=[3],
        embedding_dimension=[2],
        num_static_real_features=1,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
    )


def _patchtst():
    from transformers import PatchTSTConfig

    return PatchTSTConfig(
        num_input_channels=3,
        context_length=32,
        patch_length=8,
        patch_stride=8,
        prediction_length=4,
        d_model=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        ffn_dim=32,
    )


def _detr(d_model: int = 16, heads: int = 2):
    from transformers import DetrConfig, ResNetConfig

    backbone = ResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 16, 16, 16],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        out_features=["stage1", "stage2", "stage3", "stage4"],  # the mask head reads three of them
    )
    return DetrConfig(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config=backbone,
        d_model=d_model,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_queries=5,
        num_labels=3,
    )


def _detr_segmentation():
    return _detr(d_model=64, heads=8)  # the mask head: d_model + heads and d_model / 16 in groups of 8


def _segformer():
    from transformers import SegformerConfig

    return SegformerConfig(
        image_size=32,
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[8, 16],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=16,
        num_labels=3,
    )


def _cohere():
    from transformers import CohereConfig

    return CohereConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def _wav2vec2():
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(
        vocab_size=32,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        num_labels=3,
    )


def _t5():
    from transformers import T5Config

    return T5Config(vocab_size=96, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2, decoder_start_token_id=0)


def _vit():
    from transformers import ViTConfig

    return ViTConfig(**VISION, num_labels=3)


DECODER = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=64,
)
ROUTED = dict(num_experts_per_tok=2)  # of 4 experts: every token's pair sorted, counted and grouped


def _qwen3_moe():
    from transformers import Qwen3MoeConfig

    return Qwen3MoeConfig(**DECODER, **ROUTED, num_key_value_heads=1, num_experts=4, moe_intermediate_size=16)


def _deepseek_v3():
    from transformers import DeepseekV3Config

    return DeepseekV3Config(
        **DECODER,
        **ROUTED,
        n_routed_experts=4,
        n_shared_experts=1,
        moe_intermediate_size=16,
        n_group=2,
        topk_group=1,
        first_k_dense_replace=1,  # one dense layer, one routed
        kv_lora_rank=16,
        q_lora_rank=16,
        qk_rope_head_dim=8,
        qk_nope_head_dim=8,
        v_head_dim=16,
    )


def _mixtral():
    from transformers import MixtralConfig

    return MixtralConfig(**DECODER, **ROUTED, num_key_value_heads=1, num_local_experts=4)


def _gpt_oss():
    from transformers import GptOssConfig

    return GptOssConfig(
        **DECODER,
        **ROUTED,
        num_key_value_heads=1,
        num_local_experts=4,
        head_dim=16,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
    )


def _big_bird():
    from transformers import BigBirdConfig

    # block-sparse from 16 tokens on ((5 + 2 x 1 random) blocks of 2 = 14): the export shape is sparse
    return BigBirdConfig(**TEXT | dict(max_position_embeddings=128), block_size=2, num_random_blocks=1)


# name -> (class saved as, config factory, task passed on export)
FAMILIES = {
    "clip": ("CLIPModel", _clip, None),
    "siglip": ("SiglipModel", _siglip, None),
    "ast": ("ASTModel", _ast, None),
    "speech_to_text": ("Speech2TextModel", _speech2text, None),
    "time_series_transformer": ("TimeSeriesTransformerModel", _time_series, None),
    "patchtst": ("PatchTSTModel", _patchtst, None),
    "detr": ("DetrModel", _detr, None),
    "segformer": ("SegformerModel", _segformer, None),
    "cohere": ("CohereModel", _cohere, None),
    "wav2vec2": ("Wav2Vec2Model", _wav2vec2, None),
    # mixture of experts: histc and grouped matmul (modelexport/lowerings.py)
    "qwen3_moe": ("Qwen3MoeModel", _qwen3_moe, None),
    "deepseek_v3": ("DeepseekV3Model", _deepseek_v3, None),
    "mixtral": ("MixtralModel", _mixtral, None),
    "gpt_oss": ("GptOssModel", _gpt_oss, None),
}

# exported at fixed shapes only: its traced graph is right at one sequence length (test_families.py)
FIXED_SHAPE = {"big_bird": ("BigBirdModel", _big_bird, None)}

# name -> (class saved as, config factory, task): one tiny model per task head
TASK_MODELS = {
    "feature-extraction": ("BertModel", _bert, "feature-extraction"),
    "fill-mask": ("BertForMaskedLM", _bert, "fill-mask"),
    "text-classification": ("BertForSequenceClassification", _bert, "text-classification"),
    "token-classification": ("BertForTokenClassification", _bert, "token-classification"),
    "question-answering": ("BertForQuestionAnswering", _bert, "question-answering"),
    "multiple-choice": ("BertForMultipleChoice", _bert, "multiple-choice"),
    "text-generation": ("CohereForCausalLM", _cohere, "text-generation"),
    "text2text-generation": ("T5ForConditionalGeneration", _t5, "text2text-generation"),
    "image-classification": ("ViTForImageClassification", _vit, "image-classification"),
    "object-detection": ("DetrForObjectDetection", _detr, "object-detection"),
    "semantic-segmentation": ("SegformerForSemanticSegmentation", _segformer, "semantic-segmentation"),
    "image-segmentation": ("DetrForSegmentation", _detr_segmentation, "image-segmentation"),
    "audio-classification": ("ASTForAudioClassification", _ast, "audio-classification"),
    "automatic-speech-recognition": ("Wav2Vec2ForCTC", _wav2vec2, "automatic-speech-recognition"),
    "zero-shot-image-classification": ("CLIPModel", _clip, "zero-shot-image-classification"),
    "sentence-embeddings": ("BertModel", _bert, "sentence-embeddings"),
}


def build(directory: str | Path, name: str, entry: tuple, seed: int = 0) -> Path:
    """Save one tiny model (random weights, fixed seed) under `directory` / `name`; reuse one already there."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    path = Path(directory) / name
    if not (path / "model.safetensors").is_file():
        class_name, make_config, _task = entry
        torch.manual_seed(seed)
        getattr(transformers, class_name)(make_config()).save_pretrained(path)
    return path
