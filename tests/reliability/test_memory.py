"""Exporting a fleet one model after another does not grow the process: each model, ONNX proto and ORT session
is released. RSS is read after each export + validation (after gc); the figures are printed.

The model holds ~34 MB of weights, so keeping any of model, proto or session alive per export would add at least
that much per model: 4 models past the second would cross the bound."""

from __future__ import annotations

import gc

import psutil

N = 6
BOUND_MB = 120
MODEL = "tests.reliability.blocking_model:wide"


def test_rss_does_not_grow_with_the_number_of_models_exported(tmp_path):
    from modelexport.export import export_model
    from modelexport.inputs import parse_input_spec
    from modelexport.validate import validate

    spec = parse_input_spec({"x": {"shape": [2, 64], "dynamic_axes": {"0": "batch"}}})
    process = psutil.Process()
    rss_mb = []
    for i in range(N):
        result = export_model(MODEL, tmp_path / f"{i}.onnx", input_spec=spec)
        report = validate(result.onnx_path, MODEL, input_spec=spec)
        assert report.passed
        del result, report
        gc.collect()
        rss_mb.append(process.memory_info().rss / 2**20)
    growth = rss_mb[-1] - rss_mb[1]  # from the second model on: every kernel and cache has been set up once
    print(
        f"\nRSS after each of {N} exports of a 34 MB model (MB): {', '.join(f'{v:.0f}' for v in rss_mb)}; "
        f"growth model 2 -> {N}: {growth:+.1f} MB ({growth / (N - 2):+.1f} MB/model)"
    )
    assert max(rss_mb[2:]) - rss_mb[1] < BOUND_MB, rss_mb
