"""A stage's peak memory is recorded; a model whose estimated need exceeds its max_memory_gb is refused at once."""

from __future__ import annotations

import json

import pytest

from modelexport.errors import ResourceLimitError
from modelexport.memory import NEED_PER_WEIGHT_BYTE, check_memory, estimated_need, peak_rss, weight_bytes


def test_the_peak_of_a_block_is_what_it_allocated_at_most():
    import numpy as np

    with peak_rss() as baseline:
        pass
    with peak_rss() as peak:  # the block is alive when the block ends: its last sample, taken then, sees it
        block = np.ones(64 * 2**20 // 8)  # 64 MB, touched
    del block
    assert peak.mb >= baseline.mb + 50


def test_a_model_over_its_memory_limit_is_refused_before_it_loads(model_dirs, tmp_path):
    from modelexport.export import export_model
    from modelexport.validate import validate

    folder = model_dirs["tiny-bert"]
    need_gb = weight_bytes(folder) * NEED_PER_WEIGHT_BYTE["export"] / 1e9
    with pytest.raises(ResourceLimitError, match=r"export needs an estimated .* but max_memory_gb is"):
        export_model(str(folder), tmp_path / "m.onnx", max_memory_gb=need_gb / 2)
    assert list(tmp_path.iterdir()) == []  # nothing written
    result = export_model(str(folder), tmp_path / "m.onnx", max_memory_gb=need_gb * 2)
    assert result.sidecar["peak_rss_mb"] > 0
    validate_gb = estimated_need(folder, "validate")[0]
    report = validate(result.onnx_path, str(folder), max_memory_gb=validate_gb * 1.1)
    assert report.passed and report.to_dict()["peak_rss_mb"] > 0
    with pytest.raises(ResourceLimitError, match="validate needs an estimated"):
        validate(result.onnx_path, str(folder), max_memory_gb=validate_gb * 0.9)
    check_memory(folder, "export", None)  # no limit: nothing to check


def test_a_fleet_model_over_its_limit_fails_alone_and_the_others_export(prefect_harness, model_dirs, tmp_path):
    from flows import run_fleet_flow

    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "defaults: {profile: {enabled: false}}\n"
        f"models:\n  - {{id: {model_dirs['tiny-bert']}, name: big, max_memory_gb: 0.000001}}\n"
        f"  - {{id: {model_dirs['tiny-resnet']}, name: small}}\n"
    )
    models = {m.name: m for m in run_fleet_flow(str(fleet), str(tmp_path / "out"), track=False).models}
    assert (models["big"].status, models["big"].failed_stage, models["big"].exit_code) == ("failed", "export", 1)
    assert "max_memory_gb is 1e-06" in models["big"].reason and "\n" not in models["big"].reason
    assert models["small"].status == "ok"
    sidecar = json.loads((tmp_path / "out" / "small" / "model.hierarchy.json").read_text())
    validation = json.loads((tmp_path / "out" / "small" / "validation.json").read_text())
    assert sidecar["peak_rss_mb"] > 0 and validation["peak_rss_mb"] > 0


def test_peak_rss_of_each_stage_becomes_a_metric():
    from tracking import run_record
    from tracking.runs import metric_key

    _params, metrics = run_record.params_and_metrics(
        {"peak_rss_mb": 812.5, "stats": {}},
        {"peak_rss_mb": 640.0, "checks": []},
        {"peak_rss_mb": 300.0},
        None,
        metric_key,
        5,
    )
    assert (metrics["peak_rss_mb.export"], metrics["peak_rss_mb.validate"], metrics["peak_rss_mb.profile"]) == (
        812.5,
        640.0,
        300.0,
    )
