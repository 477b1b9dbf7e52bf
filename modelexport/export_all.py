"""Export one model with every strategy into a directory and measure each against ``htp``.

Used by ``modelexport export --strategy all MODEL OUTDIR``. Agreement with ``htp`` is the overlap of the
node-count distributions over modules (see `compare.py`): node names differ between exporters, so the per-node
comparison is not possible across them. Family agreement is the same overlap per (module, op family)
(`crosscheck.py`). Every run is also written to ``OUTDIR/export-all.json``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import atomic
from .compare import compare_files
from .errors import BadInputError, ExportFailedError
from .export import AUTO_ORDER, check_opset, export_model
from .source import resolve
from .strategies import STRATEGIES


@dataclass
class StrategyRun:
    strategy: str
    ok: bool
    seconds: float
    reason: str | None = None
    onnx_path: Path | None = None
    nodes: int | None = None
    coverage: float | None = None
    agreement_with_htp: float | None = None
    family_agreement_with_htp: float | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self) | {"onnx_path": None if self.onnx_path is None else str(self.onnx_path)}


def strategy_names() -> list[str]:
    """Every registered strategy, in the auto order first."""
    return [*AUTO_ORDER, *(name for name in STRATEGIES if name not in AUTO_ORDER)]


def export_all(model: str, outdir: str | os.PathLike, revision: str | None = None, **options) -> list[StrategyRun]:
    """Export `model` as OUTDIR/<strategy>.onnx with each strategy; a failure is recorded, not raised."""
    outdir = Path(outdir)
    if outdir.suffix == ".onnx" or (outdir.exists() and not outdir.is_dir()):
        raise BadInputError(f"with --strategy all the output is a directory, not {outdir}: pass a directory")
    if not outdir.parent.is_dir():
        raise BadInputError(f"output directory {outdir.parent} does not exist: create it first")
    options["opset"] = check_opset(options.get("opset"))  # before anything is written
    outdir.mkdir(exist_ok=True)
    source = resolve(model, revision=revision)
    runs: list[StrategyRun] = []
    for name in strategy_names():
        start = time.perf_counter()
        try:
            result = export_model(source, outdir / f"{name}.onnx", strategy=name, **options)
        except ExportFailedError as exc:
            attempts = getattr(exc, "attempts", None)
            reason = attempts[-1].reason if attempts else str(exc)
            runs.append(StrategyRun(name, False, round(time.perf_counter() - start, 3), reason))
            continue
        runs.append(
            StrategyRun(
                name,
                True,
                round(time.perf_counter() - start, 3),
                None,
                result.onnx_path,
                result.stats.total_nodes,
                result.stats.coverage,
                warnings=result.sidecar["warnings"],
            )
        )
    htp = next((r for r in runs if r.strategy == "htp" and r.ok), None)
    for run in runs:
        if run.ok and htp is not None:
            comparison = compare_files(htp.onnx_path, run.onnx_path)
            run.agreement_with_htp = comparison.agreement
            run.family_agreement_with_htp = comparison.family_agreement
    atomic.write_text(outdir / "export-all.json", json.dumps({"runs": [r.to_dict() for r in runs]}, indent=1))
    return runs
