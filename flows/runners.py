"""Where a fleet's per-model work runs: a thread pool in the flow's process, or a Dask cluster (prefect-dask).

The flow is the same either way; only its task runner changes (``fleet_flow.with_options(task_runner=...)``).
A Dask cluster spreads the stages over worker processes or machines; each Dask worker then needs this project's
code and the model directories at the same paths, and the outputs and cache in a store they all reach
(``--output-dir s3://...``, see deployments/README.md).
"""

from __future__ import annotations

import os

from prefect.task_runners import ThreadPoolTaskRunner

from .fleet import DEFAULT_CONCURRENCY, fleet_flow

RUNNERS = ("threads", "dask")
DASK_ADDRESS_ENV = "MODELEXPORT_DASK_ADDRESS"


def task_runner(
    runner: str = "threads",
    concurrency: int = DEFAULT_CONCURRENCY,
    dask_address: str | None = None,
    processes: bool = True,
):
    """A task runner for the fleet flow.

    Args:
        runner: ``threads`` (N models at once in this process) or ``dask``.
        concurrency: threads, or the local Dask cluster's worker count (one thread each, so that one worker
            computes one stage at a time, as the thread runner's compute lock does in one process).
        dask_address: ``tcp://host:8786`` of a running Dask scheduler; none starts a local cluster.
        processes: local cluster only: worker processes (True) or threads of this process.
    """
    if runner == "threads":
        return ThreadPoolTaskRunner(max_workers=concurrency)
    if runner != "dask":
        raise ValueError(f"unknown runner {runner!r}: choose one of {', '.join(RUNNERS)}")
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": concurrency,
            "threads_per_worker": 1,
            "processes": processes,
            "dashboard_address": None,
        }
    )


class LocalCallback:
    """Calls FN where it was made. Prefect ships the flow's parameters to Dask workers with every task, and a
    callback holding a lock or a terminal cannot be pickled; the flow calls it in its own process only, so a
    pickled copy is a no-op.
    """

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args) if self.fn is not None else None

    def __reduce__(self):
        return LocalCallback, (None,)


# The fleet flow on Dask, for deployments (a deployment cannot pick its flow's task runner by parameter): the
# scheduler is MODELEXPORT_DASK_ADDRESS on the worker that runs the flow, else a local cluster of 2 workers.
fleet_flow_dask = fleet_flow.with_options(
    name="export-fleet-dask", task_runner=task_runner("dask", dask_address=os.environ.get(DASK_ADDRESS_ENV))
)
