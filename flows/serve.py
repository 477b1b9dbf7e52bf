"""Serve deployments in-process (Prefect's ``serve``): what ``modelexport serve`` runs, from prefect.yaml entries."""

from __future__ import annotations


def to_deployments(entries: list[dict]) -> list:
    """One RunnerDeployment per entry: its flow from the entrypoint, parameters, cron schedules."""
    from prefect.flows import load_flow_from_entrypoint
    from prefect.schedules import Cron

    deployments = []
    for entry in entries:
        flow = load_flow_from_entrypoint(entry["entrypoint"])
        schedules = [Cron(s["cron"], timezone=s.get("timezone")) for s in entry.get("schedules") or []]
        deployments.append(
            flow.to_deployment(
                name=entry["name"],
                parameters=entry.get("parameters") or {},
                schedules=schedules,
                description=entry.get("description"),
                tags=entry.get("tags"),
            )
        )
    return deployments


def serve_deployments(entries: list[dict], limit: int | None = None) -> None:
    """Serve `entries` (``deployments:`` items of a prefect.yaml) until interrupted."""
    from prefect import serve

    serve(*to_deployments(entries), limit=limit)
