"""MLflow tracking of exports: a parent run per fleet run, a nested run per model, the registry on pass.

All of modelexport's MLflow code lives here and beside it (mlflow_store.py: which store and experiment;
mlflow_artifacts.py: what is uploaded); the core never imports mlflow. Functions take plain values (paths,
the sidecar / validation / profile dicts) so any flow can call them with what it has::

    with runs.fleet_run("nightly") as fleet:
        with runs.model_run("tiny-bert", fleet="nightly", parent_run_id=fleet.run_id) as run:
            run.record(output_dir, export=sidecar, validation=report, profile=profile, export_seconds=4.2)

Runs are driven through ``MlflowClient`` with explicit run ids (not the thread-local "active run"), so model
runs may be logged from Prefect worker threads. A block that raises, or a model that fails validation, ends its
run FAILED with the reason in the ``modelexport.error`` tag and param; only a passing model is registered as a
new version of ``modelexport.<fleet>.<model>`` and given the alias ``validated``.

A run whose process died (SIGKILL, power loss) would stay RUNNING forever; so each run records its host, pid and
the pid's start time, and every new run first ends FAILED (``interrupted: ...``) the RUNNING runs of its experiment
whose process on this host is gone (:func:`reap_interrupted`). Runs started on other hosts are left alone.

No secret reaches MLflow: environment variables are never logged, and every param, tag and text artifact goes
through :func:`scrub` (URL credentials, ``token=`` query values, Hugging Face tokens, and the values of any
environment variable whose name says it is a secret are replaced by ``***``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import resource
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from modelexport.errors import typed_line
from modelexport.redaction import scrub, secret_values

from . import run_record
from .mlflow_artifacts import ALIAS, TAG, log_files, log_onnx, log_text, register_version, registered_name  # noqa: F401
from .mlflow_store import (  # noqa: F401
    DEFAULT_EXPERIMENT,
    DEFAULT_TRACKING_URI,
    connect,
    find_or_create_experiment,
    resolve_tracking_uri,
)

TOP_MODULES = 5  # modules whose self time becomes a metric


# --- names ------------------------------------------------------------------------------------------------------


def metric_key(*parts: str) -> str:
    """A valid MLflow metric name from free text (module tags, output names): ``/A/B.0`` -> ``A.B.0``."""
    cleaned = []
    for part in parts:
        part = re.sub(r"[^\w\-. ]", ".", str(part).strip("/")).strip(". ") or "_"
        cleaned.append(re.sub(r"\.{2,}", ".", part))
    key = "/".join(cleaned)
    if len(key) > 240:  # MLflow's key limit is 250: keep the end (the innermost module) and a hash
        key = key[:20] + "-" + hashlib.sha1(key.encode()).hexdigest()[:8] + key[-200:]
    return key


def _log_batch(
    client,
    run_id: str,
    params: dict | None = None,
    metrics: dict | None = None,
    tags: dict | None = None,
    model_id: str | None = None,
) -> None:
    """Params, metrics and tags in as few requests as MLflow's batch limits allow; all text scrubbed.

    Metrics given a `model_id` are also the logged model's metrics (what ``mlflow.onnx.log_model`` would copy
    from the run one metric history at a time, had they been logged before it).
    """
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    secrets = secret_values()
    p = [Param(k, scrub(str(v), secrets)[:6000]) for k, v in (params or {}).items() if v is not None]
    t = [RunTag(k, scrub(str(v), secrets)[:8000]) for k, v in (tags or {}).items() if v is not None]
    m = [
        Metric(k, float(v), now, 0, model_id=model_id, run_id=run_id if model_id else None)
        for k, v in (metrics or {}).items()
        if isinstance(v, (int, float))
    ]
    for start in range(0, max(len(p), len(t), len(m)), 100):
        client.log_batch(
            run_id, metrics=m[start : start + 100], params=p[start : start + 100], tags=t[start : start + 100]
        )


@dataclass
class Batch:
    """What a run will log when it ends, in one :func:`_log_batch`: each MLflow write is a few SQLite
    transactions, and a run's params, metrics and tags are only read once it has ended."""

    params: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    model_id: str | None = None  # the logged model that shares the metrics

    def add(self, params: dict | None = None, metrics: dict | None = None, tags: dict | None = None) -> None:
        self.params |= params or {}
        self.metrics |= metrics or {}
        self.tags |= tags or {}

    def write(self, client, run_id: str) -> None:
        _log_batch(client, run_id, self.params, self.metrics, self.tags, self.model_id)
        self.params, self.metrics, self.tags = {}, {}, {}


def short_reason(exc: BaseException) -> str:
    """The error in one line, as long as MLflow's tags allow."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    return typed_line(exc)[:500]


# --- interrupted runs -------------------------------------------------------------------------------------------


def _process_started(pid: int) -> str | None:
    """When process `pid` started (with the pid, this names one process: pids are reused), or None if gone."""
    import psutil

    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except (psutil.Error, ValueError):
        return None


# The process whose runs this one writes: itself, or for the MLflow recorder (tracking.recorder) the flow's process
# that it records for, so that its runs are reaped when that process dies.
OWNER_PID: int | None = None


@functools.cache
def _owner(pid: int) -> dict:
    """The tags naming process `pid` (cached per pid: a forked child has its own)."""
    return {TAG + "host": socket.gethostname(), TAG + "pid": str(pid), TAG + "pid_started": _process_started(pid)}


def _start_run(client, experiment: str, name: str, tags: dict, reap: bool = True):
    """Create a run owned by this process with its `tags` (scrubbed) in the experiment whose id is `experiment`,
    after reaping its runs whose process is gone (`reap`: a model run nested in a fleet run leaves that to the
    fleet run, started just before)."""
    if reap:
        reap_interrupted(client, [experiment])
    secrets = secret_values()
    tags = {
        k: scrub(str(v), secrets)[:8000]
        for k, v in {**_owner(OWNER_PID or os.getpid()), **tags}.items()
        if v is not None
    }
    return client.create_run(experiment, run_name=name, tags=tags)


def reap_interrupted(client, experiment_ids: list[str]) -> list[str]:
    """End FAILED every RUNNING run of ours on this host whose process is gone; returns their ids."""
    query = f"attributes.status = 'RUNNING' and tags.`{TAG}host` = '{socket.gethostname()}'"
    reaped = []
    for run in client.search_runs(experiment_ids, query, max_results=5000):
        pid, started = run.data.tags.get(TAG + "pid"), run.data.tags.get(TAG + "pid_started")
        if not (pid or "").isdigit() or (started is not None and _process_started(int(pid)) == started):
            continue  # not ours, or its process still runs
        _end(client, run.info.run_id, failed=f"interrupted: its process {pid} ended while the run was RUNNING")
        reaped.append(run.info.run_id)
    return reaped


# --- the fleet run ----------------------------------------------------------------------------------------------


@dataclass
class FleetRun:
    """The parent run of one fleet run: pass `run_id` (a plain string) to each model's :func:`model_run`."""

    run_id: str
    fleet: str
    tracking_uri: str
    experiment_id: str
    # (model, results digest) -> the latest finished run of the fleet's model with those results, found by
    # find_earlier_runs: the run a fully cached model cites
    earlier: dict[tuple[str, str], object] = field(default_factory=dict, repr=False)


@contextlib.contextmanager
def fleet_run(
    fleet: str,
    *,
    tracking_uri: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    params: dict | None = None,
    tags: dict | None = None,
) -> Iterator[FleetRun]:
    """A parent run for one fleet run; FAILED if the block raises or any of its model runs failed."""
    handle = start_fleet(fleet, tracking_uri=tracking_uri, experiment=experiment, params=params, tags=tags)
    try:
        yield handle
    except BaseException as exc:
        end_fleet(handle, failed=short_reason(exc))
        raise
    end_fleet(handle)


def start_fleet(
    fleet: str,
    *,
    tracking_uri: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    params: dict | None = None,
    tags: dict | None = None,
) -> FleetRun:
    """Start the parent run of a fleet run (`tags` override ours); end it with :func:`end_fleet`."""
    client = connect(tracking_uri)
    tags = {TAG + "kind": "fleet", TAG + "fleet": fleet, **(tags or {})}
    run = _start_run(client, find_or_create_experiment(client, experiment), fleet, tags)
    handle = FleetRun(run.info.run_id, fleet, resolve_tracking_uri(tracking_uri), run.info.experiment_id)
    _log_batch(client, handle.run_id, params={"fleet": fleet, **(params or {})})  # shown while it runs
    return handle


def find_earlier_runs(handle: FleetRun, models: int) -> None:
    """Look up, in one search, the fleet's latest `models` finished model runs (those of its last run, when nothing
    changed), so that each cached model of this run finds the run it cites without a search of its own (~30 ms
    each, more as the experiment grows). A model whose results are not among them is searched for as before."""
    client = connect(handle.tracking_uri)
    query = f"tags.`{TAG}fleet` = '{handle.fleet}' and tags.`{TAG}kind` = 'model' and attributes.status = 'FINISHED'"
    runs = client.search_runs(
        [handle.experiment_id], query, max_results=models, order_by=["attributes.start_time DESC"]
    )
    for run in reversed(runs):  # oldest first: the latest run of a model and digest wins
        tags = run.data.tags
        if tags.get(TAG + "model_uri") and tags.get(TAG + "results_digest"):
            handle.earlier[(tags[TAG + "model"], tags[TAG + "results_digest"])] = run


def end_fleet(handle: FleetRun, failed: str | None = None, children: dict[str, bool] | None = None) -> None:
    """End a fleet's parent run: FAILED with `failed` as the reason, or when any of its model runs failed.

    `children` (model run name -> it finished) is given by a caller that logged every model run of the fleet
    itself (the recorder); otherwise they are searched for, which loads each run with its params and metrics.
    """
    client = connect(handle.tracking_uri)
    if failed:
        _end(client, handle.run_id, failed=failed)
        return
    if children is None:
        try:
            runs = client.search_runs(
                [handle.experiment_id], f"tags.`mlflow.parentRunId` = '{handle.run_id}'", max_results=5000
            )
        except Exception as exc:  # the store went away: the run must not stay RUNNING
            _end(client, handle.run_id, failed=short_reason(exc))
            raise
        children = {r.info.run_name: r.info.status == "FINISHED" for r in runs}
    failed_names = sorted(name for name, finished in children.items() if not finished)
    counts = Batch(
        metrics={
            "models_total": len(children),
            "models_failed": len(failed_names),
            "models_passed": len(children) - len(failed_names),
        }
    )
    _end(
        client,
        handle.run_id,
        batch=counts,
        failed=f"{len(failed_names)} of {len(children)} models failed: {', '.join(failed_names)}"
        if failed_names
        else None,
    )


def _end(client, run_id: str, failed: str | None, outcome: str | None = None, batch: Batch | None = None) -> None:
    """Close a run: FINISHED with outcome passed (or `outcome`), or FAILED with the reason as tag and param;
    `batch` (what the run still has to log) goes in the same write."""
    batch = batch or Batch()
    if failed:
        batch.add(params={"error": failed}, tags={TAG + "outcome": "failed", TAG + "error": failed})
    else:
        batch.add(tags={TAG + "outcome": outcome or "passed"})
    batch.write(client, run_id)
    client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")


# --- the model run ----------------------------------------------------------------------------------------------


@dataclass
class ModelRun:
    """The nested run of one model. Call :meth:`record` with what the pipeline produced, or :meth:`fail`."""

    client: object = field(repr=False)
    run_id: str
    experiment_id: str
    name: str
    fleet: str | None
    failure: str | None = None
    validated: bool | None = None  # None: no validation report (the run finishes "unvalidated", unregistered)
    model_uri: str | None = None
    registered_version: str | None = None
    reused_run_id: str | None = None  # a cached export: the earlier run whose artifacts and model this one cites
    batch: Batch = field(default_factory=Batch, repr=False)  # logged when the run ends
    earlier: dict = field(default_factory=dict, repr=False)  # FleetRun.earlier: runs to cite, found beforehand

    def fail(self, reason: str) -> None:
        """Mark the model failed (e.g. a task failed and the flow carried on); the run will end FAILED."""
        self.failure = reason

    def record(
        self,
        output_dir: str | os.PathLike,
        *,
        export: dict | None = None,
        validation: dict | None = None,
        profile: dict | None = None,
        export_seconds: float | None = None,
        tolerances: dict | None = None,
        reuse: bool = False,
    ) -> None:
        """Log params, metrics and artifacts of one export; decide pass (validation passed) or fail.

        Parts not given are read from `output_dir` where the pipeline writes them: the sidecar
        (``*.hierarchy.json``), ``validation.json`` and ``profile.json``. With `reuse` (every stage came from the
        cache), a finished earlier run with the same results is cited (tag ``reused_run_id``, its model URI)
        instead of uploading the same ONNX model and files again; params and metrics are logged all the same.
        Params, metrics and tags are logged when the run ends, also when uploading failed.
        """
        output_dir = Path(output_dir)
        export = export if export is not None else run_record.find_sidecar(output_dir)
        validation = validation if validation is not None else run_record.read_json(output_dir, "validation.json")
        profile = profile if profile is not None else run_record.read_json(output_dir, "profile.json")
        params, metrics = run_record.params_and_metrics(
            export, validation, profile, tolerances, key=metric_key, top=TOP_MODULES
        )
        if export_seconds is not None:
            metrics["export_seconds"] = export_seconds
        metrics["process_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        tags = {TAG + "results_digest": run_record.results_digest(export, validation, profile)}
        self.batch.add(params, metrics, tags)
        earlier = self._earlier_run(tags[TAG + "results_digest"]) if reuse else None
        if earlier is not None:
            self.reused_run_id, self.model_uri = earlier.info.run_id, earlier.data.tags[TAG + "model_uri"]
            self.batch.add(tags={TAG + "reused_run_id": self.reused_run_id, TAG + "model_uri": self.model_uri})
            self._judge(validation)
            return
        log_files(self.client, self.run_id, output_dir)
        if export and export.get("strategy"):
            log_text(self.client, self.run_id, "strategy_attempts.json", json.dumps(export["strategy"], indent=1))
        if export and export.get("parts"):  # an encoder-decoder: each file its own logged model
            self._log_files_as_models(output_dir)
            self._judge(validation)
            return
        onnx_path = run_record.find_onnx(output_dir, export)
        if onnx_path is None:
            self.fail(self.failure or f"no ONNX file in {output_dir}")
            return
        self.model_uri, self.batch.model_id = log_onnx(
            onnx_path, self.run_id, self.experiment_id, run_record.input_example(export)
        )
        self.batch.add(tags={TAG + "model_uri": self.model_uri})
        self._judge(validation)

    def _log_files_as_models(self, output_dir: Path) -> None:
        """Log each file of an encoder-decoder with ``mlflow.onnx`` under its stem (``encoder_model``,
        ``decoder_model``), with its own signature and example; the run's model (registered on pass) is the
        decoder, the encoder's URI is the tag ``model_uri.encoder_model``."""
        for stem, path in run_record.export_files(output_dir).items():
            sidecar = json.loads(path.with_name(stem + run_record.SIDECAR_SUFFIX).read_text(encoding="utf-8"))
            uri, model_id = log_onnx(
                path, self.run_id, self.experiment_id, run_record.input_example(sidecar), name=stem
            )
            self.batch.add(tags={f"{TAG}model_uri.{stem}": uri})
            if stem == "decoder_model":
                self.model_uri, self.batch.model_id = uri, model_id
        self.batch.add(tags={TAG + "model_uri": self.model_uri})

    def _judge(self, validation: dict | None) -> None:
        if validation is not None:
            self.validated = bool(validation.get("passed"))
            if not self.validated:
                self.fail(self.failure or run_record.validation_reason(validation))

    def _earlier_run(self, digest: str):
        """The latest finished run of this model whose results had `digest` and whose model was logged."""
        known = self.earlier.get((self.name, digest))
        if known is not None:
            return known
        query = (
            f"tags.`{TAG}results_digest` = '{digest}' and tags.`{TAG}model` = '{self.name}'"
            f" and attributes.status = 'FINISHED'"
        )
        if self.fleet:
            query += f" and tags.`{TAG}fleet` = '{self.fleet}'"
        # One: a finished run has its model logged or cited (a run without ends FAILED), and loading each found
        # run with its params and metrics is what makes this search slow.
        runs = self.client.search_runs(
            [self.experiment_id], query, max_results=1, order_by=["attributes.start_time DESC"]
        )
        return runs[0] if runs and runs[0].data.tags.get(TAG + "model_uri") else None

    @property
    def passed(self) -> bool:
        return self.failure is None and self.model_uri is not None and bool(self.validated)


@contextlib.contextmanager
def model_run(
    name: str,
    *,
    fleet: str | None = None,
    parent_run_id: str | None = None,
    tracking_uri: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    experiment_id: str | None = None,
    model_ref: str | None = None,
    tags: dict | None = None,
    earlier: dict | None = None,
) -> Iterator[ModelRun]:
    """A run for one model (nested under `parent_run_id`), in `experiment` (or the one of id `experiment_id`: a
    fleet run's, which it has already looked up).

    It ends FAILED when the block raises, called :meth:`ModelRun.fail` or recorded a failed validation or no
    ONNX file; FINISHED and registered when validation passed; FINISHED "unvalidated" when there was no report.
    """
    client = connect(tracking_uri)
    tags = {
        TAG + "kind": "model",
        TAG + "model": name,
        TAG + "fleet": fleet,
        "mlflow.parentRunId": parent_run_id,
        **(tags or {}),
    }
    run = _start_run(
        client, experiment_id or find_or_create_experiment(client, experiment), name, tags, reap=parent_run_id is None
    )
    handle = ModelRun(client, run.info.run_id, run.info.experiment_id, name, fleet, earlier=earlier or {})
    handle.batch.add(params={"model.name": name, "model.ref": model_ref})
    try:
        yield handle
        if handle.failure is None and handle.model_uri is None:
            handle.fail("nothing recorded for this model")
        if handle.failure is None and handle.validated and handle.reused_run_id is None:
            handle.registered_version = register_version(handle.model_uri, name, fleet, handle.run_id)
    except BaseException as exc:
        _end(client, handle.run_id, failed=short_reason(exc), batch=handle.batch)
        raise
    _end(
        client,
        handle.run_id,
        failed=handle.failure,
        outcome=None if handle.validated else "unvalidated",
        batch=handle.batch,
    )


def log_model_export(
    name: str,
    output_dir: str | os.PathLike | None,
    *,
    fleet: str | None = None,
    parent_run_id: str | None = None,
    tracking_uri: str | None = None,
    experiment_id: str | None = None,
    error: str | None = None,
    model_ref: str | None = None,
    tags: dict | None = None,
    earlier: dict | None = None,
    **results,
) -> ModelRun:
    """One call for a flow that has all results: open, record (or fail with `error`), close the model's run."""
    with model_run(
        name,
        fleet=fleet,
        parent_run_id=parent_run_id,
        tracking_uri=tracking_uri,
        experiment_id=experiment_id,
        model_ref=model_ref,
        tags=tags,
        earlier=earlier,
    ) as run:
        if output_dir is not None and Path(output_dir).is_dir():
            run.record(output_dir, **results)
        if error:
            run.fail(error)
    return run


def log_outcome(
    outcome,
    output_dir: str | os.PathLike,
    *,
    fleet: FleetRun | None = None,
    tracking_uri: str | None = None,
    tags: dict | None = None,
) -> ModelRun:
    """Log a pipeline ``ModelOutcome`` (modelexport.outcome): its files in `output_dir`, its failure if it failed;
    nested under `fleet`'s run if given; `tags` are added to the run's."""
    error = None if outcome.status == "ok" else f"failed at {outcome.failed_stage}: {outcome.reason}"
    stages = ",".join(f"{stage}={state}" for stage, state in outcome.stages.items())
    if fleet is None:
        where = {"tracking_uri": tracking_uri}
    else:
        where = {
            "fleet": fleet.fleet,
            "parent_run_id": fleet.run_id,
            "tracking_uri": fleet.tracking_uri,
            "experiment_id": fleet.experiment_id,
            "earlier": fleet.earlier,
        }
    return log_model_export(
        outcome.name,
        output_dir,
        **where,
        error=error,
        model_ref=outcome.ref,
        tags={TAG + "stages": stages, TAG + "cached": outcome.cached, **(tags or {})},
        export_seconds=outcome.results.get("export", {}).get("seconds"),
        reuse=outcome.cached and outcome.status == "ok",
    )
