"""Profiling: kernel time lands on module tags, module totals add up, files are written; CLI exit codes."""

from __future__ import annotations

import json

import pytest

from modelexport.calibration import METHOD
from modelexport.errors import BadInputError
from modelexport.profile import profile
from tests.conftest import run_cli


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-gpt2", "tiny-vit", "tiny-resnet"])
def test_kernel_time_is_attributed_to_modules(exported, name, tmp_path):
    result = profile(exported(name).onnx_path, warmup=1, iterations=5, output_dir=tmp_path)
    self_sum = sum(m["self_ms"] for m in result.modules)
    root = result.modules[0]
    print(
        f"{name} at {result.optimization}: kernel {result.kernel_ms:.4f} ms/run, modules {self_sum:.4f} ms, "
        f"attributed {result.attributed_fraction:.2%}, inferred {result.inferred_fraction:.2%}, "
        f"by method {result.attribution}, p50 {result.latency_ms['p50']:.4f} ms"
    )
    assert result.optimization == "ORT_ENABLE_ALL"
    assert result.attributed_fraction >= 0.95
    # module times add up to the unprofiled p50; the profiler's own figures are kept beside them
    assert self_sum == pytest.approx(result.latency_ms["p50"], rel=1e-6)
    assert sum(m["kernel_self_ms"] for m in result.modules) == pytest.approx(result.kernel_ms, rel=0.01)
    assert result.module_time["method"] == METHOD and result.module_time["overhead_us_per_kernel"] >= 0
    assert result.module_time["latency_ms"] == result.latency_ms["p50"]
    assert root["total_ms"] == pytest.approx(self_sum)
    for m in result.modules:  # inclusive time is own time plus children's
        assert m["total_ms"] >= m["self_ms"] >= 0
    assert sum(1 for m in result.modules if m["self_ms"] > 0) >= 3  # spread over modules, not lumped on the root
    lat = result.latency_ms
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] and lat["stdev"] >= 0 and result.throughput_per_s > 0

    data = json.loads((tmp_path / "profile.json").read_text())
    assert set(data["latency_ms"]) == {"mean", "p50", "p90", "p99", "stdev"}
    assert data["attributed_fraction"] == result.attributed_fraction
    assert {"tag", "self_ms", "total_ms", "nodes", "kernel_self_ms", "kernel_total_ms"} <= set(data["modules"][0])
    assert data["module_time"] == result.module_time
    png = (tmp_path / "modules.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert "| module |" in (tmp_path / "profile.md").read_text()


def test_fused_nodes_are_mapped_back(exported):
    """At ORT_ENABLE_ALL BERT's fused kernels (FusedMatMul, BiasGelu...) are found through the optimized graph."""
    result = profile(exported("tiny-bert").onnx_path, warmup=1, iterations=3)
    assert result.attribution.get("tensors", 0) > 0
    gelu = [m for m in result.modules if m["tag"].endswith("BertIntermediate") and m["self_ms"] > 0]
    assert gelu  # BiasGelu replaced the Gelu nodes of BertIntermediate and its activation: its time is there


def test_disabled_optimisation_attributes_by_name(exported):
    result = profile(exported("tiny-gpt2").onnx_path, warmup=1, iterations=3, optimization="disable")
    assert result.optimization == "ORT_DISABLE_ALL"
    assert result.attribution == {"name": pytest.approx(1.0)}


def test_bad_input(exported, tmp_path):
    with pytest.raises(BadInputError, match="iterations"):
        profile(exported("tiny-bert").onnx_path, iterations=0)
    with pytest.raises(BadInputError, match="optimization"):
        profile(exported("tiny-bert").onnx_path, optimization="max")
    with pytest.raises(BadInputError, match="does not exist"):
        profile(tmp_path / "nope.onnx")


def test_cli(exported, tmp_path):
    onnx_path = exported("tiny-bert").onnx_path
    ok = run_cli("profile", str(onnx_path), "--warmup", "1", "--iterations", "3", "--output-dir", str(tmp_path / "p"))
    assert ok.returncode == 0, ok.stderr
    assert "BertSelfAttention" in ok.stdout
    written = {p.name for p in (tmp_path / "p").iterdir()}
    assert written == {"profile.json", "profile.md", "modules.png", "latency.node_data.json"}
    bad = run_cli("profile", str(tmp_path / "nope.onnx"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    zero = run_cli("profile", str(onnx_path), "--iterations", "0", "--output-dir", str(tmp_path / "z"))
    assert zero.returncode == 2 and not (tmp_path / "z").exists()


def test_calibration_takes_the_profilers_overhead_off_each_kernel_then_scales_to_the_latency():
    from modelexport.calibration import calibrate, profiler_overhead_us

    # 2 runs; per run: one 10 us kernel ("big") and four of 2 us ("small"): 18 us of kernel events
    times, counts = {"big": 20.0, "small": 16.0}, {"big": 2, "small": 8}
    calibrated, how = calibrate(times, counts, runs=2, latency_ms=0.012, overhead_us=1.0)
    assert sum(calibrated.values()) == pytest.approx(0.012)  # what the module times add up to
    assert calibrated["big"] / calibrated["small"] == pytest.approx(9 / 4)  # (10 - 1) : 4 * (2 - 1), not 10 : 8
    assert (how.overhead_us_per_kernel, how.kernels_per_run, how.kernel_ms) == (1.0, 5, pytest.approx(0.018))
    calibrated, how = calibrate(times, counts, runs=2, latency_ms=0.012, overhead_us=50.0)  # all overhead
    assert calibrated["big"] / calibrated["small"] == pytest.approx(10 / 8) and how.overhead_us_per_kernel == 0
    assert 0 < profiler_overhead_us(1) < 100  # measured on this machine: µs, not ms


def test_the_latency_overlay_loads_in_model_explorer_and_names_its_nodes(exported, tmp_path):
    """latency.node_data.json is Model Explorer's GraphNodeData (checked with its own dataclass, strictly), keyed
    by the node ids its ONNX adapter gives the graph, and its values add up to the p50 latency."""
    import dacite
    from model_explorer.node_data_builder import GraphNodeData
    from model_explorer_onnx.main import ONNXAdapter

    onnx_path = exported("tiny-bert").onnx_path
    result = profile(onnx_path, warmup=1, iterations=5, output_dir=tmp_path)
    data = json.loads((tmp_path / "latency.node_data.json").read_text())
    node_data = dacite.from_dict(GraphNodeData, data, config=dacite.Config(strict=True))
    assert len(node_data.results) >= 100 and node_data.gradient
    graph = ONNXAdapter().convert(str(onnx_path), {})["graphs"][0]
    assert set(node_data.results) <= {node.id for node in graph.nodes}
    assert sum(r.value for r in node_data.results.values()) == pytest.approx(result.latency_ms["p50"], rel=1e-6)
    assert str(tmp_path / "latency.node_data.json") in result.files.values()
