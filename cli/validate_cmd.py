"""Check that an exported ONNX file computes what the PyTorch model computes, under ONNX Runtime.

Runs both on the same random inputs (seeds 0 and 1) at the export shape and at a second shape with every dynamic
axis resized, and compares every output: |onnx - torch| <= atol + rtol * |torch|. Exits 1 naming the worst output
when any output is over tolerance, missing, or of the wrong shape. Without --model, the model recorded in the
sidecar is used.
"""

from __future__ import annotations

NAME = "validate"
HELP = "compare an exported ONNX file with its PyTorch model under ONNX Runtime"


def add_arguments(p) -> None:
    from modelexport.dtypes import TOLERANCES

    by_dtype = ", ".join(f"{d} {a:g}/{r:g}" for d, (a, r) in TOLERANCES.items())
    p.add_argument("onnx", metavar="OUTPUT.onnx", help="ONNX file written by modelexport export")
    p.add_argument(
        "--model",
        metavar="MODEL",
        help="model directory, hub id or module.path:factory (default: the one recorded in the sidecar)",
    )
    p.add_argument(
        "--atol", type=float, help=f"absolute tolerance (default by the export's dtype, atol/rtol: {by_dtype})"
    )
    p.add_argument("--rtol", type=float, help="relative tolerance (default by the export's dtype)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="random input seeds (default 0 1)")
    p.add_argument("--json", metavar="FILE", help="write the full result (every check) as JSON")
    p.add_argument(
        "--localize",
        action="store_true",
        help="find the first module whose outputs differ even when validation passes (it always does on failure)",
    )
    from .export_cmd import add_model_arguments

    add_model_arguments(p)


def run(args) -> int:
    from pathlib import Path

    from rich.table import Table

    from modelexport.errors import BadInputError
    from modelexport.inputs import load_input_spec
    from modelexport.validate import raise_for_failure, validate, write_validation

    from .terminal import new_console

    if args.json and not Path(args.json).parent.resolve().is_dir():
        raise BadInputError(f"directory of --json {args.json} does not exist: create it first")
    spec = load_input_spec(args.input_spec) if args.input_spec else None
    console = new_console(stderr=True)
    with console.status(f"validating {args.onnx}"):
        report = validate(
            args.onnx,
            args.model,
            atol=args.atol,
            rtol=args.rtol,
            seeds=tuple(args.seeds),
            input_spec=spec,
            task=args.task,
            revision=args.revision,
            trust_remote_code=args.trust_remote_code,
            localize=args.localize,
            max_memory_gb=args.max_memory_gb,
        )
    if args.json:
        write_validation(report, args.json)
    table = Table(title=f"{args.onnx} vs {report.model} (atol {report.atol:g}, rtol {report.rtol:g})")
    for column in ("case", "seed", "output", "max abs diff", "max rel diff", "result"):
        table.add_column(column)
    for c in report.checks:
        diff = "—" if c.max_abs_diff is None else f"{c.max_abs_diff:.3g}"
        rel = "—" if c.max_rel_diff is None else f"{c.max_rel_diff:.3g}"
        table.add_row(
            c.case,
            str(c.seed),
            c.output,
            diff,
            rel,
            "[green]ok[/]" if c.passed else f"[red]{c.error or 'over tolerance'}[/]",
        )
    new_console().print(table)
    raise_for_failure(report)
    new_console().print(f"[green]passed[/]: {report.summary()}")
    return 0
