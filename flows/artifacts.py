"""What a person reads in the Prefect UI: a Markdown report per model, a summary table per fleet, progress."""

from __future__ import annotations

import contextvars
import re
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from modelexport.outcome import ModelOutcome
from modelexport.redaction import scrub


def artifact_key(*parts: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only; a stable key keeps one history per name."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", "-".join(parts).lower())).strip("-")


def model_markdown(outcome: ModelOutcome) -> str:
    lines = [f"# {outcome.name}", "", f"Model `{outcome.ref}`"]
    if outcome.source and outcome.source.get("revision"):
        lines[-1] += f" at commit `{outcome.source['revision']}`"
    lines += [
        "",
        f"**Status:** {outcome.status}" + (f" at {outcome.failed_stage}: {outcome.reason}" if outcome.reason else ""),
        "",
        "| stage | state | files |",
        "| --- | --- | --- |",
    ]
    for stage, state in outcome.stages.items():
        lines.append(f"| {stage} | {state} | {', '.join(f'`{f}`' for f in outcome.files.get(stage, []))} |")
    row = outcome.row()
    lines += [
        "",
        "| " + " | ".join(k for k in row if k != "status") + " |",
        "|" + " --- |" * (len(row) - 1),
        "| " + " | ".join(str(v) for k, v in row.items() if k != "status") + " |",
    ]
    return "\n".join(lines) + "\n"


def report_model(outcome: ModelOutcome, fleet: str | None = None) -> None:
    create_markdown_artifact(
        scrub(model_markdown(outcome)),
        key=artifact_key("model", *([fleet] if fleet else []), outcome.name),
        description=scrub(f"export of {outcome.name}: {outcome.status}"),
    )


def report_fleet(name: str, outcomes: list[ModelOutcome]) -> None:
    failed = sum(o.status != "ok" for o in outcomes)
    create_table_artifact(
        [{k: scrub(str(v)) for k, v in o.row().items()} for o in outcomes],
        key=artifact_key("fleet", name, "summary"),
        description=f"fleet {name}: {len(outcomes) - failed} exported, {failed} failed",
    )


class Artifacts:
    """A fleet run's artifacts, posted by threads of their own, so that the flow's loop does not wait on the API for
    each (the server is busy recording task runs: a large part of a fully cached fleet run), and a few at once, so
    that the last ones do not queue behind each other at the end. Each call runs in the flow run's context as it was
    when posted; a progress bar's updates go in order. Leaving the block waits for them all, and raises the first
    failure unless the block raised: every artifact exists when the flow run ends."""

    def __init__(self, threads: int = 4):
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="artifacts")
        self._posted: list[Future] = []

    def __enter__(self) -> Artifacts:
        return self

    def __exit__(self, kind, *_) -> None:
        self._pool.shutdown(wait=True)
        if kind is None:
            for future in self._posted:
                future.result()

    def post(self, fn, *args, **kwargs) -> Future:
        future = self._pool.submit(contextvars.copy_context().run, fn, *args, **kwargs)
        self._posted.append(future)
        return future

    def progress(self, key: str, description: str) -> Callable[[float], Future]:
        """Post a progress artifact at 0%; returns the function that posts an update of it, after the last one (the
        pool starts calls in the order posted, so waiting on an earlier one cannot deadlock)."""
        created = last = self.post(create_progress_artifact, 0.0, key=key, description=description)

        def update(percent: float, previous: Future) -> None:
            previous.exception()  # finished, failed or not: its own failure is raised on leaving
            update_progress_artifact(created.result(), percent)

        def post_update(percent: float) -> Future:
            nonlocal last
            last = self.post(update, percent, last)
            return last

        return post_update
