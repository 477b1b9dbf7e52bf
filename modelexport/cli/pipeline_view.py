"""What `run` and `run-fleet` show: quiet Prefect logging, a progress line per model, the final table."""

from __future__ import annotations

import os

COLUMNS = ("model", "strategy", "nodes", "coverage", "parity", "p50 ms", "status", "cached")


def quiet_prefect(debug: bool = False) -> None:
    """Before Prefect is imported: our table says what failed and why, so Prefect's own logs stay quiet."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "DEBUG" if debug else "CRITICAL")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def model_line(outcome) -> str:
    if outcome.status == "ok":
        return f"[green]ok[/]     {outcome.name}" + (" [dim](cached)[/]" if outcome.cached else "")
    return f"[red]failed[/] {outcome.name} at {outcome.failed_stage}: {outcome.reason}"


def summary_table(outcomes, title: str):
    from rich.table import Table

    table = Table(title=title)
    for column in COLUMNS:
        table.add_column(column, overflow="fold", no_wrap=column in ("model", "cached", "p50 ms"))
    for outcome in outcomes:
        row = outcome.row()
        style = None if outcome.status == "ok" else "red"
        table.add_row(*(str(row[c]) for c in COLUMNS), style=style)
    return table
