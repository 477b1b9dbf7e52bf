"""Streamed weights (``--stream-weights``, and always past protobuf's limit) give the same file as the in-memory
path, and ``--dtype`` exports and validates in float16; bfloat16, which ONNX Runtime's CPU provider cannot run,
is refused by validate in one line. Memory figures are measured in benchmarks/memory_cost.py, not here."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from modelexport import onnx_io, streamed_weights
from modelexport.errors import BadInputError, ExportFailedError, ResourceLimitError
from modelexport.export import export_model
from modelexport.memory import FIXED_NEED_GB, NEED_PER_WEIGHT_BYTE, check_memory, estimated_need, weight_bytes
from modelexport.profile import profile
from modelexport.validate import validate

TASKS = {"tiny-llama-lm": "text-generation", "tiny-bert": None}


def _graph_without_weights(path) -> bytes:
    model = onnx_io.load_graph(path)
    del model.graph.initializer[:]
    return model.graph.SerializeToString()


def _weights(path) -> dict[str, np.ndarray]:
    return {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


@pytest.fixture(scope="module")
def both_paths(model_dirs, tmp_path_factory):
    """Each model exported in memory and streamed."""
    out = tmp_path_factory.mktemp("streamed")
    return {
        name: tuple(
            export_model(str(model_dirs[name]), out / f"{name}-{kind}.onnx", task=task, stream_weights=kind == "s")
            for kind in ("m", "s")
        )
        for name, task in TASKS.items()
    }


@pytest.mark.parametrize("name", TASKS)
def test_streamed_weights_give_the_same_graph_weights_tags_and_outputs(both_paths, name):
    in_memory, streamed = both_paths[name]
    assert not in_memory.sidecar["options"]["stream_weights"] and streamed.sidecar["options"]["stream_weights"]
    assert not onnx_io.external_data_path(in_memory.onnx_path).exists()
    assert onnx_io.external_data_path(streamed.onnx_path).stat().st_size > 10_000  # the weights are beside it
    assert _graph_without_weights(streamed.onnx_path) == _graph_without_weights(in_memory.onnx_path)
    expected, actual = _weights(in_memory.onnx_path), _weights(streamed.onnx_path)
    assert expected.keys() == actual.keys() and len(expected) > 5
    assert all(np.array_equal(expected[k], actual[k]) for k in expected)
    assert streamed.sidecar["node_tags"] == in_memory.sidecar["node_tags"]
    assert streamed.stats.coverage == 1.0
    report = validate(streamed.onnx_path)
    assert report.passed, report.summary()


def test_weights_past_the_threshold_are_streamed_without_asking(model_dirs, tmp_path, monkeypatch):
    monkeypatch.setattr(streamed_weights, "STREAM_ABOVE_BYTES", 1000)  # a tiny model takes the large-model path
    result = export_model(str(model_dirs["tiny-bert"]), tmp_path / "big.onnx", strategy="htp")
    assert result.sidecar["options"]["stream_weights"] is True
    assert onnx_io.external_data_path(result.onnx_path).is_file()
    assert validate(result.onnx_path).passed


def test_a_strategy_that_cannot_stream_says_so(model_dirs, tmp_path):
    with pytest.raises(ExportFailedError, match="dynamo cannot stream the weights"):
        export_model(str(model_dirs["tiny-bert"]), tmp_path / "d.onnx", strategy="dynamo", stream_weights=True)


def test_the_memory_estimate_follows_the_path_and_the_dtype(model_dirs):
    folder = model_dirs["tiny-bert"]
    weights = weight_bytes(folder)
    in_memory, _, factor = estimated_need(folder, "export")
    assert (in_memory, factor) == (weights * NEED_PER_WEIGHT_BYTE["export"] / 1e9, NEED_PER_WEIGHT_BYTE["export"])
    streamed = estimated_need(folder, "export", streamed=True)[0]
    assert streamed == FIXED_NEED_GB + weights * NEED_PER_WEIGHT_BYTE["export-streamed"] / 1e9
    half = estimated_need(folder, "export", streamed=True, dtype="float16")[0]
    assert half - FIXED_NEED_GB == pytest.approx((streamed - FIXED_NEED_GB) / 2, rel=1e-3)
    # ONNX Runtime upcasts a half-precision file: validating it counts float32 bytes
    assert estimated_need(folder, "validate", dtype="float16") == estimated_need(folder, "validate")
    with pytest.raises(ResourceLimitError, match=r"export needs an estimated .* \+ 0.6 GB\) but max_memory_gb"):
        check_memory(folder, "export", streamed * 0.99, streamed=True)
    check_memory(folder, "export", streamed * 1.01, streamed=True)


@pytest.fixture(scope="module")
def float16_llama(model_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16")
    folder = str(model_dirs["tiny-llama-lm"])
    full = export_model(folder, out / "fp32.onnx", task="text-generation", stream_weights=True)
    half = export_model(folder, out / "fp16.onnx", task="text-generation", dtype="float16", stream_weights=True)
    return full, half


def test_float16_export_halves_the_weights_and_validates_in_float16(float16_llama):
    full, half = float16_llama
    assert half.sidecar["options"]["dtype"] == "float16" and full.sidecar["options"]["dtype"] == "float32"
    sizes = [onnx_io.external_data_path(r.onnx_path).stat().st_size for r in (full, half)]
    assert 0.45 < sizes[1] / sizes[0] < 0.55
    sizes = {}
    for t in onnx.load(str(half.onnx_path)).graph.initializer:
        sizes[t.data_type] = sizes.get(t.data_type, 0) + int(np.prod(t.dims))
    assert sizes[onnx.TensorProto.FLOAT16] > 0.9 * sum(sizes.values())  # the weights; masks, ids stay as they were
    report = validate(half.onnx_path)  # the dtype comes from the sidecar, and with it the tolerances
    assert report.passed, report.summary()
    assert (report.atol, report.rtol) == (2e-2, 2e-2)
    assert 0 < report.worst.max_abs_diff  # really computed in half precision, not float32 again


def test_a_float16_mismatch_beyond_tight_tolerances_fails(float16_llama):
    _full, half = float16_llama
    assert not validate(half.onnx_path, atol=1e-9, rtol=1e-9).passed


def test_bfloat16_exports_and_validate_says_ort_cannot_run_it(model_dirs, tmp_path):
    result = export_model(str(model_dirs["tiny-bert"]), tmp_path / "bf16.onnx", dtype="bfloat16")
    assert result.sidecar["options"]["dtype"] == "bfloat16"
    with pytest.raises(BadInputError, match=r"CPU provider cannot run .* in bfloat16 .*: export it in float16"):
        validate(result.onnx_path)
    with pytest.raises(BadInputError, match=r"CPU provider cannot run .* in bfloat16"):
        profile(result.onnx_path, warmup=0, iterations=1)


def test_a_float16_vision_model_takes_float16_pixels_in_validate_and_profile(model_dirs, tmp_path):
    result = export_model(str(model_dirs["tiny-vit"]), tmp_path / "vit.onnx", dtype="float16")
    assert result.sidecar["inputs"]["pixel_values"]["dtype"] == "float16"
    assert validate(result.onnx_path).passed
    assert profile(result.onnx_path, warmup=0, iterations=2).latency_ms["p50"] > 0


def test_an_unknown_dtype_or_a_half_one_with_a_cache_is_bad_input(model_dirs, tmp_path):
    with pytest.raises(BadInputError, match="unknown dtype 'half': use one of float32, float16, bfloat16"):
        export_model(str(model_dirs["tiny-bert"]), tmp_path / "x.onnx", dtype="half")
    llama = str(model_dirs["tiny-llama-lm"])
    with pytest.raises(BadInputError, match="--dtype float16 does not work with --task text-generation-with-past"):
        export_model(llama, tmp_path / "x.onnx", task="text-generation-with-past", dtype="float16")
    assert list(tmp_path.iterdir()) == []


def test_casting_a_model_keeps_tied_weights_tied():
    import torch

    from modelexport.dtypes import cast_model

    shared = torch.nn.Linear(8, 8)
    model = torch.nn.Sequential(shared, torch.nn.ReLU(), torch.nn.Linear(8, 8))
    model[2].weight = shared.weight
    expected = shared.weight.detach().to(torch.float16).clone()
    cast_model(model, "float16")
    assert model[2].weight is model[0].weight and model[0].weight.dtype == torch.float16
    assert torch.equal(model[0].weight.detach(), expected)  # paging the source out lost nothing
    assert model[0].bias.dtype == model[2].bias.dtype == torch.float16


@pytest.mark.parametrize("strategy", ["htp", "usage", "fx"])
def test_every_tracing_strategy_streams_the_same_file(strategy, tmp_path):
    from modelexport.inputs import parse_input_spec
    from tests import strategy_models

    spec = parse_input_spec(strategy_models.INPUT_SPEC)
    model = "tests.strategy_models:distinct"
    in_memory, streamed = (
        export_model(model, tmp_path / f"{kind}.onnx", strategy=strategy, input_spec=spec, stream_weights=kind == "s")
        for kind in ("m", "s")
    )
    assert _graph_without_weights(streamed.onnx_path) == _graph_without_weights(in_memory.onnx_path)
    expected, actual = _weights(in_memory.onnx_path), _weights(streamed.onnx_path)
    assert expected.keys() == actual.keys() and all(np.array_equal(expected[k], actual[k]) for k in expected)
    assert streamed.sidecar["node_tags"] == in_memory.sidecar["node_tags"]
