"""Vision models: exported dynamic in height and width where the model itself runs at other sizes, validated at a
second (wider, not square) size; a grid frozen at the export's size fails there; a model that takes one size is
skipped with its reason."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from modelexport.exercise import skipped_cases
from modelexport.export import export_model
from modelexport.image_sizes import declare_image_axes
from modelexport.inputs import parse_input_spec
from modelexport.loading import LoadedModel, load
from modelexport.source import resolve
from modelexport.validate import validate


def _convnext():
    from transformers import ConvNextConfig, ConvNextModel

    return ConvNextModel(ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=32))


def _swin():
    from transformers import SwinConfig, SwinModel

    config = SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[2, 2], window_size=2)
    return SwinModel(config)


@pytest.fixture(scope="module")
def vision_dirs(model_dirs, tmp_path_factory):
    """The demo ViT and ResNet, and a tiny ConvNeXt and Swin saved beside them."""
    out = tmp_path_factory.mktemp("vision")
    dirs = {"vit": model_dirs["tiny-vit"], "resnet": model_dirs["tiny-resnet"]}
    for name, build in (("convnext", _convnext), ("swin", _swin)):
        torch.manual_seed(0)
        build().save_pretrained(out / name)
        dirs[name] = out / name
    return dirs


@pytest.mark.parametrize("name", ["vit", "resnet", "convnext", "swin"])
def test_vision_exports_are_dynamic_in_height_and_width_and_pass_at_a_second_size(vision_dirs, tmp_path, name):
    result = export_model(str(vision_dirs[name]), tmp_path / f"{name}.onnx")
    assert result.sidecar["inputs"]["pixel_values"]["dynamic_axes"] == {"0": "batch", "2": "height", "3": "width"}
    report = validate(result.onnx_path)
    print(f"{name}: {report.summary()}")
    assert report.passed, report.summary()
    assert report.skipped == {}
    (height, width), sizes = result.sidecar["inputs"]["pixel_values"]["shape"][2:], {}
    for check in report.checks:
        sizes.setdefault(check.case, set()).add(tuple(check.shapes["pixel_values"][2:]))
    assert sizes["export"] == {(height, width)}
    assert sizes["resized"] == {(height // 2, width // 2)}
    (wide,) = sizes["image-size"]
    assert wide[0] == height and wide[1] > width  # wider, not square


def test_a_position_grid_frozen_at_the_export_size_fails_at_the_other_sizes(vision_dirs, tmp_path):
    """The export optimum makes of a ViT: traced without interpolating its position embeddings but declared dynamic
    in height and width. It is right at the export's size only; the resized and image-size cases catch it."""
    from modelexport.wrapping import KeywordWrapper

    model = load(resolve(str(vision_dirs["vit"]))).model
    frozen = KeywordWrapper(model, ["pixel_values"]).eval()
    model.forward = type(model).forward.__get__(model)  # the class's forward: no interpolation
    path = tmp_path / "frozen.onnx"
    axes = {"pixel_values": {0: "batch", 2: "height", 3: "width"}}
    with torch.no_grad():
        torch.onnx.export(
            frozen,
            (torch.randn(2, 3, 32, 32),),
            str(path),
            input_names=["pixel_values"],
            output_names=["last_hidden_state", "pooler_output"],
            dynamic_axes=axes,
            dynamo=False,
        )
    report = validate(path, str(vision_dirs["vit"]))
    print(report.summary())
    assert not report.passed
    assert all(c.passed for c in report.checks if c.case == "export")
    assert {c.case for c in report.checks if not c.passed} == {"resized", "image-size"}
    assert "ONNX Runtime failed" in report.summary()


def test_an_export_no_strategy_makes_dynamic_falls_back_to_one_size_and_says_so(vision_dirs, tmp_path):
    """torch.export specializes a ViT's height and width (its code branches on them at the config's own size):
    dynamo refuses that file, and the export is made at the export's size with the reason in the sidecar;
    validation checks it at that size and records why the image-size case did not run."""
    from modelexport.inputs import inputs_from_spec, resolve_spec
    from modelexport.strategies import STRATEGIES

    loaded = load(resolve(str(vision_dirs["vit"])))
    inputs = inputs_from_spec(resolve_spec(loaded.model, loaded.config))
    with pytest.raises(RuntimeError, match=r"fixed the dynamic axes height=32, width=32"):
        STRATEGIES["dynamo"].capture(loaded.model, inputs, 18, False)
    result = export_model(str(vision_dirs["vit"]), tmp_path / "vit.onnx", strategy="dynamo")
    assert result.sidecar["inputs"]["pixel_values"]["dynamic_axes"] == {"0": "batch"}
    assert result.sidecar["warnings"][0].startswith("pixel_values exported at 32x32 only: the model runs at other")
    assert "fixed the dynamic axes height=32, width=32" in result.sidecar["warnings"][0]
    report = validate(result.onnx_path)
    assert report.passed, report.summary()
    assert {c.case for c in report.checks} == {"export", "resized"}
    assert report.skipped == {"image-size": "the ONNX file fixes pixel_values at 32x32"}


class _OneSize(torch.nn.Module):
    """A vision model with a fixed grid: it refuses any other image size, as a ViT without interpolation does."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Conv2d(3, 4, 8, stride=8)
        self.positions = torch.nn.Parameter(torch.zeros(1, 4, 4, 4))

    def forward(self, pixel_values):
        if pixel_values.shape[2:] != (32, 32):
            raise ValueError(f"Input image size {tuple(pixel_values.shape[2:])} doesn't match model (32, 32)")
        return {"last_hidden_state": self.proj(pixel_values) + self.positions}


def test_a_model_that_takes_one_size_stays_static_and_its_skip_says_why():
    model, config = _OneSize().eval(), SimpleNamespace(image_size=32, num_channels=3)
    spec = parse_input_spec({"pixel_values": {"shape": [2, 3, 32, 32], "dynamic_axes": {"0": "batch"}}})
    assert declare_image_axes(model, spec, config) is spec  # not made dynamic
    skipped = skipped_cases(spec, model, config, {"pixel_values": ["batch", 3, 32, 32]})
    assert skipped == {
        "image-size": "the PyTorch model fails at 16x16: Input image size (16, 16) doesn't match model (32, 32)"
    }
    dynamic = declare_image_axes(_convnext().eval(), spec, _convnext().config)
    assert dynamic.root["pixel_values"].dynamic_axes == {0: "batch", 2: "height", 3: "width"}
    fixed_file = skipped_cases(dynamic, model, config, {"pixel_values": ["batch", 3, 32, 32]})
    assert fixed_file == {"image-size": "the ONNX file fixes pixel_values at 32x32"}


def test_a_one_size_model_validates_at_its_size_and_records_the_skip(tmp_path):
    model, config = _OneSize().eval(), SimpleNamespace(image_size=32, num_channels=3)
    path = tmp_path / "one.onnx"
    with torch.no_grad():
        torch.onnx.export(
            model,
            (torch.randn(2, 3, 32, 32),),
            str(path),
            input_names=["pixel_values"],
            output_names=["last_hidden_state"],
            dynamic_axes={"pixel_values": {0: "batch"}},
            dynamo=False,
        )
    report = validate(path, LoadedModel(model, config, positional=False))
    assert report.passed, report.summary()
    assert {c.case for c in report.checks} == {"export", "resized"}
    assert report.to_dict()["skipped"]["image-size"].startswith("the PyTorch model fails at 16x16")


def test_siglip_falls_back_to_one_size_also_when_its_derived_spec_is_passed(tmp_path):
    """SigLIP runs at other sizes, but its attention-pooling head's reshapes freeze the token count under every
    strategy. The pipeline passes the spec it derived (dynamic height and width) to export and validate: the
    export falls back to one size with the reason, and validation checks it at that size."""
    from modelexport.inputs import resolve_spec
    from tests import family_models

    path = family_models.build(tmp_path, "siglip", family_models.FAMILIES["siglip"])
    loaded = load(resolve(str(path)), weights=False)
    spec = resolve_spec(loaded.model, loaded.config)
    assert spec.root["pixel_values"].dynamic_axes == {0: "batch", 2: "height", 3: "width"}
    result = export_model(str(path), tmp_path / "siglip.onnx", input_spec=spec)
    assert result.sidecar["inputs"]["pixel_values"]["dynamic_axes"] == {"0": "batch"}
    assert "no strategy exported a dynamic height and width (every strategy failed" in result.sidecar["warnings"][0]
    report = validate(result.onnx_path, str(path), input_spec=spec)
    assert report.passed, report.summary()
    assert {tuple(c.shapes["pixel_values"][2:]) for c in report.checks} == {(32, 32)}


def test_a_swin_whose_last_stage_is_one_window_stays_at_its_size_and_the_trial_leaves_it_intact(tmp_path):
    """At half the size the last stage's grid is smaller than the window: Swin clamps its window (and keeps that
    on the module) while its position-bias table stays 7x7, so the PyTorch model fails there. The image stays
    fixed with that reason, and the trial leaves the model able to run at its own size (`wrapping.unchanged_after`):
    the export works."""
    from transformers import SwinConfig, SwinModel

    torch.manual_seed(0)
    config = SwinConfig(image_size=112, patch_size=4, embed_dim=8, depths=[1, 1, 1], num_heads=[2, 2, 2], window_size=7)
    SwinModel(config).save_pretrained(tmp_path / "swin")
    result = export_model(str(tmp_path / "swin"), tmp_path / "swin.onnx")
    assert result.sidecar["inputs"]["pixel_values"]["dynamic_axes"] == {"0": "batch"}
    report = validate(result.onnx_path)
    assert report.passed, report.summary()
    assert report.skipped["image-size"].startswith("the PyTorch model fails at 56x56: The size of tensor a (16)")
