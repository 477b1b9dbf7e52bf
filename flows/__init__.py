"""Prefect flows: one model (``model_flow``) and a fleet of them (``fleet_flow``).

``run_model_flow`` / ``run_fleet_flow`` call them with the result storage (the cache) on disk under CACHE_DIR and the
fleet's concurrency; the CLI's ``run`` and ``run-fleet`` use them. Prefect's ephemeral API is used unless
PREFECT_API_URL points at a server.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelexport.fleet import Fleet, ModelPlan
    from modelexport.outcome import ModelOutcome

    from .fleet import FleetSummary

# Imported on first use, so modules that need no Prefect (the CLI's help) load without it.
_LAZY = {
    "DEFAULT_CONCURRENCY": "fleet",
    "FleetSummary": "fleet",
    "fleet_flow": "fleet",
    "model_flow": "model",
}

__all__ = ["DEFAULT_CONCURRENCY", "FleetSummary", "fleet_flow", "model_flow", "run_fleet_flow", "run_model_flow"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@contextlib.contextmanager
def _flow_run_setup():
    """What each of our flow runs runs in: settings for the ephemeral API, an API client with a shared TLS context."""
    with _ephemeral_api_settings(), _api_client():
        yield


@contextlib.contextmanager
def _api_client():
    """The flow run's API client, built on this process's TLS context: Prefect makes a client per flow run, and each
    would load the CA bundle again, a large part of a fully cached fleet run. Calls in the run that ask for
    a client of their own (artifacts) get this one, as they get the one Prefect would have made."""
    from prefect.context import SyncClientContext
    from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_TLS_INSECURE_SKIP_VERIFY

    if SyncClientContext.get() is not None or PREFECT_API_TLS_INSECURE_SKIP_VERIFY.value():
        yield
        return
    context = SyncClientContext(httpx_settings={"verify": _tls_context(PREFECT_API_SSL_CERT_FILE.value())})
    context._httpx_settings = None  # what get_client() compares its own (none) with, to hand out this client
    with context:
        yield


@functools.cache
def _tls_context(cert_file: str | None):
    """The verifying TLS context Prefect's client makes (with PREFECT_API_SSL_CERT_FILE, else certifi's bundle),
    made once per bundle."""
    import ssl

    import certifi

    return ssl.create_default_context(cafile=cert_file or certifi.where())


EPHEMERAL_STARTUP_S = 120  # how long Prefect's ephemeral API server may take to start, unless the user set it
# How the ephemeral API server records task runs, unless the user set it. Prefect's default writes each task-run
# event in a transaction of its own, and the server's CPU competes with the stages on a small machine. In batches,
# written at least once a second and when the server stops, every task run of a process that exits right after its
# flow is still recorded, at half the server's CPU (benchmarks/README.md, "Orchestration").
TASK_RUN_RECORDS = {"batch_size": 100, "flush_interval": 1}


@contextlib.contextmanager
def _ephemeral_api_settings():
    """Settings for Prefect's ephemeral API (none where PREFECT_API_URL names a server).

    - No flow-run heartbeats. They let a server notice crashed runs, but the ephemeral API dies with this
      process, so there they only cost time: each flow run waits for the heartbeat thread to stop.
    - EPHEMERAL_STARTUP_S for the server to start, where the user set no limit of their own. Its first start on a
      new PREFECT_HOME migrates the database, which on a small machine under load takes longer than Prefect's
      default of 20 s and failed the run with "Timed out while attempting to connect".
    - Task runs recorded in batches (TASK_RUN_RECORDS), where the user set nothing of the recorder's.
    The server takes these settings from the context it is started in, here, tied to this process
    (flows.lifeline): the terminal's Ctrl-C does not stop it before the flow has recorded its end, and it does not
    outlive this process, even one killed with SIGKILL.
    """
    import prefect.context
    from prefect.settings import PREFECT_API_URL

    context = prefect.context.get_settings_context()
    if PREFECT_API_URL.value() or not context.settings.server.ephemeral.enabled:
        yield
        return
    settings = _for_ephemeral_api(context.settings)
    with (
        contextlib.nullcontext()
        if settings is context.settings
        else prefect.context.SettingsContext(profile=context.profile, settings=settings)
    ):
        _start_ephemeral_server()
        yield


def _start_ephemeral_server() -> None:
    """Start Prefect's ephemeral API server (once per process; Prefect's clients then find it running) in a session
    of its own, watched by our lifeline."""
    from prefect.server.api.server import SubprocessASGIServer

    from .lifeline import tied_children

    server = SubprocessASGIServer()
    if not server.running:
        with tied_children():
            server.start()


_adjusted: tuple = (None, None)  # the last settings seen, and their copy for the ephemeral API


def _for_ephemeral_api(settings):
    """`settings` with heartbeats off, the startup limit raised and task runs recorded in batches (`settings` itself
    if nothing changes), made once per settings object (``temporary_settings`` would make one each time)."""
    global _adjusted
    from prefect.settings import (
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE,
        PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL,
    )

    if _adjusted[0] is not settings:
        updates = {}
        if settings.flows.heartbeat_frequency is not None:
            updates[PREFECT_FLOWS_HEARTBEAT_FREQUENCY] = None
        if "startup_timeout_seconds" not in settings.server.ephemeral.model_fields_set:
            updates[PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS] = EPHEMERAL_STARTUP_S  # Prefect's is 20
        if not settings.server.services.task_run_recorder.model_fields_set & set(TASK_RUN_RECORDS):
            updates[PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE] = TASK_RUN_RECORDS["batch_size"]
            updates[PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL] = TASK_RUN_RECORDS["flush_interval"]
        _adjusted = (settings, settings.copy_with_update(updates=updates) if updates else settings)
    return _adjusted[1]


def run_fleet_flow(
    fleet_file: str | Fleet,
    output_dir: str,
    concurrency: int | None = None,
    cache_dir: str | None = None,
    on_model_done=None,
    tracking_uri: str | None = None,
    track: bool = True,
    runner: str = "threads",
    dask_address: str | None = None,
    spread_over: str | None = None,
) -> FleetSummary:
    """Run the fleet flow with N models at a time; cached results live in CACHE_DIR (default OUTPUT_DIR/.cache).
    Either may be a store's URL (``s3://bucket/prefix``): see modelexport.storage.

    ``runner="dask"`` runs the stages on a Dask cluster: the scheduler at DASK_ADDRESS, else a local one of
    CONCURRENCY single-threaded worker processes. ``spread_over`` (a deployment of the model flow) hands each model to
    that deployment's workers instead (flows.spread), CONCURRENCY at a time.
    """
    from tracking.mlflow_store import credentials_apart
    from tracking.recorder import recorder

    from .fleet import DEFAULT_CONCURRENCY
    from .runners import LocalCallback

    if track:
        recorder()  # its start (importing MLflow) overlaps Prefect's

    on_model_done = LocalCallback(on_model_done) if on_model_done is not None else None
    configured = _configured_fleet(runner, concurrency or DEFAULT_CONCURRENCY, dask_address)
    with _flow_run_setup(), credentials_apart(tracking_uri) as tracking_uri:
        return _value(
            configured(
                fleet_file, output_dir, cache_dir, on_model_done, tracking_uri, track, spread_over, return_state=True
            )
        )


@functools.lru_cache(maxsize=8)
def _configured_fleet(runner: str, concurrency: int, dask_address: str | None):
    """The fleet flow with its task runner (each run duplicates the runner); made once per setup, as
    ``with_options`` copies the flow."""
    from .fleet import fleet_flow
    from .runners import task_runner

    return fleet_flow.with_options(task_runner=task_runner(runner, concurrency, dask_address))


def run_model_flow(model: str | ModelPlan, output_dir: str, cache_dir: str | None = None, **settings) -> ModelOutcome:
    """Run the one-model flow; `settings` are model_flow's keyword arguments."""
    from tracking.mlflow_store import credentials_apart
    from tracking.recorder import recorder

    from .model import model_flow

    if settings.get("track", True):
        recorder()  # its start (importing MLflow) overlaps Prefect's
    with _flow_run_setup(), credentials_apart(settings.pop("tracking_uri", None)) as tracking_uri:
        return _value(
            model_flow(model, output_dir, cache_dir, **settings, tracking_uri=tracking_uri, return_state=True)
        )


def _value(state):
    """The flow's outcome, also when the run ended Failed because a model failed; a crash is raised."""
    value = state.result(raise_on_failure=False)
    if isinstance(value, BaseException):
        raise value
    return value
