"""Serve the deployments of deployments/prefect.yaml from this process (Prefect's `serve`): their schedules run
here, and `prefect deployment run` runs them here, with no work pool or worker. For one machine; on several,
use `prefect deploy` and workers (see deployments/README.md). Needs a Prefect server: PREFECT_API_URL.
"""

from __future__ import annotations

NAME = "serve"
HELP = "run the deployments of deployments/prefect.yaml in this process (schedules included)"

DEFAULT_FILE = "deployments/prefect.yaml"


def add_arguments(p) -> None:
    p.add_argument("--file", default=DEFAULT_FILE, help=f"the deployments file (default {DEFAULT_FILE})")
    p.add_argument(
        "--name", action="append", metavar="DEPLOYMENT", help="serve only this deployment (repeatable; default: all)"
    )
    p.add_argument("--limit", type=int, help="most flow runs at once (default: no limit)")


def read_deployments(path: str, names: list[str] | None = None) -> list[dict]:
    """The `deployments:` entries of a prefect.yaml, only NAMES if given; bad names are bad input."""
    from pathlib import Path

    import yaml

    from modelexport.errors import BadInputError, first_line

    try:
        entries = (yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}).get("deployments") or []
    except FileNotFoundError:
        raise BadInputError(f"deployments file {path} not found: run from the repository root or give --file") from None
    except yaml.YAMLError as exc:
        raise BadInputError(f"deployments file {path} is not valid YAML: {first_line(exc)}") from None
    unknown = sorted(set(names or []) - {e.get("name") for e in entries})
    if unknown:
        raise BadInputError(
            f"no deployment named {', '.join(unknown)} in {path}: choose from "
            f"{', '.join(e.get('name', '?') for e in entries)}"
        )
    return [e for e in entries if not names or e.get("name") in names]


def run(args) -> int:
    entries = read_deployments(args.file, args.name)
    from flows.serve import serve_deployments

    serve_deployments(entries, limit=args.limit)
    return 0
