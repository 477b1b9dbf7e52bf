"""The ONNX lowerings of ops the exporters lack or get wrong (modelexport/lowerings.py), on small modules made of
those ops, exported by each strategy that uses them and validated in ONNX Runtime at two sizes; and the
TorchScript registrations do not outlive the export."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modelexport.export import export_model
from modelexport.inputs import parse_input_spec
from modelexport.validate import validate

EXPERTS = 3


class Histogram(nn.Module):
    """Normal values, some outside [min, max], one exactly at max (the top edge belongs to the last bin)."""

    def forward(self, values):
        values = torch.cat([values, torch.ones_like(values[:1])])
        return torch.histc(values, bins=5, min=-1.0, max=1.0)


class Grouped(nn.Module):
    """Rows sorted by expert, counted with histc, multiplied by their expert's weight: transformers' experts, through
    its dispatcher (``torch._grouped_mm`` when traced, its ``grouped_mm_fallback`` op under torch.export)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(EXPERTS, 4, 8))  # rows of 8 floats: the CPU kernel's alignment
        self.proj = nn.Linear(4, 4)

    def forward(self, rows, experts):
        ordered, perm = torch.sort(experts)
        counts = torch.histc(ordered.float(), bins=EXPERTS, min=0, max=EXPERTS - 1)
        offsets = torch.cumsum(counts, dim=0, dtype=torch.int32)
        from transformers.integrations.moe import _grouped_mm

        return _grouped_mm(self.proj(rows)[perm], self.weight, offs=offsets)


class Permuting(nn.Module):
    """Permutes with negative dims, as a Mamba mixer does: torch's symbolic wrote them into the perm as they are."""

    def forward(self, values):
        return values.permute(0, -1, 1) * 2


def permuting():
    return Permuting()


def histogram():
    return Histogram()


def grouped():
    torch.manual_seed(0)
    return Grouped()


PERMUTE_SPEC = {"values": {"shape": [2, 3, 5], "dtype": "float32", "dynamic_axes": {"0": "batch"}}}
HISTOGRAM_SPEC = {"values": {"shape": [64], "dtype": "float32", "dynamic_axes": {"0": "values"}}}
GROUPED_SPEC = {
    "rows": {"shape": [12, 4], "dtype": "float32", "dynamic_axes": {"0": "tokens"}},
    "experts": {"shape": [12], "dtype": "int64", "low": 0, "high": EXPERTS, "dynamic_axes": {"0": "tokens"}},
}

ONE_EXPERT_SPEC = GROUPED_SPEC | {  # every row to expert 0: the others' groups are empty
    "experts": {"shape": [12], "dtype": "int64", "low": 0, "high": 1, "dynamic_axes": {"0": "tokens"}}
}


@pytest.mark.parametrize(
    ("factory", "spec", "strategy"),
    [
        ("permuting", PERMUTE_SPEC, "htp"),
        ("histogram", HISTOGRAM_SPEC, "htp"),
        ("histogram", HISTOGRAM_SPEC, "dynamo"),  # torchlib's own histc
        ("grouped", GROUPED_SPEC, "htp"),
        ("grouped", GROUPED_SPEC, "usage"),
        ("grouped", GROUPED_SPEC, "dynamo"),
        ("grouped", ONE_EXPERT_SPEC, "htp"),
        ("grouped", ONE_EXPERT_SPEC, "dynamo"),
    ],
)
def test_lowered_ops_match_pytorch_at_two_sizes(factory, spec, strategy, tmp_path):
    spec = parse_input_spec(spec)
    result = export_model(f"tests.test_lowerings:{factory}", tmp_path / "m.onnx", strategy=strategy, input_spec=spec)
    assert result.stats.coverage == 1.0
    report = validate(result.onnx_path, input_spec=spec)
    assert report.passed, report.summary()
    assert {"export", "resized"} <= {c.case for c in report.checks}


def test_torchscript_symbolics_are_registered_only_during_the_export(tmp_path):
    from torch.onnx._internal.torchscript_exporter import registration

    from modelexport.lowerings import TORCHSCRIPT_FIXES, TORCHSCRIPT_SYMBOLICS, _overridden, torchscript_lowerings

    with torchscript_lowerings(18):
        assert all(registration.registry.is_registered_op(name, 18) for name in TORCHSCRIPT_SYMBOLICS)
        assert all(_overridden(name, 18) for name in TORCHSCRIPT_FIXES)
    assert not any(registration.registry.is_registered_op(name, 18) for name in TORCHSCRIPT_SYMBOLICS)
    assert not any(_overridden(name, 18) for name in TORCHSCRIPT_FIXES)
    assert registration.registry.is_registered_op("aten::permute", 18)  # torch's own is back
