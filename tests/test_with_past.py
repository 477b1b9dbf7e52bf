"""Decoders exported with a key/value cache: optimum's layout, 100% tags, prefill with an empty past, and
validation by greedy decoding against transformers' generate (GPT-2-, LLaMA-, Qwen2- and Qwen3-MoE-style tiny
models)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from modelexport.errors import BadInputError
from modelexport.export import export_model
from modelexport.validate import ort_session, validate
from tests.conftest import run_cli

TASK = "text-generation-with-past"


def _configs():
    from transformers import GPT2Config, LlamaConfig, Qwen2Config, Qwen3MoeConfig

    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, vocab_size=100)
    return {
        "gpt2": ("GPT2LMHeadModel", GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=64)),
        "llama": (
            "LlamaForCausalLM",
            LlamaConfig(**small, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64),
        ),
        "qwen2": (
            "Qwen2ForCausalLM",
            Qwen2Config(**small, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64),
        ),
        "qwen3_moe": (  # routed experts: histc and grouped matmul lowered (modelexport/lowerings.py)
            "Qwen3MoeForCausalLM",
            Qwen3MoeConfig(
                **small,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=64,
                num_experts=4,
                num_experts_per_tok=2,
                moe_intermediate_size=16,
            ),
        ),
    }


FAMILIES = ("gpt2", "llama", "qwen2", "qwen3_moe")


@pytest.fixture(scope="session")
def decoder_dirs(tmp_path_factory):
    import transformers

    out = tmp_path_factory.mktemp("decoders")
    dirs = {}
    for name, (cls, config) in _configs().items():
        torch.manual_seed(0)
        getattr(transformers, cls)(config).save_pretrained(out / name)
        dirs[name] = out / name
    return dirs


@pytest.fixture(scope="session")
def with_past(decoder_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("with-past")
    return {name: export_model(str(path), out / f"{name}.onnx", task=TASK) for name, path in decoder_dirs.items()}


@pytest.mark.parametrize("name", FAMILIES)
def test_layout_is_optimums_and_every_node_is_tagged(with_past, name):
    result = with_past[name]
    model = onnx.load(str(result.onnx_path), load_external_data=False)
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    outputs = [o.name for o in model.graph.output]
    pasts = [f"past_key_values.{i}.{kind}" for i in range(2) for kind in ("key", "value")]
    assert list(inputs) == ["input_ids", "attention_mask", "position_ids", *pasts]
    assert outputs == ["logits", *[p.replace("past_key_values", "present") for p in pasts]]
    assert inputs["input_ids"] == ["batch", "sequence"]
    assert inputs["past_key_values.0.key"][0::2] == ["batch", "past_sequence"]
    assert result.stats.coverage == 1.0 and result.stats.tagged_nodes == result.stats.total_nodes
    layer = {
        "gpt2": "GPT2Block.0/GPT2Attention",
        "llama": "LlamaDecoderLayer.0/LlamaAttention",
        "qwen2": "Qwen2DecoderLayer.0/Qwen2Attention",
        "qwen3_moe": "Qwen3MoeDecoderLayer.0/Qwen3MoeAttention",
    }[name]
    attention = [t for t, info in result.sidecar["tags"].items() if t.endswith(layer)]
    assert attention and result.sidecar["tags"][attention[0]]["nodes"] > 0, "the attention's cache ops are its own"
    assert not any("Wrapper" in t for t in result.sidecar["tags"]), "our wrapper is no tag segment"
    assert result.sidecar["options"]["task"] == TASK


@pytest.mark.parametrize("name", FAMILIES)
def test_prefill_with_an_empty_past_matches_the_model_without_cache(with_past, decoder_dirs, name):
    import transformers

    session = ort_session(with_past[name].onnx_path)
    model = getattr(transformers, _configs()[name][0]).from_pretrained(decoder_dirs[name]).eval()
    ids = torch.randint(0, 100, (3, 5), generator=torch.Generator().manual_seed(1))
    feeds = {"input_ids": ids.numpy(), "attention_mask": np.ones((3, 5), np.int64)}
    feeds["position_ids"] = np.tile(np.arange(5), (3, 1))
    for i in session.get_inputs():
        if i.name.startswith("past_key_values"):
            feeds[i.name] = np.zeros((3, i.shape[1], 0, i.shape[3]), np.float32)
    logits, *present = session.run(None, feeds)
    with torch.inference_mode():
        want = model(input_ids=ids, use_cache=False).logits.numpy()
    print(f"{name}: prefill max |ort - torch| {np.abs(logits - want).max():.2g}")
    assert np.abs(logits - want).max() < 1e-4
    assert present[0].shape[0] == 3 and present[0].shape[2] == 5  # the cache grew by the prompt


@pytest.mark.parametrize("name", FAMILIES)
def test_greedy_decoding_matches_generate(with_past, name):
    report = validate(with_past[name].onnx_path)  # task and model from the sidecar
    print(f"{name}: {report.summary()}")
    assert report.passed, report.summary()
    decode = report.decode
    assert decode is not None and decode.passed
    assert decode.tokens == decode.reference_tokens and len(decode.tokens) == 2
    assert all(len(row) == 16 for row in decode.tokens)
    assert len(set(decode.prompt_lengths)) == 2  # two prompts of different lengths, left-padded
    steps = [s for s in decode.steps if s.output == "logits"]
    assert len(steps) == 16 and max(s.max_abs_diff for s in steps) < 1e-4
    assert {c.case for c in report.checks} == {"export", "resized"}  # the per-output checks ran with pasts too


def test_a_perturbed_weight_fails_decoding_with_exit_1(with_past, tmp_path):
    result = with_past["llama"]
    model = onnx.load(str(result.onnx_path))
    target = next(t for t in model.graph.initializer if "layers.1.mlp.down_proj" in t.name or "MatMul" in t.name)
    array = numpy_helper.to_array(target).copy()
    array.flat[0] += 0.5
    target.CopyFrom(numpy_helper.from_array(array, target.name))
    path = tmp_path / "perturbed.onnx"
    onnx.save(model, str(path))
    shutil.copy(result.sidecar_path, tmp_path / "perturbed.hierarchy.json")
    report = validate(path)
    print(f"perturbed {target.name}: {report.summary()}")
    assert report.decode is not None and not report.decode.passed
    bad = next(s for s in report.decode.steps if not s.passed)
    assert bad.output in ("logits", "tokens") and bad.step == 0
    proc = run_cli("validate", str(path), "--json", str(tmp_path / "v.json"))
    assert proc.returncode == 1, proc.stderr
    assert "validation failed" in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert json.loads((tmp_path / "v.json").read_text())["decode"]["passed"] is False


def test_text_generation_without_cache_is_unchanged(decoder_dirs, tmp_path):
    result = export_model(str(decoder_dirs["llama"]), tmp_path / "plain.onnx", task="text-generation")
    names = [i.name for i in onnx.load(str(result.onnx_path), load_external_data=False).graph.input]
    assert not any(n.startswith("past_key_values") for n in names)
    assert result.sidecar["outputs"] == ["logits"]
    assert validate(result.onnx_path).decode is None


def test_an_encoder_decoder_is_refused_naming_the_task_that_works(tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration

    T5ForConditionalGeneration(
        T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2, decoder_start_token_id=0)
    ).save_pretrained(tmp_path / "t5")
    with pytest.raises(BadInputError, match="encoder-decoder: export it with --task text2text-generation-with-past"):
        export_model(str(tmp_path / "t5"), tmp_path / "t5.onnx", task=TASK)
    assert not (tmp_path / "t5.onnx").exists()


def test_profile_reports_prefill_and_decode_apart(with_past, tmp_path):
    from modelexport.profile import profile

    result = profile(with_past["llama"].onnx_path, warmup=1, iterations=3, profile_runs=2, output_dir=tmp_path)
    data = json.loads((tmp_path / "profile.json").read_text())
    prefill, decode = data["phases"]["prefill"], data["phases"]["decode"]
    assert prefill["inputs"]["input_ids"] == [1, 32] and prefill["inputs"]["past_key_values.0.key"][2] == 0
    assert decode["inputs"]["input_ids"] == [1, 1] and decode["inputs"]["past_key_values.0.key"][2] == 32
    for phase in (prefill, decode):
        assert phase["attributed_fraction"] >= 0.99
        assert any(
            m["tag"].endswith("LlamaDecoderLayer.0/LlamaAttention") and m["self_ms"] > 0 for m in phase["modules"]
        )
    assert result.inputs == decode["inputs"]  # the headline figures are the decode step's
    markdown = (tmp_path / "profile.md").read_text()
    assert "## Phase: prefill (32 new tokens after a past of 0)" in markdown
    assert "## Phase: decode (1 new tokens after a past of 32)" in markdown
    for name in ("prefill", "decode"):  # a plot per phase, beside the headline one (the decode step's)
        assert (tmp_path / f"modules.{name}.png").read_bytes().startswith(b"\x89PNG")
        assert result.files[f"plot_{name}"] == str(tmp_path / f"modules.{name}.png")


def test_dynamo_exports_with_past_and_decodes_like_generate(decoder_dirs, tmp_path):
    """The attention mask's axis is past + sequence, no Dim name of its own: torch.export derives it."""
    result = export_model(str(decoder_dirs["llama"]), tmp_path / "dynamo.onnx", task=TASK, strategy="dynamo")
    assert result.strategy == "dynamo" and result.stats.coverage == 1.0
    model = onnx.load(str(result.onnx_path), load_external_data=False)
    mask = next(i for i in model.graph.input if i.name == "attention_mask")
    assert mask.type.tensor_type.shape.dim[1].dim_param, "the mask's length stays dynamic"
    report = validate(result.onnx_path)
    assert report.passed, report.summary()
    assert report.decode.tokens == report.decode.reference_tokens
