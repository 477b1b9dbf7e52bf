"""Smoke test of the benchmark code on a tiny model: each figure is measured and results.json has its shape.

Speed itself is never asserted here (see benchmarks/ and `make bench`).
"""

import json

import pytest

from benchmarks import export_cost, run, runtime_cost
from benchmarks.common import QUICK_MODELS


def test_figures_and_results_structure():
    model = QUICK_MODELS[1]  # tiny-resnet: the fastest to export
    results = {
        "meta": {"quick": True, "seconds": 0.0},
        "tag_cost": {"htp": {model.name: export_cost.tag_cost(model, "htp", reps=2)}},
    }
    tagged, clean = run.runtime_files(model)
    results["runtime_cost"] = {model.name: runtime_cost.runtime_cost(tagged, clean, block_s=0.01, reps=2)}
    results["profiling_overhead"] = {model.name: runtime_cost.profiling_overhead(tagged, block_s=0.01, reps=2)}
    results["tagging_pass"] = export_cost.tagging_scaling((1, 2), reps=2)

    rows = run.rows(results)
    assert {key for key, _, _ in rows} == {
        f"tag_cost.htp.{model.name}",
        f"runtime_cost.{model.name}",
        f"profiling_overhead.{model.name}",
        "tagging_pass.x1",
        "tagging_pass.x2",
        "tagging_pass.largest_over_smallest",
    }
    for _, figure, _ in rows:
        assert figure["n"] >= 2
        assert 0 < figure["min"] <= figure["median"] <= figure["max"]
    assert results["tagging_pass"]["x2"]["nodes"] > results["tagging_pass"]["x1"]["nodes"]
    table = run.markdown(results)
    assert table.count("\n") == len(rows) + 2 and f"`tag_cost.htp.{model.name}`" in table
    json.dumps(results)  # what results.json holds


def test_plain_torch_benchmark_models_are_traceable_by_fx():
    """The fx tag cost runs on these (torch.fx cannot trace the transformers classes): shrunk, they must export."""
    from benchmarks.plain_models import INPUT_SPECS, TorchBert, TorchResNet
    from modelexport.export import DEFAULT_OPSET
    from modelexport.inputs import inputs_from_spec, parse_input_spec
    from modelexport.strategies import STRATEGIES

    for model, spec in (
        (TorchBert(vocab=64, hidden=16, layers=2, heads=2, intermediate=32, positions=32), "bert_base"),
        (TorchResNet(depths=(1, 1, 1, 1)), "resnet_50"),
    ):
        data = INPUT_SPECS[spec]
        if spec == "bert_base":
            data = {"input_ids": {**data["input_ids"], "high": 64}}
        capture = STRATEGIES["fx"].capture(model.eval(), inputs_from_spec(parse_input_spec(data)), DEFAULT_OPSET, True)
        scoped = [s for s in capture.scopes if s is not None]  # the rest are constants, projected by tagging
        assert len(scoped) > len(capture.scopes) / 2
        assert any(s.startswith(("layers.1", "stages.3")) for s in scoped)


def test_past_the_deadline_figures_stop_at_their_minimum_of_repetitions():
    """A slow day ends `make bench` in time: past the run's deadline no repetition beyond MIN_REPS starts (and
    min_seconds extends nothing), before it the figure runs its full `reps`."""
    from benchmarks.common import MIN_REPS, interleaved

    calls = []
    late = interleaved(
        lambda: calls.append("a"), lambda: calls.append("b"), reps=6, warmup=False, min_seconds=60, deadline=0.0
    )
    assert late["n"] == MIN_REPS and len(calls) == 2 * MIN_REPS

    def work():
        return sum(range(100))

    assert interleaved(work, work, reps=6, warmup=False)["n"] == 6
    assert interleaved(work, work, reps=2, warmup=False, deadline=0.0)["n"] == 2


def test_decode_cache_figure_on_a_tiny_decoder():
    """The with-cache ÷ without-cache decode step runs on both exports and lands as one figure per model."""
    from benchmarks import decode_cost

    figure = decode_cost.cache_over_prefix(decode_cost.QUICK[1], block_s=0.01, reps=2, past=16)
    assert figure["n"] == 2 and figure["past"] == 16
    assert 0 < figure["min"] <= figure["median"] <= figure["max"]
    assert figure["a_ms"] > 0 and figure["b_ms"] > 0
    rows = run.rows({"meta": {}, "decode_cache_over_prefix": {"tiny-llama-lm": figure}})
    assert rows[0][0] == "decode_cache_over_prefix.tiny-llama-lm" and rows[0][2] == 0.5


def test_fleet_curve_fits_fixed_plus_per_model_cost_and_flags_a_bend(tmp_path):
    """The curve's line: exact on a straight fleet (residuals 0, straightness 1), > 1 when a model's cost grows
    with N; the figures land in the table with their targets, and the fleets' models are each their own content."""
    from benchmarks import fleet_curve
    from modelexport.fleet import load_fleet
    from modelexport.source import resolve

    ns = [4, 16, 64]
    straight = fleet_curve.fit(ns, [2.0 + 0.5 * n for n in ns])
    assert straight["fixed_s"] == pytest.approx(2.0) and straight["per_model_s"] == pytest.approx(0.5)
    assert straight["residuals_s"] == pytest.approx([0, 0, 0], abs=1e-9)
    assert straight["straightness"] == pytest.approx(1.0)
    assert fleet_curve.fit(ns, [2.0 + 0.01 * n * n for n in ns])["straightness"] > 1.5  # per model grows with N

    def warm(fixed, per_model):
        return {str(n): [fixed + per_model * n] * 3 for n in ns} | {"base": [fixed + 3 * 0.6] * 3}

    times = {
        "cold_s": {str(n): 10 + 2.0 * n for n in ns} | {"base": 10 + 3 * 30.0},
        "warm_s": {"cli": warm(8, 0.2), "in_process": warm(1, 0.3)},
    }
    results = {"meta": {}, "fleet_curve": fleet_curve.figures(times, ns, 3)}
    curve = results["fleet_curve"]
    assert curve["cold"]["base_per_model_s"]["median"] == pytest.approx(30)
    assert curve["cli"]["tiny"]["warm_per_model_s"]["median"] == pytest.approx(0.2)
    assert curve["cli"]["tiny"]["warm_over_cold"]["median"] == pytest.approx(0.1)
    assert curve["cli"]["base"]["warm_over_cold"]["median"] == pytest.approx(0.6 / 30)
    verdicts = {key: run.verdict(figure, target) for key, figure, target in run.rows(results)}
    assert verdicts["fleet_curve.cli.tiny.warm_per_model_s"] == "yes"
    assert verdicts["fleet_curve.in_process.tiny.warm_per_model_s"] == "NO"  # 0.3 s > 0.25 s
    assert verdicts["fleet_curve.cli.base.warm_over_cold"] == "yes"
    assert verdicts["fleet_curve.cold.straightness"] == "yes"
    assert "8.00 s + 0.200 s/model" in run.markdown(results)
    fleet_curve.plot(results, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0

    models = fleet_curve.tiny_models(5, tmp_path / "models")  # the first family twice, with other weights
    plan = load_fleet(fleet_curve.fleet_file(tmp_path / "fleet.yaml", "tiny-5", models))
    assert [p.name for p in plan.models] == [m.name for m in models]
    assert plan.models[0].validation.enabled and plan.models[0].profiling.enabled
    assert len({resolve(str(m)).fingerprint for m in models}) == 5
    base = load_fleet(fleet_curve.fleet_file(tmp_path / "base.yaml", "base", models[:1], fleet_curve.BASE_SETTINGS))
    assert base.models[0].strategy == "htp" and base.models[0].validation.atol == 1e-3
    assert base.models[0].validation.rtol == plan.models[0].validation.rtol  # merged, not replaced
