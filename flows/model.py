"""The one-model flow: resolve, derive inputs, export (then validate, profile, report) one model."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from modelexport import storage
from modelexport.fleet import ModelPlan, plan_model
from modelexport.outcome import ModelOutcome
from tracking import recorder

from .artifacts import report_model
from .interruption import active_flow_run
from .pipeline import collect, default_cache_dir, ending, flow_run_tags, submit_pipeline
from .spread import write_outcome


@flow(name="export-model", persist_result=False)
def model_flow(
    model: str | ModelPlan,
    output_dir: str = "out/run",
    cache_dir: str | None = None,
    name: str | None = None,
    revision: str | None = None,
    task: str | None = None,
    strategy: str | None = None,
    opset: int | None = None,
    input_spec: dict | str | None = None,
    trust_remote_code: bool | None = None,
    validation: dict | None = None,
    profiling: dict | None = None,
    tracking_uri: str | None = None,
    track: bool = True,
    outcome_to: str | None = None,
) -> ModelOutcome:
    """Export one model into OUTPUT_DIR/<name>/, its stages cached in CACHE_DIR (default OUTPUT_DIR/.cache; either
    may be a store's URL, see modelexport.storage); settings are those of a fleet file's model entry, or `model` is
    the plan the caller already made of them (``modelexport.fleet.plan_model``).

    With `track`, the model's run is logged to MLflow (tracking.runs, written by tracking.recorder) at
    `tracking_uri`. The run ends Failed (still carrying the outcome) when the model failed. With `outcome_to` (a
    location), the outcome is also written there as JSON: how a fleet flow that dispatched it reads it back.
    """
    plan = (
        model
        if isinstance(model, ModelPlan)
        else plan_model(
            model,
            base=Path.cwd(),
            name=name,
            revision=revision,
            task=task,
            strategy=strategy,
            opset=opset,
            input_spec=input_spec,
            trust_remote_code=trust_remote_code,
            validation=validation,
            profiling=profiling,
        )
    )
    if track:
        recorder.recorder()  # its start (importing MLflow) overlaps the stages
    with active_flow_run():
        runs = submit_pipeline([plan], output_dir, cache_dir or default_cache_dir(output_dir))
        outcome = collect(plan, runs[plan.name])
    if track:
        folder = storage.fetch(storage.join(output_dir, plan.name))
        recorder.log_outcome(outcome, folder, tracking_uri=tracking_uri, tags=flow_run_tags())
    if outcome_to:
        write_outcome(outcome, outcome_to)
    report_model(outcome)
    return ending(outcome, [outcome] if outcome.status != "ok" else [])
