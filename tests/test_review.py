"""`modelexport review` finds the regressions planted in a real SQLite MLflow store."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import run_cli
from tracking import review
from tracking import runs as tracking_runs

FLEET = "review-fleet"


def profile(latency_p50: float) -> dict:
    return {
        "latency_ms": {"mean": latency_p50, "p50": latency_p50, "p90": latency_p50, "p99": latency_p50, "stdev": 0.0},
        "throughput_per_s": 1000 / latency_p50,
        "attributed_fraction": 1.0,
        "modules": [],
    }


def validation(passed: bool, diff: float) -> dict:
    return {
        "passed": passed,
        "tolerances": {"atol": 1e-4, "rtol": 1e-3},
        "summary": f"off by {diff}",
        "checks": [{"output": "last_hidden_state", "passed": passed, "max_abs_diff": diff, "max_rel_diff": diff}],
    }


@pytest.fixture(scope="module")
def store(exported, tmp_path_factory):
    """Runs of three models: `steady` (no change), `slower` (latest +50% p50), `worse` (coverage drop, then a
    failed run). Logged through tracking.runs exactly as the pipeline logs them."""
    tmp = tmp_path_factory.mktemp("review")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    result = exported("tiny-bert")
    out = tmp / "out"
    out.mkdir()
    shutil.copy(result.onnx_path, out / result.onnx_path.name)
    sidecar = result.sidecar
    low_coverage = dict(sidecar, stats=dict(sidecar["stats"], coverage=0.9))
    plan = {
        "steady": [(2.0, sidecar, True), (2.1, sidecar, True), (2.05, sidecar, True)],
        "slower": [(2.0, sidecar, True), (2.1, sidecar, True), (3.0, sidecar, True)],
        "worse": [(2.0, sidecar, True), (2.0, low_coverage, True), (2.0, sidecar, False)],
    }
    for name, runs in plan.items():
        for latency, export, passed in runs:
            run = tracking_runs.log_model_export(
                name,
                out,
                fleet=FLEET,
                tracking_uri=uri,
                export=export,
                validation=validation(passed, 1e-6 if passed else 0.3),
                profile=profile(latency),
                export_seconds=1.0,
            )
            assert run.passed == passed
    return uri, tmp


def test_review_fails_on_a_planted_latency_regression(store, tmp_path):
    uri, _ = store
    proc = run_cli(
        "review",
        "--fleet",
        FLEET,
        "--model",
        "slower",
        "--tracking-uri",
        uri,
        "--fail-on-regression",
        "--output-dir",
        str(tmp_path),
        env={"COLUMNS": "200"},
    )
    assert proc.returncode == 1, proc.stderr
    assert "p50 latency +46.3%" in proc.stdout  # 3.0 ms against the median 2.05 ms of the earlier runs
    assert "1 of 1 models regressed" in proc.stdout
    md = (tmp_path / "review.md").read_text()
    assert "| review-fleet | slower | 3 | FINISHED | +46.3% |" in md
    png = tmp_path / "review-fleet.slower.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_review_without_the_flag_or_under_the_threshold_exits_zero(store, tmp_path):
    uri, _ = store
    proc = run_cli(
        "review",
        "--fleet",
        FLEET,
        "--tracking-uri",
        uri,
        "--output-dir",
        str(tmp_path),
        "--max-latency-increase",
        "60%",
        "--fail-on-regression",
        env={"COLUMNS": "200"},
    )
    # 'worse' still regresses (its latest run failed); raise the latency bar and only latency is forgiven.
    assert proc.returncode == 1 and "1 of 3 models regressed" in proc.stdout, proc.stdout + proc.stderr
    reviews, _ = review.review(uri, fleet=FLEET, output_dir=tmp_path)
    assert {r.model: bool(r.regressions) for r in reviews} == {"steady": False, "slower": True, "worse": True}


def test_review_reports_coverage_drop_parity_and_failed_runs(store, tmp_path):
    uri, _ = store
    by_model = {r.model: r for r in review.review(uri, fleet=FLEET, output_dir=tmp_path)[0]}
    worse = by_model["worse"]
    assert worse.latest.status == "FAILED"
    assert worse.regressions[0].startswith("latest run failed: validation failed: off by 0.3")
    assert worse.parity_latest == 0.3 and worse.parity_baseline == 1e-6
    assert worse.coverage_drop == pytest.approx(-0.05)  # back at 1.0 against the median 0.95 of 1.0 and 0.9
    assert by_model["steady"].latency_change_pct == pytest.approx(100 * (2.05 - 2.05) / 2.05)
    # A coverage drop alone is a regression: judge the second run of 'worse' against the first.
    second = review.review_model(FLEET, "worse", worse.points[:2], review.Thresholds())
    assert second.regressions == ["tag coverage dropped 100.00% -> 90.00%"]


def test_compare_thresholds_node_count_and_strategy():
    def point(i, nodes, strategy, latency=1.0):
        return review.Point(f"r{i}", i, "FINISHED", latency, 1.0, nodes, 1e-6, strategy, None)

    points = [point(0, 100, "htp"), point(1, 100, "htp"), point(2, 130, "dynamo", latency=1.05)]
    shown = review.review_model("f", "m", points, review.Thresholds())
    assert shown.regressions == [] and shown.node_change_pct == pytest.approx(30.0)
    assert shown.strategy_change == "htp -> dynamo" and shown.latency_change_pct == pytest.approx(5.0)
    strict = review.review_model("f", "m", points, review.Thresholds(max_latency_increase=4, max_node_change=10))
    assert strict.regressions == ["p50 latency +5.0% (1 -> 1.05 ms)", "node count 100 -> 130"]


def test_review_without_runs_is_a_one_line_error(tmp_path):
    proc = run_cli("review", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("modelexport: error: no MLflow database at") and proc.stderr.count("\n") == 1
    assert not (tmp_path / "none.db").exists()
    bad = run_cli("review", "--last", "1")
    assert bad.returncode == 2 and "must be an integer >= 2" in bad.stderr
