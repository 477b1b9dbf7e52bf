"""Tiny models built offline from transformers configs: the demo fleet and the test suite use them."""

from __future__ import annotations

from pathlib import Path


def _configs() -> dict:
    from transformers import BertConfig, GPT2Config, LlamaConfig, ResNetConfig, T5Config, ViTConfig

    return {
        "tiny-bert": (
            "BertModel",
            BertConfig(
                vocab_size=128,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                max_position_embeddings=64,
            ),
        ),
        "tiny-gpt2": (
            "GPT2Model",
            GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=0, eos_token_id=0),
        ),
        "tiny-llama-lm": (  # the fleet exports it with its key/value cache (text-generation-with-past)
            "LlamaForCausalLM",
            LlamaConfig(
                vocab_size=128,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=64,
            ),
        ),
        "tiny-t5": (  # the fleet exports it as encoder + decoder with its cache (text2text-generation-with-past)
            "T5ForConditionalGeneration",
            T5Config(
                vocab_size=128,
                d_model=32,
                d_kv=8,
                d_ff=64,
                num_layers=2,
                num_heads=4,
                feed_forward_proj="gated-gelu",
                tie_word_embeddings=False,
                decoder_start_token_id=0,
                pad_token_id=0,
                eos_token_id=1,
            ),
        ),
        "tiny-vit": (
            "ViTModel",
            ViTConfig(
                image_size=32,
                patch_size=8,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
            ),
        ),
        "tiny-resnet": (
            "ResNetModel",
            ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"),
        ),
    }


DEMO_MODELS = ("tiny-bert", "tiny-gpt2", "tiny-llama-lm", "tiny-t5", "tiny-vit", "tiny-resnet")


def build_demo_models(directory: str | Path, names=DEMO_MODELS, seed: int = 0) -> dict[str, Path]:
    """Save the named tiny models (random weights, fixed seed) under `directory`; reuse ones already there."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    directory = Path(directory)
    configs = _configs()
    unknown = [n for n in names if n not in configs]
    if unknown:
        raise ValueError(f"unknown demo model {unknown[0]}: choose from {', '.join(configs)}")
    paths = {}
    for name in names:
        path = directory / name
        if not (path / "model.safetensors").is_file():
            class_name, config = configs[name]
            torch.manual_seed(seed)
            getattr(transformers, class_name)(config).save_pretrained(path)
        paths[name] = path
    return paths
