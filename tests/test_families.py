"""One tiny model per family and per task head: exported with the default strategy (`auto`) and validated in
ONNX Runtime at two shapes; every node tagged; outputs named as optimum names them."""

from __future__ import annotations

import pytest

from tests import family_models as fm

# The outputs each task's file must have (optimum's names); more may follow them (hidden states of the base).
TASK_OUTPUTS = {
    "feature-extraction": ["last_hidden_state"],
    "fill-mask": ["logits"],
    "text-classification": ["logits"],
    "token-classification": ["logits"],
    "question-answering": ["start_logits", "end_logits"],
    "multiple-choice": ["logits"],
    "text-generation": ["logits"],
    "text2text-generation": ["logits"],
    "image-classification": ["logits"],
    "object-detection": ["logits", "pred_boxes"],
    "semantic-segmentation": ["logits"],
    "image-segmentation": ["logits", "pred_boxes", "pred_masks"],
    "audio-classification": ["logits"],
    "automatic-speech-recognition": ["logits"],
    "zero-shot-image-classification": ["logits_per_image", "logits_per_text", "text_embeds", "image_embeds"],
    "sentence-embeddings": ["token_embeddings", "sentence_embedding"],
}


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """Build each tiny model once per session, on first use."""
    directory = tmp_path_factory.mktemp("zoo")
    return lambda name, entry: fm.build(directory, name, entry)


def _export_and_validate(path, out, task=None):
    from modelexport.export import export_model
    from modelexport.validate import validate

    result = export_model(str(path), out, task=task)
    assert result.stats.coverage == 1.0
    report = validate(result.onnx_path)  # the task is read back from the sidecar
    assert report.passed, report.summary()
    assert {"export", "resized"} <= {c.case for c in report.checks}  # and the exercising cases that apply
    return result


@pytest.mark.parametrize("name", list(fm.FAMILIES))
def test_family_exports_and_validates(name, zoo, tmp_path):
    _export_and_validate(zoo(name, fm.FAMILIES[name]), tmp_path / f"{name}.onnx")


@pytest.mark.parametrize("task", list(fm.TASK_MODELS))
def test_task_head_exports_and_validates_with_optimum_output_names(task, zoo, tmp_path):
    entry = fm.TASK_MODELS[task]
    result = _export_and_validate(zoo(entry[0], entry), tmp_path / "model.onnx", task=task)
    outputs = result.sidecar["outputs"]
    assert outputs[: len(TASK_OUTPUTS[task])] == TASK_OUTPUTS[task]


def test_a_graph_right_at_one_shape_exports_and_validates_at_fixed_shapes(zoo, tmp_path):
    """BigBird's block-sparse attention is traced for one sequence length: the file is exported as the error
    for dynamic axes advises (an --input-spec without dynamic_axes, to both) and validated at that shape, still
    sparse."""
    from modelexport.export import export_model
    from modelexport.inputs import parse_input_spec
    from modelexport.validate import validate

    path = zoo("big_bird", fm.FIXED_SHAPE["big_bird"])
    ids = {"shape": [2, 16], "dtype": "int64"}
    spec = parse_input_spec(
        {"input_ids": ids | {"high": 96}, "attention_mask": ids | {"low": 1, "high": 2}, "token_type_ids": ids}
    )
    result = export_model(str(path), tmp_path / "bb.onnx", input_spec=spec)
    assert result.stats.coverage == 1.0
    assert any(tag.endswith("BigBirdBlockSparseAttention") for tag in result.sidecar["tags"])
    report = validate(result.onnx_path, input_spec=spec)
    assert report.passed, report.summary()
    assert "resized" not in {c.case for c in report.checks}


def test_every_task_is_tested():
    from modelexport.loading import TASKS

    # the *-with-past tasks are tested by test_with_past.py and test_seq2seq.py
    assert {t for t in TASKS if not t.endswith("-with-past")} == set(fm.TASK_MODELS) == set(TASK_OUTPUTS)


@pytest.mark.parametrize(
    ("class_name", "task"),
    [
        ("BertForQuestionAnswering", "question-answering"),
        ("BertForMultipleChoice", "multiple-choice"),
        ("DetrForObjectDetection", "object-detection"),
        ("SegformerForSemanticSegmentation", "semantic-segmentation"),
        ("Wav2Vec2ForCTC", "automatic-speech-recognition"),
        ("ASTForAudioClassification", "audio-classification"),
        ("CLIPModel", "zero-shot-image-classification"),
        ("CohereForCausalLM", "text-generation"),
        ("BertModel", "feature-extraction"),
        ("TimeSeriesTransformerModel", "feature-extraction"),  # a base model
        ("NoSuchClass", None),
    ],
)
def test_task_auto_reads_the_head_from_architectures(class_name, task):
    from types import SimpleNamespace

    from modelexport.task_heads import task_from_architectures

    assert task_from_architectures(SimpleNamespace(architectures=[class_name])) == task


def test_cli_exports_a_head_with_task_auto(zoo, tmp_path):
    from tests.conftest import run_cli

    entry = fm.TASK_MODELS["question-answering"]
    path = zoo(entry[0], entry)
    out = tmp_path / "qa.onnx"
    done = run_cli("export", str(path), str(out), "--task", "auto")
    assert done.returncode == 0, done.stderr
    done = run_cli("validate", str(out))
    assert done.returncode == 0, done.stderr
    import json

    sidecar = json.loads(out.with_name("qa.hierarchy.json").read_text())
    assert sidecar["outputs"] == ["start_logits", "end_logits"]
