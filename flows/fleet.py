"""The fleet flow: every model of a fleet file through the pipeline, concurrently; failures are recorded."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

from prefect import flow
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from modelexport import storage
from modelexport.fleet import Fleet, check_output_folders, load_fleet
from modelexport.outcome import ModelOutcome
from tracking import recorder

from .artifacts import Artifacts, artifact_key, report_fleet, report_model
from .interruption import active_flow_run
from .pipeline import collect, default_cache_dir, ending, flow_run_tags, submit_pipeline
from .spread import dispatch_model, dispatched

DEFAULT_CONCURRENCY = 2
PROGRESS_EVERY_S = 1.0  # at most one progress update a second (each is an API call), and one at the end


@dataclass
class FleetSummary:
    name: str
    output_dir: str
    models: list[ModelOutcome]

    @property
    def failed(self) -> list[ModelOutcome]:
        return [m for m in self.models if m.status != "ok"]


@flow(name="export-fleet", persist_result=False, task_runner=ThreadPoolTaskRunner(max_workers=DEFAULT_CONCURRENCY))
def fleet_flow(
    fleet_file: str | Fleet,
    output_dir: str | None = None,
    cache_dir: str | None = None,
    on_model_done: Callable[[ModelOutcome], None] | None = None,
    tracking_uri: str | None = None,
    track: bool = True,
    spread_over: str | None = None,
) -> FleetSummary:
    """Export every model of FLEET_FILE (or of the fleet the caller already read from it) into OUTPUT_DIR/<name>/
    and end with a summary table.

    Concurrency is the task runner's: ``fleet_flow.with_options(task_runner=ThreadPoolTaskRunner(N))``.
    With `spread_over` (a deployment of ``model_flow``, e.g. ``export-model/single-model``), each model is a run of
    that deployment, taken by any worker of its pool (flows.spread); OUTPUT_DIR and CACHE_DIR should then be in a
    store they all reach.
    With `track`, the fleet run is an MLflow run and each model a run nested under it (tracking.runs), written
    by the recorder process (tracking.recorder) while the next models compute.
    The run ends Failed (still carrying the summary) when a model failed; the others still ran.
    """
    fleet = fleet_file if isinstance(fleet_file, Fleet) else load_fleet(fleet_file)
    params = {"fleet.file": str(fleet.path), "fleet.models": len(fleet.models)}
    run = (
        recorder.fleet_run(
            fleet.name, tracking_uri=tracking_uri, params=params, models=len(fleet.models), tags=flow_run_tags()
        )
        if track
        else nullcontext()
    )
    # Leaving the blocks, the last records and the last artifacts are written at once (the run's end first).
    with active_flow_run(), Artifacts() as artifacts, run as records:
        summary = _export_fleet(fleet, output_dir, cache_dir, spread_over, on_model_done, records, artifacts)
    return ending(summary, summary.failed)


def _export_fleet(
    fleet, output_dir, cache_dir, spread_over, on_model_done, records: recorder.FleetRecords | None, artifacts
) -> FleetSummary:
    out = output_dir or f"out/{fleet.name}"
    cache = cache_dir or default_cache_dir(out)
    check_output_folders(fleet, out, cache_dir)
    progress = artifacts.progress(
        artifact_key("fleet", fleet.name, "progress"), f"models of fleet {fleet.name} finished"
    )
    plans = {p.name: p for p in fleet.models}
    if spread_over:
        last = {dispatch_model.submit(p, out, cache, spread_over): p.name for p in fleet.models}

        def outcome_of(future, name: str) -> ModelOutcome:
            return dispatched(plans[name], future)
    else:
        runs = submit_pipeline(fleet.models, out, cache)
        last = {list(stages.values())[-1]: name for name, stages in runs.items()}

        def outcome_of(future, name: str) -> ModelOutcome:
            return collect(plans[name], runs[name])

    outcomes: dict[str, ModelOutcome] = {}
    shown = time.monotonic()
    for future in as_completed(list(last)):
        name = last[future]
        outcome = outcomes[name] = outcome_of(future, name)
        if records is not None:
            records.log(outcome, storage.fetch(storage.join(out, name)))
        artifacts.post(report_model, outcome, fleet.name)
        if len(outcomes) == len(plans) or time.monotonic() - shown > PROGRESS_EVERY_S:
            progress(100 * len(outcomes) / len(plans))
            shown = time.monotonic()
        if on_model_done is not None:
            on_model_done(outcome)
    summary = FleetSummary(fleet.name, out, [outcomes[p.name] for p in fleet.models])
    artifacts.post(report_fleet, fleet.name, summary.models)
    return summary
