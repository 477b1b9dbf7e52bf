"""Build a tiny demo model offline and export it with tags: a first look at what modelexport does."""

from __future__ import annotations

NAME = "demo"
HELP = "export a tiny offline demo model and show its module tree"


def add_arguments(p) -> None:
    p.add_argument("--output-dir", default="out/demo", help="where to write the demo model and its export")


def run(args) -> int:
    from pathlib import Path

    from modelexport.demo_models import build_demo_models
    from modelexport.export import export_model
    from modelexport.report_tree import load_tree, render_tree

    from .terminal import new_console

    console = new_console()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = build_demo_models(out / "models", names=["tiny-bert"])["tiny-bert"]
    result = export_model(str(model_dir), out / "tiny-bert.onnx")
    s = result.stats
    console.print(f"model      {model_dir}")
    console.print(f"onnx       {result.onnx_path}")
    console.print(f"sidecar    {result.sidecar_path}")
    console.print(
        f"strategy   {result.strategy}; {s.total_nodes} nodes, {s.coverage:.0%} tagged, "
        f"{s.root_tagged_nodes} in the root's own forward"
    )
    console.print(render_tree(load_tree(result.onnx_path), op_types=True))
    return 0
