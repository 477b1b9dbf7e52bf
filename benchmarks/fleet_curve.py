"""The fleet cost curve: cold and warm fleet time against the number of models, as fixed cost + cost per model.

Fleets of N = 4, 16 and 64 tiny models (four families in turn, each model its own random weights, so its own
content and its own cache entries) and one of three base-size models (BERT-base, GPT-2 small, ResNet-50, from
their default configs with random weights), each exported, validated and profiled as the demo fleet is. Each fleet
runs cold once (empty cache, new output folder) through the CLI (``python -m cli run-fleet``, one process, as a
user or a nightly job runs it), then warm (the same again: every stage but resolving is a cache hit) WARM_REPS
times each of two ways in turns: through the CLI, and in this long-lived process (``flows.run_fleet_flow``, after
an untimed run that starts Prefect's API server). Each fleet tracks to an MLflow SQLite database of its own.
The cold run is not repeated in-process: its cost per model is the stages' work either way, and a cold N = 64
run is minutes on 2 cores (`make bench` must end within 20 minutes).

A least-squares line over N gives fixed cost and cost per model, cold and each way warm. The base-size fleet's cost
per model is its time less the tiny line's fixed cost (same way, same temperature), over 3. The figures: the warm
per-model cost (tiny; ≤ 0.25 s), warm per-model ÷ cold per-model (base-size; ≤ 0.05) and how straight each line
is: the cost per model from 16 to 64 models ÷ that from 4 to 16 (a per-model cost that grows with N shows as > 1).
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .common import WORK, BenchModel, another, build

TINY_N = (4, 16, 64)
QUICK_N = (1, 2, 4)
TINY_FAMILIES = ("tiny-bert", "tiny-gpt2", "tiny-vit", "tiny-resnet")
WARM_REPS = 3  # warm runs per fleet (their median is used); a cold run is minutes at N = 64, so it runs once


def _config(name: str):
    def config():
        import transformers

        return getattr(transformers, name)()

    return config


BASE_MODELS = (
    BenchModel("bert-base", "BertModel", _config("BertConfig")),
    BenchModel("gpt2-small", "GPT2Model", _config("GPT2Config")),
    BenchModel("resnet-50", "ResNetModel", _config("ResNetConfig")),
)
WAYS = ("cli", "in_process")
COLOURS = (("cli", "tab:orange"), ("in_process", "tab:green"))
REPO = Path(__file__).parents[1]


def tiny_models(n: int, directory: Path = WORK / "fleet-models") -> list[Path]:
    """`n` tiny models, the families in turn, model i with seed i: each its own weights. Built once, reused."""
    import torch
    import transformers

    from modelexport.demo_models import _configs

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    configs = _configs()
    paths = []
    for i in range(n):
        family = TINY_FAMILIES[i % len(TINY_FAMILIES)]
        path = directory / f"{family}-{i}"
        if not (path / "model.safetensors").is_file():
            class_name, config = configs[family]
            torch.manual_seed(i)
            getattr(transformers, class_name)(config).save_pretrained(path)
        paths.append(path)
    return paths


# ResNet-50's random weights give activations in the hundreds: its ONNX output differs from torch's by 3.7e-4 (6%
# of a value near 0), past the default atol of 1e-4 of both `auto`'s candidate check (which rejected every strategy)
# and the demo fleet's validation. So the base-size fleet names its strategy and validates at 1e-3.
BASE_SETTINGS = {"strategy": "htp", "validate": {"atol": 1e-3}}


def fleet_file(path: Path, name: str, models: list[Path], settings: dict | None = None) -> Path:
    """A fleet file of `models` with the demo fleet's settings (export, validate, profile), `settings` over them
    (sections merged key by key)."""
    import yaml

    demo = yaml.safe_load((REPO / "deployments" / "fleets" / "demo.yaml").read_text(encoding="utf-8"))
    defaults = dict(demo["defaults"])
    for key, value in (settings or {}).items():
        defaults[key] = defaults.get(key, {}) | value if isinstance(value, dict) else value
    data = {
        "name": name,
        "defaults": defaults,
        "models": [{"id": str(m.resolve()), "name": m.name} for m in models],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def fit(ns: list[int], seconds: list[float]) -> dict:
    """Least-squares line seconds = fixed + per_model × N, its residuals, and the per-model cost of the last
    segment ÷ that of the first (``straightness``: ≈ 1 for a straight line, > 1 when a model's cost grows with N)."""
    mean_n, mean_s = statistics.fmean(ns), statistics.fmean(seconds)
    per_model = sum((n - mean_n) * (s - mean_s) for n, s in zip(ns, seconds)) / sum((n - mean_n) ** 2 for n in ns)
    fixed = mean_s - per_model * mean_n
    first = (seconds[1] - seconds[0]) / (ns[1] - ns[0])
    last = (seconds[-1] - seconds[-2]) / (ns[-1] - ns[-2])
    return {
        "fixed_s": fixed,
        "per_model_s": per_model,
        "residuals_s": [s - (fixed + per_model * n) for n, s in zip(ns, seconds)],
        "straightness": last / first if first > 0 else math.inf,
    }


def run_fleet(way: str, fleet: Path, out: Path) -> None:
    """Run `fleet` into `out` one way: the CLI in a process of its own, or run_fleet_flow in this one."""
    uri = f"sqlite:///{out.parent / (out.name + '-mlflow.db')}"
    if way == "cli":
        command = [sys.executable, "-m", "cli", "run-fleet", str(fleet), "--output-dir", str(out), "--tracking-uri"]
        done = subprocess.run([*command, uri], cwd=REPO, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"run-fleet exited {done.returncode}: {done.stderr[-2000:]}")
        return
    import flows

    summary = flows.run_fleet_flow(str(fleet), str(out), tracking_uri=uri)
    if summary.failed:
        raise RuntimeError(f"fleet failed: {[(m.name, m.reason) for m in summary.failed]}")


def measure(quick: bool, log, deadline: float = math.inf) -> dict:
    """Every fleet cold, then warm both ways; returns results.json's ``fleet_curve``."""
    from .pipeline_cost import settled

    os.environ.setdefault("PREFECT_HOME", str(WORK / "prefect-home"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
    root = WORK / "fleet-curve"
    shutil.rmtree(root, ignore_errors=True)
    ns = QUICK_N if quick else TINY_N
    models = tiny_models(max(ns))
    fleets = {str(n): fleet_file(root / f"tiny-{n}.yaml", f"tiny-{n}", models[:n]) for n in ns}
    base = [build(m) for m in BASE_MODELS] if not quick else tiny_models(3, WORK / "fleet-models-quick")
    fleets["base"] = fleet_file(root / "base.yaml", "base", base, BASE_SETTINGS)
    log("fleet curve: in-process warm-up (imports, Prefect's API server)")
    run_fleet("in_process", fleet_file(root / "warm-up.yaml", "warm-up", models[:1]), root / "warm-up")
    times: dict = {"cold_s": {}, "warm_s": {way: {} for way in WAYS}}
    for key, fleet in fleets.items():
        out = root / key
        log(f"fleet curve: {key} models, cold through the CLI")
        times["cold_s"][key] = settled(functools.partial(run_fleet, "cli", fleet, out))
        warm = {way: times["warm_s"][way].setdefault(key, []) for way in WAYS}
        while another(len(warm["in_process"]), WARM_REPS, deadline):
            for way in WAYS:
                warm[way].append(settled(functools.partial(run_fleet, way, fleet, out)))
        log(
            f"fleet curve: {key}: cold {times['cold_s'][key]:.1f} s; warm "
            + "; ".join(f"{way} {', '.join(f'{w:.2f}' for w in warm[way])} s" for way in WAYS)
        )
    log(f"fleet curve: seconds {json.dumps(times)}")
    return figures(times, list(ns), len(base)) | {"times_s": times}


def figures(times: dict, ns: list[int], base_models: int) -> dict:
    """The curve's figures from the measured times: ``cold_s`` fleet ("4", ..., "base") -> seconds, ``warm_s``
    way -> fleet -> the warm runs' seconds."""
    cold = fit(ns, [times["cold_s"][str(n)] for n in ns])
    base_cold = (times["cold_s"]["base"] - cold["fixed_s"]) / base_models
    out: dict = {
        "cold": {
            "per_model_s": _figure(
                cold["per_model_s"], line=cold, seconds={str(n): times["cold_s"][str(n)] for n in ns}
            ),
            "straightness": _figure(cold["straightness"]),
            "base_per_model_s": _figure(
                base_cold, note=f"fleet {times['cold_s']['base']:.1f} s less the fixed cost, over {base_models}"
            ),
        }
    }
    for way, fleets in times["warm_s"].items():
        out[way] = _warm_figures(fleets, ns, cold, base_cold, base_models)
    return out


def _warm_figures(fleets: dict, ns: list[int], cold: dict, base_cold: float, base_models: int) -> dict:
    """One way's warm figures; each from the median run of every fleet, its min and max from the fastest and the
    slowest runs."""
    warms = {stat: fit(ns, [stat(fleets[str(n)]) for n in ns]) for stat in (min, statistics.median, max)}
    base_warm = {stat: (stat(fleets["base"]) - warms[stat]["fixed_s"]) / base_models for stat in warms}
    reps = min(len(runs) for runs in fleets.values())

    def spread(value: Callable[[object], float], **extra) -> dict:
        return _figure(*(value(stat) for stat in (statistics.median, min, max)), n=reps, **extra)

    return {
        "tiny": {
            "warm_per_model_s": spread(
                lambda stat: warms[stat]["per_model_s"],
                line=warms[statistics.median],
                seconds={str(n): statistics.median(fleets[str(n)]) for n in ns},
            ),
            "warm_over_cold": spread(lambda stat: warms[stat]["per_model_s"] / cold["per_model_s"]),
            "warm_straightness": spread(lambda stat: warms[stat]["straightness"]),
        },
        "base": {
            "warm_over_cold": spread(
                lambda stat: base_warm[stat] / base_cold,
                cold_per_model_s=base_cold,
                warm_per_model_s=base_warm[statistics.median],
                warm_fleet_s=statistics.median(fleets["base"]),
            ),
        },
    }


def _figure(median: float, low: float | None = None, high: float | None = None, n: int = 1, **extra) -> dict:
    low, high = (median if low is None else low), (median if high is None else high)
    return {"median": median, "min": min(low, median, high), "max": max(low, median, high), "n": n, **extra}


def note(figure: dict) -> str:
    """The table's detail for a curve figure: its line and the times it was fitted to."""
    parts = []
    if "line" in figure:
        line = figure["line"]
        parts.append(f"{line['fixed_s']:.2f} s + {line['per_model_s']:.3f} s/model")
        parts.append("residuals " + ", ".join(f"{r:+.2f}" for r in line["residuals_s"]) + " s")
    if "seconds" in figure:
        parts.append("N=" + ", ".join(f"{n}: {s:.1f} s" for n, s in figure["seconds"].items()))
    if "cold_per_model_s" in figure:
        parts.append(f"{figure['warm_per_model_s']:.3f} s vs {figure['cold_per_model_s']:.2f} s per model")
        parts.append(f"warm fleet {figure['warm_fleet_s']:.1f} s")
    return "; ".join(parts)


def plot(results: dict, path: Path) -> None:
    """Time against N, cold and warm, one panel per way, the fitted lines drawn through the points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = results["fleet_curve"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    lines = [("cold (CLI)", curve["cold"]["per_model_s"], "tab:blue")]
    lines += [(f"warm ({way.replace('_', '-')})", curve[way]["tiny"]["warm_per_model_s"], c) for way, c in COLOURS]
    for label, figure, colour in lines:
        ns = [int(n) for n in figure["seconds"]]
        line = figure["line"]
        ax.plot(ns, list(figure["seconds"].values()), "o", color=colour)
        ax.plot(
            [0, max(ns)],
            [line["fixed_s"], line["fixed_s"] + line["per_model_s"] * max(ns)],
            "-",
            color=colour,
            alpha=0.6,
            label=f"{label}: {line['fixed_s']:.1f} s + {line['per_model_s']:.3f} s × N",
        )
    ax.set(title="tiny-model fleets", xlabel="models (N)", ylabel="fleet seconds")
    ax.set_xlim(left=0), ax.set_ylim(bottom=0), ax.grid(alpha=0.3), ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
