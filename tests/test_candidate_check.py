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


class Rewiring:
    """A model that, like BigBird on a short sequence, swaps one of its submodules on the first call."""

    @staticmethod
    def build():
        import torch
        from torch import nn

        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.part = nn.Linear(4, 4)
                self.mode = "sparse"

            def forward(self, x):
                if x.shape[0] < 3:
                    self.mode, self.part = "full", nn.Identity()
                return self.part(x)

        torch.manual_seed(0)
        return Model().eval()


def test_a_reference_run_leaves_the_model_as_it_was():
    import torch

    from modelexport.wrapping import call_model

    model = Rewiring.build()
    linear = model.part
    first = dict(call_model(model, {"x": torch.ones(2, 4)}))["output"]
    assert model.part is linear and model.mode == "sparse"
    assert torch.equal(dict(call_model(model, {"x": torch.ones(2, 4)}))["output"], first)


def frozen():
    """Reads a size as a Python number: tracing writes it into the graph as a constant; torch.export does not."""
    import torch
    from torch import nn

    class Frozen(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4)

        def forward(self, x):
            return self.proj(x).reshape(int(x.shape[0]) * 4)

    torch.manual_seed(0)
    return Frozen().eval()


def test_a_file_right_at_the_export_shape_only_is_rejected_saying_so(tmp_path):
    from modelexport.errors import ExportFailedError
    from modelexport.export import export_model
    from modelexport.inputs import parse_input_spec

    spec = parse_input_spec({"x": {"shape": [6, 4], "dynamic_axes": {"0": "rows"}}})
    with pytest.raises(ExportFailedError) as caught:  # torch.export specializes the size too
        export_model("tests.test_candidate_check:frozen", tmp_path / "f.onnx", input_spec=spec)
    htp = next(a for a in caught.value.attempts if a.strategy == "htp")
    assert htp.reason.startswith("CandidateRejected: right at the export shape only; ONNX check failed")
    message = str(caught.value)
    assert message.count("--input-spec without dynamic_axes") == 1 and "\n" not in message
    static = parse_input_spec({"x": {"shape": [6, 4]}})  # what the message says to do
    assert export_model("tests.test_candidate_check:frozen", tmp_path / "s.onnx", input_spec=static).strategy == "htp"


def branching():
    """Branches on its data: torch.export cannot guard on that, and says at which line of the model."""
    from torch import nn

    class Branching(nn.Module):
        def forward(self, x):
            if (x > 0).any():
                return x * 2
            return x

    return Branching().eval()


def test_dynamos_reason_names_the_models_line(tmp_path):
    from modelexport.errors import ExportFailedError
    from modelexport.export import export_model
    from modelexport.inputs import parse_input_spec

    spec = parse_input_spec({"x": {"shape": [4, 4], "dynamic_axes": {"0": "rows"}}})
    with pytest.raises(ExportFailedError) as caught:
        export_model("tests.test_candidate_check:branching", tmp_path / "b.onnx", input_spec=spec, strategy="dynamo")
    assert "(at test_candidate_check.py:" in str(caught.value) and "in forward: if (x > 0).any():" in str(caught.value)
