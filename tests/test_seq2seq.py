"""Encoder-decoders exported with their cache: a directory of encoder_model.onnx and decoder_model.onnx in optimum's
layout, each 100% tagged with its own sidecar, and a greedy decode loop over the two files (empty decoder pasts at
the first step) that reproduces generate (T5 v1.1-, BART- and Whisper-style tiny models)."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest
import torch
from onnx import numpy_helper

from modelexport.errors import BadInputError
from modelexport.export import export_model
from modelexport.validate import validate
from tests.conftest import run_cli

TASK = "text2text-generation-with-past"
FAMILIES = ("t5", "bart", "whisper")
TASKS = {"whisper": "automatic-speech-recognition-with-past"}


def _configs():
    from transformers import BartConfig, T5Config, WhisperConfig

    # (class, config, seed): initialised so that greedy decoding does not repeat one token (tiny random models
    # tend to), so a wrong cache shows
    return {
        "t5": (
            "T5ForConditionalGeneration",
            T5Config(
                vocab_size=100,
                d_model=32,
                d_kv=8,
                d_ff=64,
                num_layers=2,
                num_heads=4,
                feed_forward_proj="gated-gelu",
                tie_word_embeddings=False,
                initializer_factor=1.5,
                decoder_start_token_id=0,
                pad_token_id=0,
                eos_token_id=1,
            ),
            2,
        ),
        "bart": (
            "BartForConditionalGeneration",
            BartConfig(
                vocab_size=100,
                d_model=32,
                encoder_layers=2,
                decoder_layers=2,
                encoder_attention_heads=4,
                decoder_attention_heads=4,
                encoder_ffn_dim=64,
                decoder_ffn_dim=64,
                max_position_embeddings=64,
                init_std=0.2,
            ),
            0,
        ),
        "whisper": (
            "WhisperForConditionalGeneration",
            WhisperConfig(
                vocab_size=100,
                num_mel_bins=16,
                d_model=32,
                encoder_layers=2,
                decoder_layers=2,
                encoder_attention_heads=4,
                decoder_attention_heads=4,
                encoder_ffn_dim=64,
                decoder_ffn_dim=64,
                max_source_positions=16,  # 32 mel frames
                max_target_positions=64,
                decoder_start_token_id=1,
                bos_token_id=1,
                pad_token_id=0,
                eos_token_id=2,
                suppress_tokens=None,
                begin_suppress_tokens=None,
                init_std=0.2,
            ),
            0,
        ),
    }


@pytest.fixture(scope="session")
def seq2seq_dirs(tmp_path_factory):
    import transformers

    out = tmp_path_factory.mktemp("seq2seq")
    dirs = {}
    for name, (cls, config, seed) in _configs().items():
        torch.manual_seed(seed)
        getattr(transformers, cls)(config).save_pretrained(out / name)
        dirs[name] = out / name
    return dirs


@pytest.fixture(scope="session")
def exported(seq2seq_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("seq2seq-with-past")
    return {
        name: export_model(str(path), out / name, task=TASKS.get(name, TASK)) for name, path in seq2seq_dirs.items()
    }


def _io(path):
    model = onnx.load(str(path), load_external_data=False)
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    return inputs, [o.name for o in model.graph.output]


@pytest.mark.parametrize("name", FAMILIES)
def test_two_files_in_optimums_layout_each_fully_tagged(exported, name):
    result = exported[name]
    assert sorted(p.name for p in result.directory.iterdir()) == [
        "decoder_model.hierarchy.json",
        "decoder_model.onnx",
        "encoder_model.hierarchy.json",
        "encoder_model.onnx",
    ]
    audio = name == "whisper"  # mel frames in, and no encoder attention mask
    inputs, outputs = _io(result.directory / "encoder_model.onnx")
    assert list(inputs) == (["input_features"] if audio else ["input_ids", "attention_mask"])
    assert outputs == ["last_hidden_state"]
    if audio:
        assert inputs["input_features"] == ["batch", 16, 32]
    inputs, outputs = _io(result.directory / "decoder_model.onnx")
    decoder_pasts = [f"past_key_values.{i}.decoder.{k}" for i in range(2) for k in ("key", "value")]
    cross = ["encoder_hidden_states"] if audio else ["encoder_attention_mask", "encoder_hidden_states"]
    # the encoder pasts are declared for decode loops written against the layout, and not read (seq2seq.py)
    encoder_pasts = [f"past_key_values.{i}.encoder.{k}" for i in range(2) for k in ("key", "value")]
    assert list(inputs) == ["input_ids", *cross, *decoder_pasts, *encoder_pasts]
    assert inputs["past_key_values.0.encoder.key"][0::2] == ["batch", "encoder_sequence"]
    presents = [
        f"present.{i}.{part}.{k}" for i in range(2) for part in ("decoder", "encoder") for k in ("key", "value")
    ]
    assert outputs == ["logits", *presents]
    assert inputs["encoder_hidden_states"][:2] == ["batch", "encoder_sequence"]
    assert inputs["past_key_values.0.decoder.key"][0::2] == ["batch", "past_sequence"]
    root = _configs()[name][0]
    for part, export in result.parts.items():
        assert export.stats.coverage == 1.0 and export.stats.tagged_nodes == export.stats.total_nodes > 100
        assert export.sidecar["options"]["part"] == part and export.sidecar["options"]["task"] == TASKS.get(name, TASK)
        tags = export.sidecar["tags"]
        assert all(t.startswith(f"/{root}") for t in tags), "tags are the model's own, not a part wrapper's"
        busy = {t for t, info in tags.items() if info["nodes"]}
        other = "decoder" if part == "encoder" else "encoder"
        # the encoder file holds no decoder node; the decoder file only the encoder's shared embedding, if any
        assert not any(f"Stack.{other}/" in t or f"{other.capitalize()}Layer" in t for t in busy), busy
        assert export.stats.root_tagged_nodes < export.stats.total_nodes / 20


@pytest.mark.parametrize("name", FAMILIES)
def test_greedy_decoding_over_both_files_matches_generate(exported, name):
    report = validate(exported[name].directory)  # model and task from the sidecars
    print(f"{name}: {report.summary()}; tokens {report.decode.tokens}")
    assert report.passed, report.summary()
    decode = report.decode
    assert decode.tokens == decode.reference_tokens and len(decode.tokens) == 2
    assert all(len(row) >= 8 for row in decode.tokens)
    assert len({tuple(row) for row in decode.tokens}) == 2 and len(set(decode.tokens[0])) > 2, "not degenerate"
    steps = [s for s in decode.steps if s.output == "logits"]
    assert max(s.max_abs_diff for s in steps) < 1e-4
    files = {c.output.split(":")[0] for c in report.checks}
    assert files == {"encoder_model.onnx", "decoder_model.onnx"}
    assert {c.case for c in report.checks} == {"export", "resized"}


@pytest.mark.parametrize("part", ["encoder", "decoder"])
def test_a_perturbed_weight_in_either_file_fails_with_exit_1(exported, tmp_path, part):
    result = exported["t5"]
    copy = tmp_path / "t5"
    shutil.copytree(result.directory, copy)
    path = copy / f"{part}_model.onnx"
    model = onnx.load(str(path))
    target = max(model.graph.initializer, key=lambda t: numpy_helper.to_array(t).size)
    array = numpy_helper.to_array(target).copy()
    array.flat[: array.size // 8 : 2] += 0.5  # not a uniform shift of whole rows, which a LayerNorm removes
    target.CopyFrom(numpy_helper.from_array(array, target.name))
    onnx.save(model, str(path))
    report = validate(copy)
    print(f"perturbed {part} {target.name}: {report.summary()}")
    assert not report.passed and not report.decode.passed
    assert any(not c.passed and c.output.startswith(f"{part}_model.onnx:") for c in report.checks)
    proc = run_cli("validate", str(copy), "--json", str(tmp_path / "v.json"))
    assert proc.returncode == 1, proc.stderr
    assert "validation failed" in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert json.loads((tmp_path / "v.json").read_text())["decode"]["passed"] is False


def test_cli_exports_validates_and_profiles_a_bart_directory(seq2seq_dirs, tmp_path):
    out = tmp_path / "bart"
    proc = run_cli("export", str(seq2seq_dirs["bart"]), str(out), "--task", TASK)
    assert proc.returncode == 0, proc.stderr
    assert "encoder_model.onnx" in proc.stdout and "decoder_model.onnx" in proc.stdout
    assert proc.stdout.count("100% tagged") == 2
    proc = run_cli("validate", str(out))
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("profile", str(out), "--warmup", "1", "--iterations", "2")
    assert proc.returncode == 0, proc.stderr
    phases = json.loads((tmp_path / "bart_profile" / "profile.json").read_text())["phases"]
    assert list(phases) == ["encode", "prefill", "decode"]


def test_wrong_outputs_and_models_are_refused_in_one_line(seq2seq_dirs, tmp_path):
    with pytest.raises(BadInputError, match="must be a directory for an encoder-decoder"):
        export_model(str(seq2seq_dirs["t5"]), tmp_path / "t5.onnx", task=TASK)
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(BadInputError, match="no encoder-decoder: export it with --task text-generation-with-past"):
        export_model(str(tmp_path / "gpt2"), tmp_path / "gpt2-out", task=TASK)
    assert not (tmp_path / "gpt2-out").exists()


@pytest.mark.parametrize("name", ["bart", "whisper"])
def test_profile_reports_encode_prefill_and_decode_apart(exported, tmp_path, name):
    from modelexport.profile import profile

    result = profile(exported[name].directory, warmup=1, iterations=3, profile_runs=2, output_dir=tmp_path)
    data = json.loads((tmp_path / "profile.json").read_text())
    phases = data["phases"]
    assert list(phases) == ["encode", "prefill", "decode"]
    assert phases["encode"]["onnx_path"].endswith("encoder_model.onnx")
    encoded = {"bart": ("input_ids", [1, 32]), "whisper": ("input_features", [1, 16, 32])}[name]
    assert phases["encode"]["inputs"][encoded[0]] == encoded[1]
    assert phases["prefill"]["inputs"]["input_ids"] == [1, 1]
    assert phases["prefill"]["inputs"]["past_key_values.0.decoder.key"][2] == 0
    assert phases["decode"]["inputs"]["past_key_values.0.decoder.key"][2] == 32
    assert phases["decode"]["inputs"]["encoder_hidden_states"][:2] == [1, 32]  # attends to 32 encoded positions
    for phase_name, phase in phases.items():
        assert phase["attributed_fraction"] >= 0.99, phase_name
        family = "Bart" if name == "bart" else "Whisper"
        layer = f"{family}EncoderLayer.0" if phase_name == "encode" else f"{family}DecoderLayer.0"
        assert any(layer in m["tag"] and m["self_ms"] > 0 for m in phase["modules"]), phase_name
    assert result.inputs == phases["decode"]["inputs"]
    assert "## Phase: prefill (1 new tokens after a past of 0)" in (tmp_path / "profile.md").read_text()


def test_dynamo_exports_both_files_and_decodes_like_generate(seq2seq_dirs, tmp_path):
    result = export_model(str(seq2seq_dirs["t5"]), tmp_path / "t5", task=TASK, strategy="dynamo")
    assert {e.strategy for e in result.parts.values()} == {"dynamo"}
    assert all(e.stats.coverage == 1.0 for e in result.parts.values())
    report = validate(result.directory)
    assert report.passed, report.summary()
    assert report.decode.tokens == report.decode.reference_tokens


def test_a_speech_model_asked_for_text_is_refused_naming_its_task(seq2seq_dirs, tmp_path):
    with pytest.raises(BadInputError, match="Whisper takes audio: export it with --task automatic-speech-recognition"):
        export_model(str(seq2seq_dirs["whisper"]), tmp_path / "w", task=TASK)
    with pytest.raises(BadInputError, match="Whisper is an encoder-decoder: export it with --task automatic-speech"):
        export_model(str(seq2seq_dirs["whisper"]), tmp_path / "w.onnx", task="text-generation-with-past")
    with pytest.raises(BadInputError, match="T5 takes text: export it with --task text2text-generation-with-past"):
        export_model(str(seq2seq_dirs["t5"]), tmp_path / "t", task="automatic-speech-recognition-with-past")


def test_the_decoder_file_profiles_on_its_own(exported, tmp_path):
    """`profile decoder_model.onnx` feeds the declared, unread encoder pasts itself (empty), as validation does."""
    from modelexport.profile import profile

    result = profile(exported["bart"].directory / "decoder_model.onnx", warmup=1, iterations=2, output_dir=tmp_path)
    assert result.attributed_fraction >= 0.99
    assert result.inputs["past_key_values.0.encoder.key"][2] == 0
