"""Ending this process's flow runs as interrupted, for a process that exits at once on Ctrl-C.

Prefect unwinds an interrupted flow by leaving its task runner, which waits for the running task: a stage in the
middle of a large export, a minute or more. A CLI that must stop within seconds exits without unwinding instead;
first, :func:`end_as_interrupted` records what unwinding would have: the flow runs of this process and their
unfinished task runs Crashed, the MLflow fleet runs FAILED ("interrupted").
"""

from __future__ import annotations

import contextlib
import threading
import time

INTERRUPTED = "interrupted (Ctrl-C)"
RECORDED_WITHIN_S = 1.2  # task-run states reach the ephemeral API's database in batches, at least once a second

_active: set[str] = set()  # ids of the flow runs this process is running now
_lock = threading.Lock()


@contextlib.contextmanager
def active_flow_run():
    """Mark the flow run the block runs in as active (from inside the flow)."""
    from prefect.runtime import flow_run

    run_id = str(flow_run.id)
    with _lock:
        _active.add(run_id)
    try:
        yield
    finally:
        with _lock:
            _active.discard(run_id)


def end_as_interrupted() -> None:
    """End every active flow run of this process, its unfinished task runs and its MLflow fleet runs as
    interrupted. Each part is tried on its own: one that fails (a server gone) does not keep the others."""
    from tracking import recorder

    with _lock:
        runs = list(_active)
    with contextlib.suppress(Exception):
        recorder.interrupt_records()
    if runs:
        with contextlib.suppress(Exception):
            _crash(runs)


def _crash(flow_run_ids: list[str]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    unfinished = TaskRunFilter(
        state=TaskRunFilterState(
            type=TaskRunFilterStateType(any_=[StateType.PENDING, StateType.SCHEDULED, StateType.RUNNING])
        )
    )
    with get_client(sync_client=True) as client:
        for run_id in flow_run_ids:
            client.set_flow_run_state(run_id, Crashed(message=INTERRUPTED), force=True)
        time.sleep(RECORDED_WITHIN_S)  # the task runs' last states, sent as events, are in the database by now
        ours = FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids))
        for task_run in client.read_task_runs(flow_run_filter=ours, task_run_filter=unfinished):
            client.set_task_run_state(task_run.id, Crashed(message=INTERRUPTED), force=True)
