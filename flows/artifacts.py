"""What a person reads in the Prefect UI: a Markdown report per model, a summary table per fleet, progress."""

from __future__ import annotations

import re

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from .pipeline import ModelOutcome


def artifact_key(*parts: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only; a stable key keeps one history per name."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", "-".join(parts).lower())).strip("-")


def model_markdown(outcome: ModelOutcome) -> str:
    lines = [f"# {outcome.name}", "", f"Model `{outcome.ref}`"]
    if outcome.source and outcome.source.get("revision"):
        lines[-1] += f" at commit `{outcome.source['revision']}`"
    lines += ["", f"**Status:** {outcome.status}" + (f" at {outcome.failed_stage}: {outcome.reason}"
                                                    if outcome.reason else ""), "",
              "| stage | state | files |", "| --- | --- | --- |"]
    for stage, state in outcome.stages.items():
        lines.append(f"| {stage} | {state} | {', '.join(f'`{f}`' for f in outcome.files.get(stage, []))} |")
    row = outcome.row()
    lines += ["", "| " + " | ".join(k for k in row if k != "status") + " |",
              "|" + " --- |" * (len(row) - 1),
              "| " + " | ".join(str(v) for k, v in row.items() if k != "status") + " |"]
    return "\n".join(lines) + "\n"


def report_model(outcome: ModelOutcome, fleet: str | None = None) -> None:
    create_markdown_artifact(model_markdown(outcome), key=artifact_key("model", *( [fleet] if fleet else []),
                                                                        outcome.name),
                             description=f"export of {outcome.name}: {outcome.status}")


def report_fleet(name: str, outcomes: list[ModelOutcome]) -> None:
    failed = sum(o.status != "ok" for o in outcomes)
    create_table_artifact([o.row() for o in outcomes], key=artifact_key("fleet", name, "summary"),
                          description=f"fleet {name}: {len(outcomes) - failed} exported, {failed} failed")
