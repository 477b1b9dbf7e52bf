"""Compare the hierarchy tags of two exported ONNX files (two strategies, two opsets, two model versions).

Prints per-module node counts and op types side by side, the tags only one file has, and the overall agreement
(node-count distribution overlap; and, where node names match, the share of same-named nodes with equal tags).
"""

from __future__ import annotations

NAME = "compare"
HELP = "compare the module tags of two exported ONNX files"


def add_arguments(p) -> None:
    p.add_argument("a", metavar="A.onnx", help="first exported file")
    p.add_argument("b", metavar="B.onnx", help="second exported file")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON (machine-readable)")


def _ops(ops: dict[str, int], limit: int = 4) -> str:
    shown = [f"{op}×{n}" for op, n in list(ops.items())[:limit]]
    return ", ".join(shown) + (" …" if len(ops) > limit else "")


def run(args) -> int:
    import json

    from rich.table import Table

    from modelexport.compare import compare_files

    from .terminal import new_console

    result = compare_files(args.a, args.b)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
        return 0
    table = Table(title=f"A = {args.a}   B = {args.b}")
    for column in ("module (tag)", "A nodes", "B nodes", "A op types", "B op types"):
        table.add_column(column, justify="right" if "nodes" in column else "left")
    for row in result.modules:
        style = None if row.same else "yellow"
        table.add_row(
            row.tag, str(row.a_nodes), str(row.b_nodes), _ops(row.a_op_types), _ops(row.b_op_types), style=style
        )
    out = new_console()
    out.print(table)
    for label, tags in (("only in A", result.only_in_a), ("only in B", result.only_in_b)):
        if tags:
            out.print(f"[bold]{label}[/]: {', '.join(tags)}")
    names = (
        "n/a: node names differ"
        if result.name_agreement is None
        else f"{result.name_agreement:.1%} of {result.shared_names} same-named nodes"
    )
    out.print(
        f"nodes A {result.a_nodes}, B {result.b_nodes}; agreement (module distribution) "
        f"[bold]{result.agreement:.1%}[/]; tag agreement by node name {names}"
    )
    return 0
