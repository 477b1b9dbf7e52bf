"""Module times against an independent reference: each top-level block timed on its own, without the profiler.

``profile`` reports per-module milliseconds that add up to the unprofiled p50 (modelexport/calibration.py). The
reference: every block under the model's repeated container (each encoder/decoder layer) is cut out of the
exported graph at its boundary tensors (``onnx.utils.Extractor``), fed the tensors the full model computes there,
and timed in a session of its own at the same optimisation level and thread count, without the profiler. Per block
the figure is the profile's time ÷ the subgraph's p50; within 15% (or 0.05 ms) the attribution holds. Run after run
the subgraph keeps its weights in cache, which inside the model it does not: each block is timed a second way too,
every run after one of the whole model (``subgraph_after_model_ms``).
"""

from __future__ import annotations

import functools
import statistics
import tempfile
import time
from pathlib import Path

TOLERANCE = 0.15
ABSOLUTE_MS = 0.05
ROUNDS = 10


def blocks(tree: dict) -> list[dict]:
    """The repeated blocks: wherever a module has two or more children of one class (each encoder/decoder layer,
    also beside other children, as in ViT), those children; other children are searched further."""
    found: list[dict] = []

    def visit(entry: dict) -> None:
        children = entry.get("children", [])
        classes = [c.get("class") for c in children]
        for child in children:
            if classes.count(child.get("class")) >= 2:
                found.append(child)
            else:
                visit(child)

    visit(tree)
    return found


def boundary(graph, nodes: list) -> tuple[list[str], list[str]]:
    """The tensors a set of nodes reads from outside it (not initializers) and writes for use outside it."""
    produced = {o for n in nodes for o in n.output}
    consumed = {i for n in nodes for i in n.input if i}
    initializers = {t.name for t in graph.initializer}
    inputs = sorted(consumed - produced - initializers)
    inner = {id(n) for n in nodes}
    used_outside = {i for n in graph.node if id(n) not in inner for i in n.input} | {o.name for o in graph.output}
    outputs = sorted(produced & used_outside)
    return inputs, outputs


def _holds(reported: float, reference: float) -> bool:
    return abs(reported - reference) <= max(TOLERANCE * reference, ABSOLUTE_MS)


def _timed_ms(session, feeds: dict, runs: int, between=None) -> list[float]:
    milliseconds = []
    for _ in range(runs):
        if between is not None:
            between()
        start = time.perf_counter()
        session.run(None, feeds)
        milliseconds.append(1000 * (time.perf_counter() - start))
    return milliseconds


def block_check(onnx_path: Path, threads: int = 1, runs: int = 100) -> dict:
    """Per block: its profiled (calibrated) total ms, its subgraph's unprofiled p50, their ratio. The reported ms
    are the profile's, times the model's p50 beside the subgraphs ÷ its p50 in the profile (``drift``)."""
    import onnx
    import onnxruntime as ort
    from onnx.utils import Extractor

    from modelexport.export import read_sidecar
    from modelexport.profile import _session, feeds_for, profile

    result = profile(onnx_path, warmup=5, iterations=runs, threads=threads)
    totals = {m["tag"]: m["total_ms"] for m in result.modules}
    sidecar = read_sidecar(onnx_path)
    model = onnx.load(str(onnx_path))
    inferred = onnx.shape_inference.infer_shapes(model)
    session = _session(onnx_path, "all", threads)
    feeds = feeds_for(onnx_path, session)
    rows = []
    with tempfile.TemporaryDirectory(prefix="modelexport-blocks-") as tmp:
        cuts = {}
        for block in blocks(sidecar["tree"]):
            tag = block["tag"]
            nodes = [n for n in model.graph.node if sidecar["node_tags"].get(n.name, "").startswith(tag)]
            inputs, outputs = boundary(model.graph, nodes)
            cuts[tag] = (inputs, outputs)
        # the values at every block's boundary, from one run of the full model with them added as outputs
        wanted = sorted({name for ins, _ in cuts.values() for name in ins} - {i.name for i in model.graph.input})
        probe = onnx.ModelProto()
        probe.CopyFrom(inferred)
        known = {v.name: v for v in inferred.graph.value_info}
        probe.graph.output.extend(known[name] for name in wanted if name in known)
        probe_path = Path(tmp) / "probe.onnx"
        onnx.save(probe, probe_path)
        values = dict(
            zip(
                [o.name for o in probe.graph.output],
                ort.InferenceSession(str(probe_path), providers=["CPUExecutionProvider"]).run(None, feeds),
            )
        )
        values.update(feeds)
        extractor = Extractor(inferred)
        timed = {}
        for index, (tag, (inputs, outputs)) in enumerate(cuts.items()):
            path = Path(tmp) / f"block{index}.onnx"
            onnx.save(extractor.extract_model(inputs, outputs), path)
            block_session = _session(path, "all", threads)
            block_feeds = {name: values[name] for name in inputs}
            _timed_ms(block_session, block_feeds, 5)  # warm-up
            timed[tag] = (block_session, block_feeds, [], [])
        # The blocks in turns, ROUNDS times, so that the machine's drift reaches them alike. Each is timed run after
        # run (its weights stay in cache), and each run after one of the whole model (as inside the model, where the
        # other blocks ran since).
        # The whole model is timed in the same turns: the profile's module times are scaled by its p50 here ÷ its
        # p50 in the profile, so that a machine slower or faster now than then does not read as a wrong share.
        whole, each = [], max(runs // ROUNDS, 1)
        each_after = max(each // 4, 1)  # each costs a run of the whole model too
        full_run = functools.partial(session.run, None, feeds)
        for _ in range(ROUNDS):
            whole += _timed_ms(session, feeds, each)
            for block_session, block_feeds, hot, after_model in timed.values():
                hot += _timed_ms(block_session, block_feeds, each)
                after_model += _timed_ms(block_session, block_feeds, each_after, full_run)
        drift = statistics.median(whole) / result.latency_ms["p50"]
        for tag, (_, _, hot, after_model) in timed.items():
            reference, after = statistics.median(hot), statistics.median(after_model)
            reported = totals.get(tag, 0.0) * drift
            rows.append(
                {
                    "tag": tag,
                    "reported_ms": round(reported, 4),
                    "subgraph_ms": round(reference, 4),
                    "ratio": reported / reference if reference else None,
                    "subgraph_after_model_ms": round(after, 4),
                    "holds": _holds(reported, reference),
                }
            )
    ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
    return {
        "median": statistics.median(ratios) if ratios else None,
        "min": min(ratios, default=None),
        "max": max(ratios, default=None),
        "n": len(rows),
        "drift": round(drift, 4),
        "note": f"{sum(r['holds'] for r in rows)}/{len(rows)} blocks within 15% or 0.05 ms (subgraphs after a run of "
        f"the model: {sum(_holds(r['reported_ms'], r['subgraph_after_model_ms']) for r in rows)}); p50 "
        f"{result.latency_ms['p50']:.2f} ms (x{drift:.3f} beside the subgraphs), modules sum "
        f"{sum(m['self_ms'] for m in result.modules):.2f} ms, "
        f"profiler kernel time {result.kernel_ms:.2f} ms",
        "blocks": rows,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.attribution_check MODEL.onnx ...``: the per-block table of tagged exports of yours."""
    import argparse

    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(prog="python -m benchmarks.attribution_check", description=main.__doc__)
    parser.add_argument("onnx_files", nargs="+", type=Path, help="tagged ONNX files (with their .hierarchy.json)")
    parser.add_argument("--runs", type=int, default=100, help="timed runs per block and figure (default 100)")
    args = parser.parse_args(argv)
    console = Console()
    for path in args.onnx_files:
        with console.status(f"profiling {path} and timing its blocks"):
            check = block_check(path, runs=args.runs)
        table = Table("block", "reported ms", "subgraph ms", "ratio", "after a model run ms", "holds", title=str(path))
        table.columns[0].overflow = "fold"
        for row in check["blocks"]:
            ratio = f"{row['ratio']:.3f}" if row["ratio"] is not None else "-"
            table.add_row(
                row["tag"], f"{row['reported_ms']:.4f}", f"{row['subgraph_ms']:.4f}", ratio,
                f"{row['subgraph_after_model_ms']:.4f}", "yes" if row["holds"] else "NO",
            )  # fmt: skip
        console.print(table)
        console.print(check["note"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
