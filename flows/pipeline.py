"""The chain of stages of each model, and what came out of it per model.

Per model, the flow submits two task runs: resolving (never cached: it is what notices changed weights) and
``model``, which runs the other stages in order as nested task runs, each cached on its own key. ``model`` is
cached too, keyed on the resolved content, the model's settings and its folder, and counts only while every file
of every stage is intact: a re-run of an unchanged model is one resolve and one cache hit instead of a task run
per stage, and a changed setting re-runs only the stages it reaches. A thread pool of N workers works on N models
at once (their computing still takes turns, see tasks.policy.computing).
"""

from __future__ import annotations

import functools
from dataclasses import replace

from prefect import task
from prefect.futures import PrefectFuture
from prefect.transactions import CommitMode, transaction

from modelexport import storage
from modelexport.fleet import ModelPlan
from modelexport.outcome import ModelOutcome
from modelexport.redaction import scrub
from modelexport.source import ModelSource
from tasks import Produced, derive_inputs, export_onnx, profile_onnx, report_onnx, resolve_model, validate_onnx
from tasks.locks import StoreLocks
from tasks.policy import CONTENT, produced

STAGES = ("resolve", "inputs", "export", "validate", "profile", "report")
ONNX_NAME = "model.onnx"
DIRECTORY_NAME = "model"  # an encoder-decoder with its cache: model/encoder_model.onnx, model/decoder_model.onnx


def output_name(task: str | None) -> str:
    """Where a model's export goes in its folder: ``model.onnx``, or the ``model`` directory of two files."""
    from modelexport import seq2seq

    return DIRECTORY_NAME if seq2seq.is_seq2seq(task) else ONNX_NAME


def stages_of(plan: ModelPlan) -> list[str]:
    """The stages PLAN runs, in order."""
    return [
        s for s in STAGES if (s != "validate" or plan.validation.enabled) and (s != "profile" or plan.profiling.enabled)
    ]


def submit_pipeline(plans: list[ModelPlan], output_dir: str, cache_dir: str) -> dict[str, dict[str, PrefectFuture]]:
    """Submit every model (every download first) into OUTPUT_DIR/<name>, cached in CACHE_DIR (paths or store URLs);
    returns model name -> {"resolve": future, "model": future} ("model" absent where resolving failed).

    A model's stages get its resolved source as a value, not as the resolve future: given a future, Prefect reads
    that task run back from its API before starting the next (a third of a fully cached run's worker time); it
    tracks the value's lineage all the same.
    """
    runs = {p.name: {"resolve": resolve_model.submit(p.id, p.revision)} for p in plans}
    stages = cached_in(cache_dir)
    for p in plans:
        resolved = runs[p.name]["resolve"]
        resolved.wait()
        if resolved.state.is_completed():
            runs[p.name]["model"] = stages.submit(resolved.result(), p, storage.join(output_dir, p.name))
    return runs


@functools.lru_cache(maxsize=8)
def cached_in(cache_dir: str):
    """The ``model`` task with its results (and its nested stages') in CACHE_DIR, and locked there: two processes
    (or workers on two machines) that start the same model at once compute it once."""
    from tasks.policy import result_storage

    if not storage.is_remote(cache_dir):
        cache_dir = str(storage.as_local(cache_dir).absolute())
    return export_stages.with_options(
        result_storage=result_storage(cache_dir),
        cache_policy=CONTENT.configure(
            isolation_level="SERIALIZABLE", lock_manager=StoreLocks(storage.join(cache_dir, "locks"))
        ),
    )


class ModelFailed(Exception):
    """A stage of the model failed (or its validation did): carries the outcome; never cached."""

    def __init__(self, outcome: ModelOutcome):
        super().__init__(outcome)
        self.outcome = outcome

    def __str__(self) -> str:
        return f"{self.outcome.name} failed at {self.outcome.failed_stage}: {self.outcome.reason}"


@task(name="model", cache_policy=CONTENT, persist_result=True)
def export_stages(source: ModelSource, plan: ModelPlan, folder: str) -> Produced:
    """Inputs, export, validate, profile and report of one model, each a nested (cached) task run.

    Returns the outcome with every file the stages wrote, so that a cache hit counts only while they are intact;
    raises ModelFailed when the model failed, so a failure is never a cache hit.
    """
    # Nested task runs would commit their cache records only when this one does; eagerly, a stage that finished
    # stays cached when a later stage fails or the process is killed.
    with transaction(commit_mode=CommitMode.EAGER):
        outcome = run_stages(source, plan, folder)
    if outcome.status != "ok":
        raise ModelFailed(outcome)
    return produced({"outcome": outcome}, *outcome.stamps)


_SKIP = object()  # the value of a stage that failed or was skipped: stages that need it are skipped


def run_stages(source: ModelSource, plan: ModelPlan, folder: str) -> ModelOutcome:
    """Run the stages after resolving in order, into FOLDER (a path or store URL); a failed stage skips those that
    need its result."""
    outcome = ModelOutcome(plan.name, plan.id, stages={"resolve": "done"}, source=source.to_dict())

    def stage(name: str, fn, *args):
        if any(a is _SKIP for a in args):
            outcome.stages[name] = "skipped"
            return _SKIP
        state = fn(*args, return_state=True)
        if state.is_completed():
            value = state.result()
            outcome.stages[name] = "cached" if state.name == "Cached" else "done"
            _record(outcome, name, value)
            return value
        outcome.stages[name] = "failed"
        if outcome.status == "ok":
            outcome.status, outcome.failed_stage = "failed", name
            outcome.reason, outcome.exit_code = _reason(state)
        return _SKIP

    trust = plan.trust_remote_code
    spec = stage("inputs", derive_inputs, source, plan.task, plan.input_spec, trust)
    export = stage(
        "export",
        export_onnx,
        source,
        storage.join(folder, output_name(plan.task)),
        spec,
        plan.strategy,
        plan.opset,
        plan.clean,
        plan.torch_modules,
        plan.task,
        trust,
        plan.max_memory_gb,
        plan.dtype,
        plan.stream_weights,
    )
    if plan.validation.enabled:
        stage(
            "validate",
            validate_onnx,
            source,
            export,
            plan.input_spec,  # the user's, if any: validation derives the rest itself, and exercises the model
            plan.validation,
            storage.join(folder, "validation.json"),
            plan.task,
            trust,
            plan.max_memory_gb,
        )
    if plan.profiling.enabled:
        stage("profile", profile_onnx, export, plan.profiling, folder)
    stage("report", report_onnx, export, folder)
    validation = outcome.results.get("validate", {})
    if outcome.status == "ok" and validation.get("passed") is False:
        outcome.status, outcome.failed_stage, outcome.exit_code = "failed", "validate", 1
        outcome.reason = f"validation failed: {validation.get('summary')}"
    return outcome


def collect(plan: ModelPlan, futures: dict[str, PrefectFuture]) -> ModelOutcome:
    """Wait for a model's runs and gather what they produced; the first failure gives the model's reason."""
    resolved, model = futures["resolve"], futures.get("model")
    resolved.wait()
    if model is None or not resolved.state.is_completed():
        return _failed_outside_stages(plan, "resolve", resolved.state)
    model.wait()
    state = model.state
    if state.is_completed():
        outcome = replace(state.result().data["outcome"])
        if state.name == "Cached":  # the stored outcome is that of the run that computed it
            outcome.stages = {s: v if s == "resolve" else "cached" for s, v in outcome.stages.items()}
        outcome.source = resolved.result().to_dict()
        return outcome
    error = state.result(raise_on_failure=False)
    if isinstance(error, ModelFailed):
        return error.outcome
    return _failed_outside_stages(plan, "model", state)


def _failed_outside_stages(plan: ModelPlan, where: str, state) -> ModelOutcome:
    """A model whose stages never reported: resolving failed, or the `model` task itself did (a crash)."""
    outcome = ModelOutcome(
        plan.name,
        plan.id,
        status="failed",
        failed_stage=where,
        stages={s: "skipped" for s in stages_of(plan)} | {"resolve": "failed" if where == "resolve" else "done"},
    )
    outcome.reason, outcome.exit_code = _reason(state)
    return outcome


def default_cache_dir(output_dir: str) -> str:
    return storage.join(output_dir, ".cache")


def flow_run_tags() -> dict:
    """The MLflow tags that tie a record to the Prefect flow run we are inside."""
    from prefect.runtime import flow_run

    from tracking.mlflow_artifacts import TAG

    return {TAG + "prefect_flow_run_id": str(flow_run.id) if flow_run.id else None}


def ending(value, failed: list[ModelOutcome]):
    """What a flow returns: VALUE, or a Failed state carrying it when a model failed, so that the flow run, the UI
    and `prefect deployment run --watch` say the export failed. Call such a flow with ``return_state=True``.
    """
    if not failed:
        return value
    from prefect.states import Failed

    first = failed[0]
    more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    return Failed(message=scrub(f"{first.name} failed at {first.failed_stage}: {first.reason}{more}"), data=value)


def _record(outcome: ModelOutcome, stage: str, value) -> None:
    if isinstance(value, ModelSource):
        outcome.source = value.to_dict()
    elif isinstance(value, Produced):
        outcome.results[stage] = value.data
        outcome.files[stage] = list(value.files)
        outcome.stamps.update(value.files)
    elif isinstance(value, dict):
        outcome.results[stage] = value


def _reason(state) -> tuple[str, int]:
    """The failure's one-line message and exit code, as the CLI would give them."""
    from modelexport.errors import one_line

    try:
        state.result()
    except Exception as exc:
        return scrub(one_line(exc)), getattr(exc, "exit_code", 1)
    return scrub(state.message or "failed"), 1
