"""What `run` and `run-fleet` show: quiet Prefect logging, a progress line per model, the final table."""

from __future__ import annotations

import os

COLUMNS = ("model", "strategy", "nodes", "coverage", "parity", "p50 ms", "status", "cached")


def quiet_libraries(debug: bool = False) -> None:
    """Before Prefect and MLflow are imported (here and in the recorder process, which inherits this environment):
    our table says what failed and why, so their own logs stay quiet unless --debug."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "DEBUG" if debug else "CRITICAL")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "DEBUG" if debug else "WARNING")  # also its registry notices
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "debug" if debug else "error")  # --runner dask


def model_line(outcome) -> str:
    if outcome.status == "ok":
        return f"[green]ok[/]     {outcome.name}" + (" [dim](cached)[/]" if outcome.cached else "")
    return f"[red]failed[/] {outcome.name} at {outcome.failed_stage}: {outcome.reason}"


def summary_table(outcomes, title: str):
    from rich.table import Table

    table = Table(title=title, pad_edge=False)  # fits 80 columns with a status of "ok"
    for column in COLUMNS:
        table.add_column(column, overflow="fold", no_wrap=column != "status")  # short values: only status wraps
    for outcome in outcomes:
        row = outcome.row()
        style = None if outcome.status == "ok" else "red"
        table.add_row(*(str(row[c]) for c in COLUMNS), style=style)
    return table


def add_json_argument(p) -> None:
    p.add_argument(
        "--json",
        metavar="FILE",
        help="also write a machine-readable summary (JSON) to FILE; '-' writes it to stdout and the table to stderr",
    )


def check_json_target(path: str | None) -> None:
    """Before anything runs: a summary that cannot be written later would waste the run."""
    from pathlib import Path

    from modelexport.errors import BadInputError

    if path and path != "-" and not Path(path).parent.resolve().is_dir():
        raise BadInputError(f"directory of --json {path} does not exist: create it first")


def summary_json(outcomes, output_dir: str, exit_code: int, fleet: str | None = None) -> dict:
    """What a CI step gates on: the exit code, counts, and each model's status, stages, results and files."""
    from dataclasses import asdict

    failed = [o.name for o in outcomes if o.status != "ok"]
    return {
        "fleet": fleet,
        "output_dir": str(output_dir),
        "exit_code": exit_code,
        "status": "failed" if failed else "ok",
        "exported": len(outcomes) - len(failed),
        "failed": failed,
        "models": [{**asdict(o), "cached": o.cached} for o in outcomes],
    }


def write_json(path: str | None, summary: dict) -> None:
    import json
    import sys

    from modelexport.atomic import write_text

    if not path:
        return
    text = json.dumps(summary, indent=2, default=str) + "\n"
    if path == "-":
        sys.stdout.write(text)
    else:
        write_text(path, text)


def table_console(json_path: str | None):
    """The table goes to stdout, unless stdout carries the JSON summary."""
    from .terminal import new_console

    return new_console(stderr=json_path == "-")


def check_deployment(name: str) -> None:
    """Refuse --spread-over before anything runs unless a Prefect server (PREFECT_API_URL) has that deployment."""
    from prefect.settings import PREFECT_API_URL

    from modelexport.errors import BadInputError

    if not PREFECT_API_URL.value():
        raise BadInputError("--spread-over needs a Prefect server with workers: set PREFECT_API_URL")
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            client.read_deployment_by_name(name)
    except ObjectNotFound:
        raise BadInputError(
            f"--spread-over {name}: no such deployment on {PREFECT_API_URL.value()} (prefect deploy it first)"
        ) from None
    except ValueError as exc:  # not FLOW/DEPLOYMENT
        raise BadInputError(f"--spread-over {name}: {exc}") from None
