"""`--strategy auto` accepts a strategy's file only once ONNX Runtime runs it and it matches PyTorch at two shapes."""

from __future__ import annotations

import pytest

from tests import family_models as fm


@pytest.fixture(scope="module")
def cohere(tmp_path_factory):
    # htp writes a graph ORT cannot run (the attention reshape keeps the traced size); dynamo writes a correct one
    return fm.build(tmp_path_factory.mktemp("cohere"), "cohere", fm.FAMILIES["cohere"])


def test_auto_rejects_a_file_ort_cannot_run_and_takes_the_next_strategy(cohere, tmp_path):
    from modelexport.export import export_model
    from modelexport.validate import validate

    result = export_model(str(cohere), tmp_path / "auto.onnx")
    first, *rest = result.attempts
    assert first.strategy == "htp" and not first.ok
    assert "ONNX check failed" in first.reason and "ONNX Runtime failed" in first.reason
    assert result.strategy == "dynamo" and rest[-1].ok
    assert result.sidecar["strategy"]["attempts"][0]["reason"] == first.reason
    assert validate(result.onnx_path).passed


def test_an_explicit_strategy_is_not_checked(cohere, tmp_path):
    from modelexport.export import export_model
    from modelexport.validate import validate

    result = export_model(str(cohere), tmp_path / "htp.onnx", strategy="htp")
    assert result.strategy == "htp" and [a.ok for a in result.attempts] == [True]
    assert not validate(result.onnx_path).passed  # what auto refused to hand over


def test_when_every_strategy_fails_the_error_gives_each_reason(tmp_path):
    from modelexport.errors import ExportFailedError
    from modelexport.export import export_model
    from modelexport.inputs import parse_input_spec

    spec = parse_input_spec({"x": {"shape": [4, 4]}})
    with pytest.raises(ExportFailedError) as caught:
        export_model("tests.reliability.unexportable:eigen", tmp_path / "e.onnx", input_spec=spec)
    message = str(caught.value)
    assert message.startswith("every strategy failed (htp: ")
    assert all(f"{s}: " in message for s in ("htp", "dynamo", "usage", "fx")) and "\n" not in message
    assert "--strategy" not in message  # all four were tried
    with pytest.raises(ExportFailedError, match=r"^the export failed \(htp: .*try another --opset or --strategy"):
        export_model("tests.reliability.unexportable:eigen", tmp_path / "e.onnx", input_spec=spec, strategy="htp")
