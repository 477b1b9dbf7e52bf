"""Orchestration: the demo fleet through Prefect + MLflow, cold, against the same stages called directly in a loop
(the tasks' plain functions, ``task.fn``: no Prefect, no MLflow).

Each repetition runs, in turns, the direct loop (fresh output folder), a cold pipeline run (fresh cache, fresh
output folder) and a cold run without MLflow (``prefect_over_direct``: what orchestration alone costs).
All in one process after one untimed pipeline run, so the figures are what each further run costs; the first
run in a process also starts Prefect's ephemeral API server, timed apart (``first_run_s``), as are imports.
What a warm run costs, and how it grows with the fleet, is benchmarks/fleet_curve.py's.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import time
from pathlib import Path

from .common import WORK, another, in_turns, summary, timed


def fleet_file(quick: bool) -> Path:
    """The demo fleet (deployments/fleets/demo.yaml) pointed at tiny models built under the work folder."""
    import yaml

    from modelexport.demo_models import build_demo_models

    demo = Path(__file__).parents[1] / "deployments" / "fleets" / "demo.yaml"
    data = yaml.safe_load(demo.read_text(encoding="utf-8"))
    paths = build_demo_models(WORK / "demo-models")
    for entry in data["models"]:
        entry["id"] = str(paths[entry["name"]].resolve())
    if quick:
        data["models"] = data["models"][:2]
    path = WORK / ("fleet-quick.yaml" if quick else "fleet.yaml")
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def direct(fleet_path: Path, out: Path) -> None:
    """Every stage of every model, called in a loop as plain functions."""
    from flows.pipeline import output_name
    from modelexport.fleet import load_fleet
    from tasks import derive_inputs, export_onnx, profile_onnx, report_onnx, resolve_model, validate_onnx

    for p in load_fleet(fleet_path).models:  # as flows.pipeline runs them (an encoder-decoder: a folder of two)
        folder = out / p.name
        source = resolve_model.fn(p.id, p.revision)
        spec = derive_inputs.fn(source, p.task, p.input_spec)
        export = export_onnx.fn(
            source, str(folder / output_name(p.task)), spec, p.strategy, p.opset, p.clean, p.torch_modules, p.task
        )
        if p.validation.enabled:
            validate_onnx.fn(source, export, p.input_spec, p.validation, str(folder / "validation.json"), p.task)
        if p.profiling.enabled:
            profile_onnx.fn(export, p.profiling, str(folder))
        report_onnx.fn(export, str(folder))


def measure(quick: bool, log, deadline: float = math.inf) -> dict:
    os.environ.setdefault("PREFECT_HOME", str(WORK / "prefect-home"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
    start = time.perf_counter()
    import flows

    import_s = time.perf_counter() - start
    root = WORK / "pipeline"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    fleet = fleet_file(quick)
    uri = f"sqlite:///{root / 'mlflow.db'}"

    def run_fleet_flow(name: str, track: bool) -> None:
        summary_ = flows.run_fleet_flow(
            str(fleet), str(root / name), cache_dir=str(root / name / ".cache"), tracking_uri=uri, track=track
        )
        if summary_.failed:
            raise RuntimeError(f"fleet failed: {[(m.name, m.reason) for m in summary_.failed]}")

    cpu: dict[str, list[dict]] = {"direct": [], "cold": []}  # CPU seconds per process, per run

    def pipeline(name: str, track: bool = True, kind: str | None = None) -> float:
        return settled(lambda: run_fleet_flow(name, track), cpu[kind] if kind else None)

    def plain_loop(name: str) -> float:
        return settled(lambda: direct(fleet, root / name), cpu["direct"])

    log("pipeline: first run (starts Prefect's API server)")
    first_s = pipeline("first")
    cold, plain, bare = [], [], []
    reps = 3 if quick else 7
    while another(len(cold), reps, deadline):
        i = len(cold)
        log(f"pipeline: repetition {i + 1}/{reps} (direct, cold, cold without MLflow, in turns)")
        runs = [
            lambda i=i: plain.append(plain_loop(f"direct{i}")),
            lambda i=i: cold.append(pipeline(f"run{i}", kind="cold")),
            lambda i=i: bare.append(pipeline(f"bare{i}", track=False)),
        ]
        for run in in_turns(runs, i):
            run()
    common = {"first_run_s": round(first_s, 2), "import_s": round(import_s, 2)}
    return {
        "pipeline_over_direct": summary(
            [c / d for c, d in zip(cold, plain)],
            a_s=statistics.median(cold),
            b_s=statistics.median(plain),
            cpu_s=medians(cpu["cold"]),
            direct_cpu_s=medians(cpu["direct"]),
            **common,
        ),
        "prefect_over_direct": summary(
            [b / d for b, d in zip(bare, plain)], a_s=statistics.median(bare), b_s=statistics.median(plain)
        ),
    }


def settled(fn, cpu: list[dict] | None = None) -> float:
    """Seconds `fn` takes, timed after a pause; with `cpu`, appends the CPU seconds each process used meanwhile.

    The pause: Prefect's ephemeral API server writes a finished flow run's events to its SQLite database for a
    moment afterwards; a flow run created meanwhile gets HTTP 503 and Prefect's client retries it ~2 s later
    (measured: back-to-back empty flows take 2.2 s, 0.16 s a second apart). Scheduled runs are minutes apart."""
    time.sleep(1.0)
    before = cpu_seconds() if cpu is not None else {}
    seconds = timed(fn)
    if cpu is not None:
        after = cpu_seconds()
        cpu.append({role: round(after[role] - before.get(role, 0.0), 3) for role in after})
    return seconds


def cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) used so far by this process (the flow's) and by the processes it started:
    Prefect's ephemeral API server and the MLflow recorder. On 2 cores, what they use competes with the stages."""
    import psutil

    me = psutil.Process()
    used = {"flow_process": sum(me.cpu_times()[:2])}
    for child in me.children(recursive=True):
        try:
            command, times = " ".join(child.cmdline()), child.cpu_times()
        except psutil.Error:
            continue
        role = "prefect_server" if "uvicorn" in command else "recorder" if "tracking.recorder" in command else "other"
        used[role] = used.get(role, 0.0) + times.user + times.system
    return used


def medians(runs: list[dict]) -> dict[str, float]:
    roles = sorted({role for run in runs for role in run})
    return {role: round(statistics.median(run.get(role, 0.0) for run in runs), 2) for role in roles}
