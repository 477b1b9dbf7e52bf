"""``python -m benchmarks.run [--quick] [--only NAME ...]``: measure, print a table, write results.json and .md.

Every figure is a ratio of two things timed alternately in this one run (see common.interleaved), reported as
the median over the repetitions with min and max. ``--quick`` runs the same code on tiny models with few
repetitions (a smoke test, not a measurement) and writes nowhere unless ``--output`` says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from . import export_cost, runtime_cost
from .common import FULL_MODELS, MIN_REPS, QUICK_MODELS, TORCH_MODELS, WORK

HERE = Path(__file__).parent
TORCH_MODEL_STRATEGIES = {"fx"}  # cannot trace the transformers models: also measured on plain torch ones
FIGURES = (
    "tag_cost",
    "tagging_pass",
    "runtime_cost",
    "profiling_overhead",
    "attribution",
    "decode_cache",
    "pipeline",
    "fleet_curve",
)
# Seconds the measuring may take before the tag-cost and pipeline figures (nine tenths of a run) drop to their
# minimum of repetitions (common.another). `make bench` on a fresh clone must end within 20 minutes on 2 cores, the
# install included (~2.5 min). A usual day of this VM measures in 12-13 min, a slow one in 16 (with the budget:
# 15.5, the pipeline figures at 5 of their 7 repetitions); a slower one ends soon after the budget, not minutes later.
# The fleet curve runs last, in full (one cold run per fleet, three warm runs each way), ~7 min on a quiet day
# (estimated: measured on a loaded machine it took 15), so the figures before it get 11 minutes.
BUDGET_S = 11 * 60
# figure -> (target, what it means); a target is an upper bound on the median ratio.
TARGETS = {
    "tag_cost": 1.05,
    "tagging_pass.largest_over_smallest": 1.25,
    "runtime_cost": 1.03,
    "pipeline_over_direct": 1.15,
    "decode_cache_over_prefix": 0.5,
}
TARGETS["fleet_curve.cold.straightness"] = 1.25  # the fleet curve (benchmarks/fleet_curve.py)
for _way in ("cli", "in_process"):  # its warm runs, both ways
    TARGETS[f"fleet_curve.{_way}.tiny.warm_per_model_s"] = 0.25  # seconds
    TARGETS[f"fleet_curve.{_way}.tiny.warm_straightness"] = 1.25
    TARGETS[f"fleet_curve.{_way}.base.warm_over_cold"] = 0.05


def measure(quick: bool, only: set[str], log, budget_s: float = BUDGET_S) -> dict:
    """Run the selected figures; returns the results.json content."""
    from modelexport.strategies import STRATEGIES

    models = QUICK_MODELS if quick else FULL_MODELS
    reps = 3 if quick else 5
    deadline = START + budget_s
    results: dict = {"meta": meta(quick) | {"budget_s": budget_s}}
    if "tag_cost" in only:
        results["tag_cost"] = {}
        for strategy in STRATEGIES:
            for model in models + (TORCH_MODELS if strategy in TORCH_MODEL_STRATEGIES and not quick else ()):
                log(f"tag cost: {strategy} on {model.name}")
                results["tag_cost"].setdefault(strategy, {})[model.name] = export_cost.tag_cost(
                    model, strategy, reps, min_seconds=0 if quick else 40, deadline=deadline
                )
    if "tagging_pass" in only:
        log("tagging pass on 1x/4x/16x layers")
        results["tagging_pass"] = export_cost.tagging_scaling((1, 2, 4) if quick else (1, 4, 16), 3 if quick else 31)
    if only & {"runtime_cost", "profiling_overhead", "attribution"}:
        for model in models:
            tagged, clean = runtime_files(model)
            if "attribution" in only:
                from . import attribution_check

                log(f"module times against each block's own subgraph on {model.name}")
                results.setdefault("attribution", {})[model.name] = attribution_check.block_check(
                    tagged, runs=20 if quick else 100
                )
            if "runtime_cost" in only:
                log(f"runtime cost on {model.name}")
                results.setdefault("runtime_cost", {})[model.name] = runtime_cost.runtime_cost(
                    tagged, clean, block_s=0.05 if quick else 0.6, reps=3 if quick else 8
                )
            if "profiling_overhead" in only:
                log(f"profiling overhead on {model.name}")
                results.setdefault("profiling_overhead", {})[model.name] = runtime_cost.profiling_overhead(
                    tagged, block_s=0.05 if quick else 0.6, reps=3 if quick else 8
                )
    if "decode_cache" in only:
        from . import decode_cost

        results.update(decode_cost.measure(quick, log))
    if "pipeline" in only:
        from . import pipeline_cost

        results.update(pipeline_cost.measure(quick, log, deadline))
    if "fleet_curve" in only:
        from . import fleet_curve

        results["fleet_curve"] = fleet_curve.measure(quick, log, deadline)
    results["meta"]["seconds"] = round(time.perf_counter() - START, 1)
    return results


def runtime_files(model) -> tuple[Path, Path]:
    """The tagged and the clean (``--clean``) htp export of `model`."""
    from modelexport.export import export_model

    from .common import build

    directory = WORK / "runtime"
    directory.mkdir(parents=True, exist_ok=True)
    tagged, clean = directory / f"{model.name}.onnx", directory / f"{model.name}.clean.onnx"
    export_model(str(build(model)), tagged, strategy="htp")
    export_model(str(build(model)), clean, strategy="htp", clean=True)
    return tagged, clean


def meta(quick: bool) -> dict:
    import onnxruntime
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "quick": quick,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "cpus": os.cpu_count(),
        "load_average_at_start": load,
    }


def rows(results: dict) -> list[tuple[str, dict, float | None]]:
    """(key, figure, target) for every figure, in a stable order."""
    out = []

    def visit(prefix: str, value: dict) -> None:
        if "median" in value:
            target = TARGETS.get(prefix, TARGETS.get(prefix.split(".")[0]))
            out.append((prefix, value, target))
            return
        for key, item in value.items():
            if isinstance(item, dict):
                visit(f"{prefix}.{key}" if prefix else key, item)

    visit("", {k: v for k, v in results.items() if k != "meta"})
    return out


def detail(figure: dict) -> str:
    if figure.get("error"):
        return figure["error"]
    if "a_s" in figure:
        text = f"{figure['a_s']:.2f} s vs {figure['b_s']:.2f} s"
        if figure.get("cpu_s"):
            text += "; CPU s: " + ", ".join(f"{role} {s:.2f}" for role, s in figure["cpu_s"].items())
        if figure.get("direct_cpu_s"):
            text += f" (direct loop: {sum(figure['direct_cpu_s'].values()):.2f})"
        return text
    if "a_ms" in figure:
        return f"{figure['a_ms']:.2f} ms vs {figure['b_ms']:.2f} ms"
    if "line" in figure or "cold_per_model_s" in figure:
        from .fleet_curve import note

        return note(figure)
    if figure.get("unit") == "us/node":
        return f"µs per node, {figure['nodes']} nodes"
    return figure.get("note", "")


def verdict(figure: dict, target: float | None) -> str:
    if figure.get("median") is None:
        return "not measured"
    if target is None:
        return ""
    return "yes" if figure["median"] <= target else "NO"


def markdown(results: dict) -> str:
    lines = [
        "| figure | median | min | max | target | met | detail |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for key, fig, target in rows(results):
        nums = [f"{fig[k]:.3f}" if fig.get(k) is not None else "–" for k in ("median", "min", "max")]
        lines.append(
            f"| `{key}` | {' | '.join(nums)} | {'≤ ' + str(target) if target else ''} | "
            f"{verdict(fig, target)} | {detail(fig)} |"
        )
    return "\n".join(lines) + "\n"


def print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"modelexport benchmarks ({'quick' if results['meta']['quick'] else 'full'}, "
        f"{results['meta']['seconds']} s)"
    )
    for col in ("figure", "median", "min", "max", "target", "met", "detail"):
        table.add_column(col, justify="right" if col in ("median", "min", "max", "target") else "left")
    for key, fig, target in rows(results):
        nums = [f"{fig[k]:.3f}" if fig.get(k) is not None else "–" for k in ("median", "min", "max")]
        table.add_row(key, *nums, f"≤ {target}" if target else "", verdict(fig, target), detail(fig))
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table)


START = time.perf_counter()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models, few repetitions: a smoke test")
    parser.add_argument("--only", nargs="+", choices=FIGURES, default=list(FIGURES), help="figures to measure")
    parser.add_argument(
        "--budget",
        type=float,
        default=BUDGET_S,
        metavar="SECONDS",
        help=f"past this, the tag-cost and pipeline figures stop at {MIN_REPS} repetitions (default {BUDGET_S})",
    )
    parser.add_argument(
        "--output", type=Path, help="results.json path (default: benchmarks/results.json, none with --quick)"
    )
    args = parser.parse_args(argv)
    output = args.output or (None if args.quick else HERE / "results.json")

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - START:6.1f} s] {message}", file=sys.stderr, flush=True)

    results = measure(args.quick, set(args.only), log, args.budget)
    print_table(results)
    if output is not None:
        from modelexport import atomic

        atomic.write_text(output, json.dumps(results, indent=1) + "\n")
        atomic.write_text(output.with_suffix(".md"), markdown(results))
        log(f"wrote {output} and {output.with_suffix('.md')}")
        if "fleet_curve" in results:
            from .fleet_curve import plot

            plot(results, output.with_name("fleet_curve.png"))
            log(f"wrote {output.with_name('fleet_curve.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
