"""``modelexport review``: compare each model's latest export run with its previous ones in MLflow.

What a reviewer runs after the nightly fleet. For every (fleet, model) it takes the last N model runs, and compares
the latest with the *baseline*: the median of the earlier runs that passed (a median, because ORT latency is
noisy run to run). It reports latency change (p50, %), parity drift (largest max-abs difference vs the baseline),
tag coverage drop, node-count change and strategy change, and flags a regression when a threshold is crossed:

- the latest run failed (export error, or parity over tolerance: ``validation_passed`` is 0);
- p50 latency rose more than ``max_latency_increase`` percent (default 10);
- tag coverage dropped more than ``max_coverage_drop`` (default 0: any drop);
- the node count changed more than ``max_node_change`` percent (default: not checked, only shown).

Outputs: a rich table, ``review.md`` and one trend plot per model (``<fleet>.<model>.png``) in the output dir.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from . import runs as tracking_runs

LATENCY = "latency_p50_ms"


@dataclass
class Thresholds:
    """When a change counts as a regression (see the module docstring)."""

    max_latency_increase: float = 10.0  # percent
    max_coverage_drop: float = 0.0  # absolute, coverage is 0..1
    max_node_change: float | None = None  # percent; None: shown, never a regression


@dataclass
class Point:
    """One model run, reduced to what the review compares."""

    run_id: str
    start_time: int
    status: str
    latency_ms: float | None
    coverage: float | None
    nodes: float | None
    parity: float | None
    strategy: str | None
    error: str | None


@dataclass
class ModelReview:
    fleet: str
    model: str
    points: list[Point]  # oldest first; the last is the latest run
    latency_change_pct: float | None = None
    parity_latest: float | None = None
    parity_baseline: float | None = None
    coverage_drop: float | None = None
    node_change_pct: float | None = None
    strategy_change: str | None = None
    regressions: list[str] = field(default_factory=list)

    @property
    def latest(self) -> Point:
        return self.points[-1]


def _point(run) -> Point:
    m, tags = run.data.metrics, run.data.tags
    return Point(
        run.info.run_id,
        run.info.start_time,
        run.info.status,
        m.get(LATENCY),
        m.get("tag_coverage"),
        m.get("nodes_total"),
        m.get("parity_max_abs_diff"),
        run.data.params.get("strategy"),
        tags.get(tracking_runs.TAG + "error"),
    )


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def review_model(fleet: str, model: str, points: list[Point], thresholds: Thresholds) -> ModelReview:
    """Compare the latest point with the median of the earlier passing ones; list the regressions."""
    review = ModelReview(fleet, model, points)
    latest = review.latest
    baseline = [p for p in points[:-1] if p.status == "FINISHED"]
    if latest.status != "FINISHED":
        review.regressions.append(f"latest run {latest.status.lower()}: {latest.error or 'no reason recorded'}")
    review.parity_latest = latest.parity
    review.parity_baseline = _median(p.parity for p in baseline)
    base_latency = _median(p.latency_ms for p in baseline)
    if base_latency and latest.latency_ms is not None:
        review.latency_change_pct = 100 * (latest.latency_ms - base_latency) / base_latency
        if review.latency_change_pct > thresholds.max_latency_increase:
            review.regressions.append(
                f"p50 latency +{review.latency_change_pct:.1f}% ({base_latency:.3g} -> {latest.latency_ms:.3g} ms)"
            )
    base_coverage = _median(p.coverage for p in baseline)
    if base_coverage is not None and latest.coverage is not None:
        review.coverage_drop = base_coverage - latest.coverage
        if review.coverage_drop > thresholds.max_coverage_drop:
            review.regressions.append(f"tag coverage dropped {base_coverage:.2%} -> {latest.coverage:.2%}")
    base_nodes = _median(p.nodes for p in baseline)
    if base_nodes and latest.nodes is not None:
        review.node_change_pct = 100 * (latest.nodes - base_nodes) / base_nodes
        if thresholds.max_node_change is not None and abs(review.node_change_pct) > thresholds.max_node_change:
            review.regressions.append(f"node count {base_nodes:.0f} -> {latest.nodes:.0f}")
    previous = next((p.strategy for p in reversed(baseline) if p.strategy), None)
    if previous and latest.strategy and previous != latest.strategy:
        review.strategy_change = f"{previous} -> {latest.strategy}"
    return review


def collect_points(
    client, experiment: str, fleet: str | None, model: str | None, last: int
) -> dict[tuple, list[Point]]:
    """The last `last` model runs of each (fleet, model), oldest first."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return {}
    filters = [f"tags.`{tracking_runs.TAG}kind` = 'model'"]
    for key, value in (("fleet", fleet), ("model", model)):
        if value:
            filters.append(f"tags.`{tracking_runs.TAG}{key}` = '{value.replace(chr(39), '')}'")
    runs = client.search_runs(
        [found.experiment_id], " and ".join(filters), max_results=5000, order_by=["attributes.start_time DESC"]
    )
    groups: dict[tuple, list[Point]] = {}
    for run in runs:
        key = (run.data.tags.get(tracking_runs.TAG + "fleet", ""), run.data.tags[tracking_runs.TAG + "model"])
        if run.info.status != "RUNNING" and len(groups.setdefault(key, [])) < last:
            groups[key].append(_point(run))
    return {key: points[::-1] for key, points in sorted(groups.items())}


def _fmt(value, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


def rows(review: ModelReview) -> list[str]:
    """The cells of one model's line, for the terminal table and the Markdown file alike."""
    parity = _fmt(review.parity_latest, ".2g")
    if review.parity_baseline is not None:
        parity += f" (was {review.parity_baseline:.2g})"
    return [
        review.fleet or "-",
        review.model,
        str(len(review.points)),
        review.latest.status,
        _fmt(review.latency_change_pct, "+.1f") + ("%" if review.latency_change_pct is not None else ""),
        parity,
        _fmt(review.coverage_drop, ".2%"),
        _fmt(review.node_change_pct, "+.1f"),
        review.strategy_change or "same",
        "; ".join(review.regressions) or "none",
    ]


HEADERS = [
    "fleet",
    "model",
    "runs",
    "latest",
    "latency p50",
    "max abs diff",
    "coverage drop",
    "nodes %",
    "strategy",
    "regressions",
]


def table(reviews: list[ModelReview]):
    from rich.table import Table

    out = Table(title="modelexport review: latest run vs the median of earlier passing runs")
    for header in HEADERS:
        out.add_column(header, overflow="fold")
    for review in reviews:
        out.add_row(*rows(review), style="red" if review.regressions else None)
    return out


def review_markdown(reviews: list[ModelReview], uri: str, thresholds: Thresholds) -> str:
    lines = [
        "# modelexport review",
        "",
        f"Tracking store: `{tracking_runs.scrub(uri)}`. Thresholds: p50 latency "
        f"+{thresholds.max_latency_increase:g}%, coverage drop {thresholds.max_coverage_drop:g}, node change "
        f"{'not checked' if thresholds.max_node_change is None else f'{thresholds.max_node_change:g}%'}.",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + " --- |" * len(HEADERS),
    ]
    for review in reviews:
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in rows(review)) + " |")
    for review in reviews:
        lines += ["", f"![{review.model}]({plot_name(review)})"]
    return "\n".join(lines) + "\n"


def plot_name(review: ModelReview) -> str:
    return re.sub(r"[^\w.-]", "_", f"{review.fleet}.{review.model}" if review.fleet else review.model) + ".png"


def plot(review: ModelReview, path: Path) -> None:
    """Latency p50, tag coverage and max abs difference per run; failed runs marked with a red x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    xs = list(range(1, len(review.points) + 1))
    series = [("p50 latency (ms)", "latency_ms"), ("tag coverage", "coverage"), ("max abs diff", "parity")]
    fig, axes = plt.subplots(len(series), 1, figsize=(6, 6), sharex=True)
    for ax, (label, attr) in zip(axes, series):
        values = [getattr(p, attr) for p in review.points]
        ax.plot(xs, [float("nan") if v is None else v for v in values], marker="o")
        failed = [(x, v) for x, v, p in zip(xs, values, review.points) if p.status != "FINISHED" and v is not None]
        if failed:
            ax.scatter(*zip(*failed), marker="x", color="red", zorder=3, label="failed run")
            ax.legend(loc="best")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("run (oldest to latest)")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"{review.fleet} / {review.model}" if review.fleet else review.model)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def review(
    tracking_uri: str | None = None,
    *,
    fleet: str | None = None,
    model: str | None = None,
    last: int = 10,
    output_dir: str | Path = "review",
    thresholds: Thresholds | None = None,
    experiment: str = tracking_runs.DEFAULT_EXPERIMENT,
) -> tuple[list[ModelReview], Path]:
    """Compare, write ``review.md`` and the plots into `output_dir`; return the reviews and the Markdown path."""
    from modelexport import atomic
    from modelexport.errors import BadInputError

    thresholds = thresholds or Thresholds()
    uri = tracking_runs.resolve_tracking_uri(tracking_uri)
    database = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else None
    if database and not Path(database).is_file():
        raise BadInputError(f"no MLflow database at {database}: run the pipeline first or pass --tracking-uri")
    client = tracking_runs.connect(uri)
    groups = collect_points(client, experiment, fleet, model, last)
    if not groups:
        where = " and ".join(f"{k} '{v}'" for k, v in (("fleet", fleet), ("model", model)) if v)
        raise BadInputError(
            f"no model runs{' for ' + where if where else ''} in experiment '{experiment}' at "
            f"{tracking_runs.scrub(uri)}: run the pipeline first or pass --tracking-uri"
        )
    reviews = [review_model(f, m, points, thresholds) for (f, m), points in groups.items()]
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for item in reviews:
        plot(item, output_dir / plot_name(item))
    report = atomic.write_text(output_dir / "review.md", review_markdown(reviews, uri, thresholds))
    return reviews, report
