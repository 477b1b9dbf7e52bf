"""Export every model of a fleet file (YAML) through the Prefect pipeline: resolve, inputs, export, validate,
profile, report. Outputs land in OUTPUT_DIR/<name>/; unchanged work is taken from the cache (OUTPUT_DIR/.cache).
Exit 1 if any model failed (the others still run), 2 if the fleet file is invalid; --json writes a summary.
--runner dask works on the models on a Dask cluster: the scheduler at --dask-address, else a local cluster of
--concurrency worker processes. --spread-over hands each model to a work pool's workers as a run of a deployment
of the one-model flow (a Prefect server at PREFECT_API_URL). OUTPUT_DIR and the cache may be store URLs
(s3://bucket/prefix): see docs/pipelines.md, "Several workers".
"""

from __future__ import annotations

NAME = "run-fleet"
HELP = "export a fleet of models (YAML file) with caching, retries and a summary"


def add_arguments(p) -> None:
    p.add_argument("fleet", metavar="FLEET.yaml", help="fleet file: defaults plus a list of models")
    p.add_argument(
        "--output-dir", help="where each model's folder goes, a path or s3://bucket/prefix (default: out/<fleet name>)"
    )
    p.add_argument("--concurrency", type=int, default=2, help="models worked on at once (default 2)")
    p.add_argument("--cache-dir", help="where task results are cached (default: OUTPUT_DIR/.cache)")
    p.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory)",
    )
    p.add_argument("--no-tracking", action="store_true", help="log nothing to MLflow")
    p.add_argument(
        "--runner",
        choices=("threads", "dask"),
        default="threads",
        help="threads in this process (default) or a Dask cluster (prefect-dask)",
    )
    p.add_argument(
        "--dask-address",
        metavar="tcp://HOST:PORT",
        help="Dask scheduler to use with --runner dask (default: a local cluster)",
    )
    p.add_argument(
        "--spread-over",
        metavar="FLOW/DEPLOYMENT",
        help="run each model as a run of this model_flow deployment (e.g. export-model/single-model), on its workers",
    )
    from .pipeline_view import add_json_argument

    add_json_argument(p)


def run(args) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from modelexport.errors import BadInputError
    from modelexport.fleet import check_output_folders, load_fleet

    from .pipeline_view import (
        check_deployment,
        check_json_target,
        model_line,
        quiet_libraries,
        summary_json,
        summary_table,
        table_console,
        write_json,
    )
    from .terminal import new_console

    if args.concurrency < 1:
        raise BadInputError(f"--concurrency must be at least 1, got {args.concurrency}")
    if args.dask_address and args.runner != "dask":
        raise BadInputError("--dask-address needs --runner dask")
    if args.spread_over and args.runner != "threads":
        raise BadInputError("--spread-over hands models to a work pool: it cannot be used with --runner dask")
    check_json_target(args.json)
    if args.spread_over:
        check_deployment(args.spread_over)
    fleet = load_fleet(args.fleet)  # every mistake in the file, before Prefect starts
    output_dir = args.output_dir or f"out/{fleet.name}"
    check_output_folders(fleet, output_dir, args.cache_dir)
    quiet_libraries(args.debug)
    from flows import run_fleet_flow

    console = new_console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task(f"fleet {fleet.name}", total=len(fleet.models))

        def done(outcome) -> None:
            progress.console.print(model_line(outcome))
            progress.advance(bar)

        summary = run_fleet_flow(
            fleet,
            output_dir,
            args.concurrency,
            args.cache_dir,
            on_model_done=done,
            tracking_uri=args.tracking_uri,
            track=not args.no_tracking,
            runner=args.runner,
            dask_address=args.dask_address,
            spread_over=args.spread_over,
        )
    table_console(args.json).print(summary_table(summary.models, f"fleet {fleet.name} → {output_dir}"))
    failed = summary.failed
    if failed:
        console.print(f"[red]{len(failed)} of {len(summary.models)} models failed[/]:")
        for m in failed:
            console.print(f"  {m.name} at {m.failed_stage}: {m.reason}", markup=False, highlight=False)
    code = 1 if failed else 0
    write_json(args.json, summary_json(summary.models, output_dir, code, fleet.name))
    return code
