"""Validation: honest exports pass, corrupted and wrong-shape ones fail with a reason; CLI exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from modelexport.errors import BadInputError, ValidationFailedError
from modelexport.inputs import parse_input_spec
from modelexport.loading import LoadedModel
from modelexport.validate import raise_for_failure, validate
from tests.conftest import run_cli


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-gpt2", "tiny-vit", "tiny-resnet"])
def test_honest_exports_pass_at_two_seeds_and_two_shapes(exported, name):
    result = exported(name)
    report = validate(result.onnx_path)  # model taken from the sidecar
    outputs = result.sidecar["outputs"]
    print(f"{name}: {report.summary()}")
    assert report.passed, report.summary()
    assert {c.seed for c in report.checks} == {0, 1}
    exercising = {
        "tiny-bert": {"token-types", "padded", "longest"},
        "tiny-gpt2": {"padded", "longest"},
        "tiny-vit": {"image-size"},
        "tiny-resnet": {"image-size"},
    }
    assert {c.case for c in report.checks} == {"export", "resized"} | exercising.get(name, set())
    assert sum(c.case in ("export", "resized") for c in report.checks) == 2 * 2 * len(outputs)
    assert sum(c.case not in ("export", "resized") for c in report.checks) == len(exercising.get(name, ())) * len(
        outputs
    )  # each exercising case once, at seed 0
    export_shapes = {tuple(s) for c in report.checks if c.case == "export" for s in c.shapes.values()}
    resized_shapes = {tuple(s) for c in report.checks if c.case == "resized" for s in c.shapes.values()}
    assert export_shapes.isdisjoint(resized_shapes)  # the dynamic axes really changed size
    assert all(c.max_abs_diff < 1e-4 for c in report.checks)
    data = report.to_dict()
    assert data["passed"] is True and data["tolerances"] == {"atol": 1e-4, "rtol": 1e-3}


def _corrupt(result, tmp_path):
    """Copy an export and add noise to its largest float initializer."""
    model = onnx.load(str(result.onnx_path))
    target = max(
        (t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT), key=lambda t: np.prod(t.dims)
    )
    array = numpy_helper.to_array(target).copy()
    array += np.random.default_rng(0).normal(0, 0.05, array.shape).astype(array.dtype)
    target.CopyFrom(numpy_helper.from_array(array, target.name))
    path = tmp_path / "corrupted.onnx"
    onnx.save(model, str(path))
    shutil.copy(result.sidecar_path, tmp_path / "corrupted.hierarchy.json")
    return path, target.name


def test_perturbed_initializer_fails(exported, tmp_path):
    path, weight = _corrupt(exported("tiny-bert"), tmp_path)
    report = validate(path)
    print(f"corrupted {weight}: {report.summary()}")
    assert not report.passed
    worst = report.worst
    assert worst.max_abs_diff > 1e-3 and worst.output in ("last_hidden_state", "pooler_output")
    with pytest.raises(ValidationFailedError, match=f"output {worst.output} .* off by"):
        raise_for_failure(report)


def test_static_shape_export_fails_at_the_second_shape(model_dirs, tmp_path):
    from modelexport.export import export_model

    fixed = {
        n: {"shape": [2, 16], "dtype": "int64", "high": 2} for n in ("input_ids", "attention_mask", "token_type_ids")
    }
    result = export_model(str(model_dirs["tiny-bert"]), tmp_path / "static.onnx", input_spec=parse_input_spec(fixed))
    report = validate(result.onnx_path, str(model_dirs["tiny-bert"]))
    print(report.summary())
    assert not report.passed
    assert all(c.passed for c in report.checks if c.case == "export")
    failed = [c for c in report.checks if not c.passed]
    assert failed and all(c.case == "resized" and c.error for c in failed)


class _Pair(torch.nn.Module):
    """Returns y = 2x and z = x + 1; `flat` makes y one-dimensional, `drop_z` leaves z out."""

    def __init__(self, flat=False, drop_z=False):
        super().__init__()
        self.flat, self.drop_z = flat, drop_z

    def forward(self, x):
        y = (x * 2).reshape(-1) if self.flat else x * 2
        return {"y": y} if self.drop_z else {"y": y, "z": x + 1}


def _export(module, path, names):
    x = torch.randn(2, 4)
    torch.onnx.export(
        module, (x,), str(path), input_names=["x"], output_names=names, dynamic_axes={"x": {0: "batch"}}, dynamo=False
    )
    return path


SPEC = parse_input_spec({"x": {"shape": [2, 4], "dynamic_axes": {"0": "batch"}}})


def test_output_shape_mismatch_and_missing_output_fail(tmp_path):
    reference = LoadedModel(_Pair(), None, positional=True)
    flat = _export(_Pair(flat=True), tmp_path / "flat.onnx", ["y", "z"])
    report = validate(flat, reference, input_spec=SPEC)
    assert not report.passed and report.worst.output == "y" and "shape [8]" in report.worst.error
    assert all(c.passed for c in report.checks if c.output == "z")
    missing = _export(_Pair(drop_z=True), tmp_path / "missing.onnx", ["y"])
    report = validate(missing, reference, input_spec=SPEC)
    assert not report.passed and report.worst.output == "z"
    assert report.worst.error == "missing from the ONNX outputs"
    same = _export(_Pair(), tmp_path / "same.onnx", ["y", "z"])
    assert validate(same, reference, input_spec=SPEC).passed


def test_bad_inputs_are_bad_input_errors(exported, tmp_path):
    with pytest.raises(BadInputError, match="does not exist"):
        validate(tmp_path / "nope.onnx")
    lonely = tmp_path / "lonely.onnx"
    shutil.copy(exported("tiny-bert").onnx_path, lonely)
    with pytest.raises(BadInputError, match="--model"):
        validate(lonely)
    with pytest.raises(BadInputError, match="tolerances"):
        validate(exported("tiny-bert").onnx_path, atol=-1)


def test_cli_exit_codes_and_json(exported, model_dirs, tmp_path):
    result = exported("tiny-gpt2")
    out = tmp_path / "ok.json"
    ok = run_cli("validate", str(result.onnx_path), "--model", str(model_dirs["tiny-gpt2"]), "--json", str(out))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(out.read_text())["passed"] is True

    path, _ = _corrupt(exported("tiny-bert"), tmp_path)
    bad_json = tmp_path / "bad.json"
    bad = run_cli("validate", str(path), "--json", str(bad_json))
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modelexport: error: validation failed: output ")
    assert "off by" in lines[0] and "Traceback" not in bad.stderr
    data = json.loads(bad_json.read_text())
    assert data["passed"] is False and any(not c["passed"] for c in data["checks"])

    missing = run_cli("validate", str(tmp_path / "nope.onnx"))
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    no_dir = run_cli("validate", str(result.onnx_path), "--json", str(tmp_path / "no" / "x.json"))
    assert no_dir.returncode == 2 and "does not exist" in no_dir.stderr


def _perturbed(onnx_path, tmp_path, tag: str, op_type: str = "MatMul"):
    """A copy of the export with one weight of a `tag` node changed (and its sidecar)."""
    model = onnx.load(str(onnx_path))
    tags = json.loads(Path(onnx_path).with_suffix(".hierarchy.json").read_text())["node_tags"]
    weights = {w.name: w for w in model.graph.initializer}
    node = next(
        n for n in model.graph.node if tags.get(n.name) == tag and n.op_type == op_type and n.input[1] in weights
    )
    weight = weights[node.input[1]]
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] += 1.0  # one element (a constant added to every weight cancels after a LayerNorm)
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    out = tmp_path / "perturbed.onnx"
    onnx.save(model, out)
    shutil.copy(Path(onnx_path).with_suffix(".hierarchy.json"), tmp_path / "perturbed.hierarchy.json")
    return out


def test_a_failed_validation_names_the_module_where_outputs_first_diverge(exported, model_dirs, tmp_path):
    """One weight of layer 1's self-attention changed in the ONNX file: validation fails, and the one-line reason
    and validation.json name that module (layer 0 and everything before it still match)."""
    from modelexport.validate import write_validation

    attention = "/BertModel/BertEncoder/BertLayer.1/BertAttention/BertSelfAttention"
    broken = _perturbed(exported("tiny-bert").onnx_path, tmp_path, attention)
    report = validate(broken, str(model_dirs["tiny-bert"]))
    assert not report.passed
    assert report.localization["tag"] == attention
    assert report.localization["module"] == "encoder.layer.1.attention.self"
    assert f"first diverges at module encoder.layer.1.attention.self ({attention})" in report.summary()
    saved = json.loads(write_validation(report, tmp_path / "validation.json").read_text())
    assert saved["localization"]["tag"] == attention
    overlay = json.loads((tmp_path / "parity.node_data.json").read_text())["results"]  # Model Explorer's format
    tags = json.loads(Path(broken).with_suffix(".hierarchy.json").read_text())["node_tags"]
    assert {tags[n] for n, v in overlay.items() if v["value"] > 1e-3} >= {attention}
    assert all(v["value"] < 1e-4 for n, v in overlay.items() if "BertLayer.0" in tags[n])  # before it: unchanged

    healthy = validate(exported("tiny-bert").onnx_path, str(model_dirs["tiny-bert"]), localize=True)
    assert healthy.passed and healthy.localization["tag"] is None  # asked for: every module matches


@pytest.mark.parametrize(
    "tag, case",
    [
        ("/BertModel/BertEmbeddings", "token-types"),  # a token-type row that the export-time inputs never read
        ("/BertModel/BertEmbeddings", "longest"),  # a position row past the export length
    ],
)
def test_rows_the_export_inputs_leave_idle_are_checked(exported, model_dirs, tmp_path, tag, case):
    """A change to the second token-type row, or to the last position row, fails validation: the exercising cases
    read them (the export and resized cases use token type 0 and 16 or 8 positions)."""
    import onnx
    from onnx import numpy_helper

    result = exported("tiny-bert")
    model = onnx.load(str(result.onnx_path))
    table = "token_type_embeddings" if case == "token-types" else "position_embeddings"
    weight = next(w for w in model.graph.initializer if table in w.name)
    values = numpy_helper.to_array(weight).copy()
    values[-1, 0] += 1.0  # the last row (type 1, or the last position); one element: a LayerNorm cancels a shift
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, broken)
    shutil.copy(result.sidecar_path, tmp_path / "broken.hierarchy.json")
    report = validate(broken, str(model_dirs["tiny-bert"]))
    assert not report.passed
    assert {c.case for c in report.checks if not c.passed} == {case}
    assert report.localization["tag"] == tag


def test_a_model_that_ignores_the_attention_mask_fails_the_padded_case(exported, model_dirs, tmp_path):
    """An export whose mask input is cut off (every position attended) fails only where the masks have padding."""
    import onnx

    result = exported("tiny-bert")
    model = onnx.load(str(result.onnx_path))
    ones = onnx.helper.make_node(
        "ConstantOfShape",
        ["mask_shape"],
        ["all_ones"],
        value=onnx.helper.make_tensor("one", onnx.TensorProto.INT64, [1], [1]),
    )
    shape = onnx.helper.make_node("Shape", ["attention_mask"], ["mask_shape"])
    for node in model.graph.node:
        node.input[:] = ["all_ones" if i == "attention_mask" else i for i in node.input]
    model.graph.node.insert(0, ones)
    model.graph.node.insert(0, shape)
    broken = tmp_path / "maskless.onnx"
    onnx.save(model, broken)
    shutil.copy(result.sidecar_path, tmp_path / "maskless.hierarchy.json")
    report = validate(broken, str(model_dirs["tiny-bert"]))
    assert {c.case for c in report.checks if not c.passed} == {"padded"}


def test_a_config_without_a_position_limit_gets_no_longest_case():
    """XLNet's config says max_position_embeddings = -1 (no table): no `longest` case, not a spec of length -1."""
    from types import SimpleNamespace

    from modelexport.exercise import exercising_cases

    spec = parse_input_spec(
        {"input_ids": {"shape": [2, 16], "dtype": "int64", "dynamic_axes": {"0": "batch", "1": "sequence"}}}
    )
    dynamic = {"input_ids": ["batch", "sequence"]}
    assert [c[0] for c in exercising_cases(spec, SimpleNamespace(max_position_embeddings=-1), dynamic)] == []
    assert [c[0] for c in exercising_cases(spec, SimpleNamespace(max_position_embeddings=40), dynamic)] == ["longest"]
