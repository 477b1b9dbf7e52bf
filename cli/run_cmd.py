"""Export one model through the Prefect pipeline (resolve, inputs, export, validate, profile, report) into
OUTPUT_DIR/<name>/, with the same caching and retries as run-fleet. MODEL is a directory, a hub id or
module.path:factory. Exit 0 exported (and validated), 1 a stage failed, 2 bad input; --json writes a summary.
"""

from __future__ import annotations

NAME = "run"
HELP = "export one model through the cached, retrying pipeline"


def add_arguments(p) -> None:
    from .export_cmd import add_model_arguments

    p.add_argument("model", metavar="MODEL", help="model directory, hub id, or module.path:factory")
    p.add_argument("--output-dir", default="out/run", help="where the model's folder goes (default out/run)")
    p.add_argument("--name", help="the model's folder name (default: the model's last path part)")
    p.add_argument("--strategy", default="auto", help="capture strategy: auto (default) or a name")
    p.add_argument("--opset", type=int, help="ONNX opset (default 18)")
    p.add_argument("--atol", type=float, help="validation absolute tolerance")
    p.add_argument("--rtol", type=float, help="validation relative tolerance")
    p.add_argument("--no-validate", action="store_true", help="skip the parity check")
    p.add_argument("--no-profile", action="store_true", help="skip latency profiling")
    p.add_argument("--iterations", type=int, help="profiling runs")
    p.add_argument("--cache-dir", help="where task results are cached (default: OUTPUT_DIR/.cache)")
    p.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory)",
    )
    p.add_argument("--no-tracking", action="store_true", help="log nothing to MLflow")
    add_model_arguments(p)
    from .pipeline_view import add_json_argument

    add_json_argument(p)


def _plan(args):
    """The model's plan from the options, checked as a fleet file's model is (bad options fail before Prefect
    starts); the flow takes it as it is."""
    from pathlib import Path

    from modelexport.fleet import plan_model

    validation = {k: v for k, v in {"atol": args.atol, "rtol": args.rtol}.items() if v is not None}
    if args.no_validate:
        validation["enabled"] = False
    profiling = {"iterations": args.iterations} if args.iterations is not None else {}
    if args.no_profile:
        profiling["enabled"] = False
    return plan_model(
        args.model,
        base=Path.cwd(),
        source="options",
        name=args.name,
        revision=args.revision,
        task=args.task,
        strategy=args.strategy,
        opset=args.opset,
        input_spec=args.input_spec,
        trust_remote_code=args.trust_remote_code or None,
        max_memory_gb=args.max_memory_gb,
        validation=validation or None,
        profiling=profiling or None,
    )


def run(args) -> int:
    from modelexport import storage
    from modelexport.fleet import Fleet, check_output_folders

    from .pipeline_view import (
        check_json_target,
        model_line,
        quiet_libraries,
        summary_json,
        summary_table,
        table_console,
        write_json,
    )
    from .terminal import new_console

    plan = _plan(args)
    # outputs that cannot be written fail before Prefect starts, as bad options do
    check_output_folders(Fleet(plan.name, None, [plan]), args.output_dir, args.cache_dir)
    check_json_target(args.json)
    quiet_libraries(args.debug)
    from flows import run_model_flow

    console = new_console(stderr=True)
    with console.status(f"exporting {args.model}"):
        outcome = run_model_flow(
            plan, args.output_dir, args.cache_dir, tracking_uri=args.tracking_uri, track=not args.no_tracking
        )
    console.print(model_line(outcome))
    where = storage.join(args.output_dir, outcome.name)
    table_console(args.json).print(summary_table([outcome], f"{outcome.name} → {where}"))
    write_json(args.json, summary_json([outcome], args.output_dir, outcome.exit_code))
    return outcome.exit_code
