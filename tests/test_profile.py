"""Profiling: kernel time lands on module tags, module totals add up, files are written; CLI exit codes."""

from __future__ import annotations

import json

import pytest

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
    assert abs(self_sum - result.kernel_ms) <= 0.01 * result.kernel_ms
    assert root["total_ms"] == pytest.approx(self_sum)
    for m in result.modules:  # inclusive time is own time plus children's
        assert m["total_ms"] >= m["self_ms"] >= 0
    assert sum(1 for m in result.modules if m["self_ms"] > 0) >= 3  # spread over modules, not lumped on the root
    lat = result.latency_ms
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] and lat["stdev"] >= 0 and result.throughput_per_s > 0

    data = json.loads((tmp_path / "profile.json").read_text())
    assert set(data["latency_ms"]) == {"mean", "p50", "p90", "p99", "stdev"}
    assert data["attributed_fraction"] == result.attributed_fraction
    assert {"tag", "self_ms", "total_ms", "nodes"} <= set(data["modules"][0])
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
    assert {p.name for p in (tmp_path / "p").iterdir()} == {"profile.json", "profile.md", "modules.png"}
    bad = run_cli("profile", str(tmp_path / "nope.onnx"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    zero = run_cli("profile", str(onnx_path), "--iterations", "0", "--output-dir", str(tmp_path / "z"))
    assert zero.returncode == 2 and not (tmp_path / "z").exists()
