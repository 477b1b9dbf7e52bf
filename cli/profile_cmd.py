"""Measure latency under ONNX Runtime and attribute kernel time to the nn.Modules that produced each node.

Latency (mean, p50, p90, p99, stdev), throughput and peak memory come from timed runs without the profiler;
per-module self and inclusive kernel time from profiled runs at the same graph optimisation level (default all;
fused nodes are mapped back to the exported nodes through the optimized graph). Writes DIR/profile.json,
DIR/profile.md and DIR/modules.png (default DIR: OUTPUT_STEM_profile beside the ONNX file).
"""

from __future__ import annotations

NAME = "profile"
HELP = "measure ONNX Runtime latency and time per nn.Module"


def add_arguments(p) -> None:
    p.add_argument("onnx", metavar="OUTPUT.onnx", help="ONNX file written by modelexport export")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    p.add_argument("--iterations", type=int, default=50, help="timed runs (default 50)")
    p.add_argument("--threads", type=int, default=1, help="ORT intra-op threads (default 1)")
    p.add_argument(
        "--optimization",
        choices=["disable", "basic", "extended", "all"],
        default="all",
        help="ORT graph optimisation level for latency and attribution (default all)",
    )
    p.add_argument("--output-dir", metavar="DIR", help="where to write the profile (default OUTPUT_STEM_profile)")
    p.add_argument("--top", type=int, default=15, help="modules shown in the table (default 15)")


def run(args) -> int:
    from pathlib import Path

    from rich.table import Table

    from modelexport.profile import module_time_text, profile

    from .terminal import new_console

    onnx_path = Path(args.onnx)
    output_dir = Path(args.output_dir) if args.output_dir else onnx_path.with_name(f"{onnx_path.stem}_profile")
    with new_console(stderr=True).status(f"profiling {args.onnx}"):
        result = profile(
            onnx_path,
            warmup=args.warmup,
            iterations=args.iterations,
            threads=args.threads,
            output_dir=output_dir,
            optimization=args.optimization,
        )
    lat = result.latency_ms
    out = new_console()
    out.print(
        f"[bold]{onnx_path.name}[/] at {result.optimization}, {result.threads} thread(s): latency ms mean "
        f"{lat['mean']:.3f} p50 {lat['p50']:.3f} p90 {lat['p90']:.3f} p99 {lat['p99']:.3f} stdev "
        f"{lat['stdev']:.3f}; {result.throughput_per_s:.1f} samples/s; peak RSS +{result.peak_rss_delta_mb:.0f} MB"
    )
    out.print(
        f"profiler kernel time {result.kernel_ms:.3f} ms per run, {result.attributed_fraction:.1%} attributed to "
        f"modules directly, {result.inferred_fraction:.1%} from graph neighbours. "
        f"{module_time_text(result.module_time)}"
    )
    table = Table(title="modules by own time (of the p50 latency)")
    for column, justify in (
        ("module", "left"),
        ("class", "left"),
        ("self ms", "right"),
        ("self %", "right"),
        ("total ms", "right"),
        ("nodes", "right"),
    ):
        table.add_column(column, justify=justify, overflow="fold")
    latency = lat["p50"] or 1.0
    for m in result.top(args.top):
        table.add_row(
            m["module"] or "(root)",
            m["tag"].rsplit("/", 1)[-1],
            f"{m['self_ms']:.4f}",
            f"{m['self_ms'] / latency:.1%}",
            f"{m['total_ms']:.4f}",
            str(m["nodes"]),
        )
    out.print(table)
    out.print(f"wrote {', '.join(result.files.values())}")
    return 0
