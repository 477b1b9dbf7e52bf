"""Export a model to ONNX with every node tagged by the nn.Module that produced it.

MODEL is a directory saved with save_pretrained, a Hugging Face hub id (downloaded; --revision pins it), or
module.path:factory returning a torch.nn.Module (with --input-spec). Writes OUTPUT and OUTPUT_STEM.hierarchy.json.
With --strategy all, OUTPUT is a directory: every strategy writes OUTPUT/<strategy>.onnx and a table compares them.
"""

from __future__ import annotations

NAME = "export"
HELP = "export a model to hierarchy-tagged ONNX"


def add_model_arguments(p) -> None:
    """Options that say which model and how to load it; shared by every command that loads one."""
    p.add_argument("--revision", help="hub branch, tag or commit to pin (default: main)")
    p.add_argument("--task", help="model head to load, e.g. text-classification (default: the base model)")
    p.add_argument("--input-spec", metavar="FILE", help="JSON file giving input names, shapes, dtypes, dynamic axes")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow running Python code shipped with the model (off by default)",
    )
    p.add_argument(
        "--max-memory-gb",
        type=float,
        metavar="GB",
        help="refuse at once a model whose estimated memory need is larger (weight bytes x the stage's factor)",
    )


def add_arguments(p) -> None:
    p.add_argument("model", metavar="MODEL", help="model directory, hub id, or module.path:factory")
    p.add_argument(
        "output",
        metavar="OUTPUT.onnx",
        help="ONNX file to write (a directory with --strategy all or an encoder-decoder's -with-past task)",
    )
    p.add_argument(
        "--strategy",
        default="auto",
        help="capture strategy: auto (default: htp, dynamo, usage, fx in turn), one of htp, dynamo, usage, "
        "fx, or all (export with each into the OUTPUT directory and compare)",
    )
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    p.add_argument("--clean", action="store_true", help="write no tag metadata into the ONNX; sidecar only")
    p.add_argument("--torch-modules", action="store_true", help="make built-in torch.nn modules tag segments too")
    p.add_argument(
        "--cross-check",
        metavar="STRATEGY",
        help="also capture with STRATEGY and compare its tags per (module, op family); in the sidecar",
    )
    p.add_argument(
        "--stream-weights",
        action="store_true",
        help="write the weights from the model's tensors one at a time: ~1.2x the weights in memory instead of "
        "~4x (always on past 2 GB of weights; skips auto's ONNX Runtime check of each candidate)",
    )
    p.add_argument(
        "--dtype",
        help="float32, float16 or bfloat16: the type the weights are loaded in and the graph computes in "
        "(default: as saved)",
    )
    add_model_arguments(p)


def run(args) -> int:
    from modelexport.export import export_model
    from modelexport.inputs import load_input_spec

    from .terminal import new_console

    spec = load_input_spec(args.input_spec) if args.input_spec else None
    if args.strategy == "all":
        return _run_all(args, spec)
    console = new_console(stderr=True)
    with console.status(f"exporting {args.model}"):
        result = export_model(
            args.model,
            args.output,
            strategy=args.strategy,
            opset=args.opset,
            clean=args.clean,
            torch_modules=args.torch_modules,
            input_spec=spec,
            task=args.task,
            revision=args.revision,
            trust_remote_code=args.trust_remote_code,
            cross_check=args.cross_check,
            max_memory_gb=args.max_memory_gb,
            stream_weights=args.stream_weights,
            dtype=args.dtype,
        )
    if hasattr(result, "parts"):  # an encoder-decoder with its cache: a directory of two files
        for part in result.parts.values():
            _print_result(part)
        return 0
    _print_result(result)
    return 0


def _print_result(result) -> None:
    from modelexport.report_tree import render_tree

    from .terminal import new_console

    _print_warnings(result.sidecar["warnings"])
    out = new_console()
    for attempt in result.attempts:
        mark = "[green]ok[/]" if attempt.ok else f"[red]failed[/] ({attempt.reason})"
        out.print(f"strategy {attempt.strategy}: {mark} in {attempt.seconds:.2f}s")
    s = result.stats
    out.print(
        f"[bold]{result.onnx_path}[/] — {s.total_nodes} nodes, {s.coverage:.0%} tagged, "
        f"{s.root_tagged_nodes} on the root module; sidecar {result.sidecar_path}"
    )
    check = result.sidecar["cross_check"]
    if check:
        figure = (
            f"family agreement {check['agreement']:.1%}" if check["agreement"] is not None else "no op family in common"
        )
        out.print(
            f"cross-check {check['strategy']} vs {check['against']}: "
            + (figure if check["ok"] else f"[red]not run[/] ({check['reason']})")
        )
    out.print(render_tree(result.sidecar["tree"], depth=3))


def _print_warnings(warnings, prefix: str = "") -> None:
    import sys

    for warning in warnings:
        print(f"warning: {prefix}{warning}", file=sys.stderr)


def _run_all(args, spec) -> int:
    """Export with every strategy into the OUTPUT directory; a table says how each did. Exit 0 if any worked."""
    from rich.table import Table

    from modelexport.export_all import export_all

    from .terminal import new_console

    with new_console(stderr=True).status(f"exporting {args.model} with every strategy"):
        runs = export_all(
            args.model,
            args.output,
            revision=args.revision,
            opset=args.opset,
            clean=args.clean,
            torch_modules=args.torch_modules,
            input_spec=spec,
            task=args.task,
            trust_remote_code=args.trust_remote_code,
            max_memory_gb=args.max_memory_gb,
        )
    table = Table(title=f"{args.model} → {args.output}/<strategy>.onnx")
    for column in ("strategy", "result", "nodes", "coverage", "agreement with htp", "family agreement", "seconds"):
        table.add_column(column, justify="left" if column in ("strategy", "result") else "right")
    for run in runs:
        table.add_row(
            run.strategy,
            "[green]ok[/]" if run.ok else f"[red]failed[/] ({run.reason})",
            "" if run.nodes is None else str(run.nodes),
            "" if run.coverage is None else f"{run.coverage:.0%}",
            "" if run.agreement_with_htp is None else f"{run.agreement_with_htp:.1%}",
            "" if run.family_agreement_with_htp is None else f"{run.family_agreement_with_htp:.1%}",
            f"{run.seconds:.2f}",
        )
        _print_warnings(run.warnings, prefix=f"{run.strategy}: ")
    new_console().print(table)
    new_console().print(
        "agreement with htp: overlap of the node-count distributions over modules (node names differ "
        "between exporters); family agreement: the same per (module, op family)"
    )
    return 0 if any(run.ok for run in runs) else 1
