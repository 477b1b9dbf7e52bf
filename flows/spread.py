"""A fleet's models handed to a work pool: each is a run of the one-model deployment, taken by whichever worker is
free, on any machine. The workers share only the store (outputs and cache), the Prefect server and MLflow.

The fleet flow waits for each run (``run_deployment``, linked to it as a subflow) and reads the model's outcome back
from the store, where the model flow wrote it: the child's return value would need result storage registered on
the server. MLflow records stay the fleet flow's (nested under its fleet run), as for models run in-process.
"""

from __future__ import annotations

import dataclasses
import json
import uuid

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelexport import storage
from modelexport.fleet import ModelPlan
from modelexport.outcome import ModelOutcome

POLL_S = 1  # how often the fleet flow looks at a model's run (Prefect's default is 5 s)


@task(name="dispatch", cache_policy=NO_CACHE, persist_result=False)
def dispatch_model(plan: ModelPlan, output_dir: str, cache_dir: str, deployment: str) -> ModelOutcome:
    """Run PLAN as a run of DEPLOYMENT (``flow/deployment`` of ``model_flow``) and return its outcome."""
    from prefect.deployments import run_deployment
    from pydantic import TypeAdapter

    location = storage.join(cache_dir, "outcomes", f"{uuid.uuid4().hex}.json")
    parameters = {
        "model": TypeAdapter(ModelPlan).dump_python(plan, mode="json"),
        "output_dir": output_dir,
        "cache_dir": cache_dir,
        "track": False,  # the fleet flow records it, nested under the fleet's run
        "outcome_to": location,
    }
    run = run_deployment(deployment, parameters=parameters, timeout=None, poll_interval=POLL_S, as_subflow=True)
    try:
        return read_outcome(location)
    except FileNotFoundError:
        outcome = ModelOutcome(plan.name, plan.id, status="failed", failed_stage="model", exit_code=1)
        outcome.reason = f"flow run {run.name} of {deployment} ended {run.state.name} without an outcome"
        return outcome


def dispatched(plan: ModelPlan, future) -> ModelOutcome:
    """The outcome a dispatch future carries, or a failed one saying why the run could not be dispatched."""
    from modelexport.errors import one_line
    from modelexport.redaction import scrub

    value = future.result(raise_on_failure=False)
    if isinstance(value, ModelOutcome):
        return value
    outcome = ModelOutcome(plan.name, plan.id, status="failed", failed_stage="model", exit_code=1)
    outcome.reason = scrub(one_line(value) if isinstance(value, BaseException) else str(future.state.message))
    return outcome


def write_outcome(outcome: ModelOutcome, location: str) -> None:
    """The model flow's side: its outcome as JSON at LOCATION (committed like every other file)."""
    from modelexport.atomic import write_text

    local = storage.local_path(location)
    local.parent.mkdir(parents=True, exist_ok=True)
    write_text(local, json.dumps(dataclasses.asdict(outcome)))
    storage.commit([location])


def read_outcome(location: str) -> ModelOutcome:
    return ModelOutcome(**json.loads(storage.fetch(location).read_text(encoding="utf-8")))
