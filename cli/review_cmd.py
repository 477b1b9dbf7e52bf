"""Compare each model's latest export run in MLflow with its previous ones: latency change, parity drift, tag
coverage drop, node-count change, strategy change. Prints a table and writes review.md plus a trend plot per model
into --output-dir. With --fail-on-regression, exits 1 when a threshold is crossed: the latest run failed (export
error or parity over tolerance), p50 latency rose more than --max-latency-increase over the median of the earlier
passing runs, tag coverage dropped more than --max-coverage-drop, or (if given) the node count changed more than
--max-node-change.
"""

from __future__ import annotations

import argparse

NAME = "review"
HELP = "compare the latest export runs in MLflow with earlier ones; flag regressions"


def percent(text: str) -> float:
    """``10%`` or ``10`` -> 10.0."""
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a percentage like 10%") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"'{text}' must be >= 0")
    return value


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 2:
        raise argparse.ArgumentTypeError(f"'{text}' must be an integer >= 2 (the latest run and at least one before)")
    return value


def add_arguments(p) -> None:
    p.add_argument("--fleet", help="only this fleet's runs")
    p.add_argument("--model", help="only this model's runs")
    p.add_argument("--last", type=positive, default=10, metavar="N", help="runs per model to consider (default 10)")
    p.add_argument("--fail-on-regression", action="store_true", help="exit 1 when any model regressed")
    p.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory)",
    )
    p.add_argument("--experiment", default="modelexport", help="MLflow experiment (default modelexport)")
    p.add_argument(
        "--output-dir",
        default="review",
        metavar="DIR",
        help="where review.md and the trend plots go (default ./review)",
    )
    p.add_argument(
        "--max-latency-increase",
        type=percent,
        default=10.0,
        metavar="PCT",
        help="p50 latency rise that is a regression (default 10%%)",
    )
    p.add_argument(
        "--max-coverage-drop",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="tag coverage drop that is a regression (default 0: any drop)",
    )
    p.add_argument(
        "--max-node-change",
        type=percent,
        default=None,
        metavar="PCT",
        help="node count change that is a regression (default: shown only)",
    )


def run(args) -> int:
    from tracking import review

    from .terminal import new_console

    thresholds = review.Thresholds(args.max_latency_increase, args.max_coverage_drop, args.max_node_change)
    reviews, report = review.review(
        args.tracking_uri,
        fleet=args.fleet,
        model=args.model,
        last=args.last,
        output_dir=args.output_dir,
        thresholds=thresholds,
        experiment=args.experiment,
    )
    console = new_console()
    console.print(review.table(reviews))
    regressed = [r for r in reviews if r.regressions]
    console.print(f"{len(regressed)} of {len(reviews)} models regressed; report: {report}")
    return 1 if regressed and args.fail_on_regression else 0
