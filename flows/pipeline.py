"""The chain of stages for a list of models, submitted stage by stage, and what came out of it per model.

Stages are submitted breadth-first (every model's download, then every model's inputs, then exports...), so a
thread pool of N workers works on N models at once instead of N stages of one model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prefect.futures import PrefectFuture

from modelexport.fleet import ModelPlan
from modelexport.source import ModelSource
from tasks import Produced, derive_inputs, export_onnx, profile_onnx, report_onnx, resolve_model, validate_onnx

STAGES = ("resolve", "inputs", "export", "validate", "profile", "report")
ONNX_NAME = "model.onnx"


def submit_pipeline(plans: list[ModelPlan], output_dir: Path) -> dict[str, dict[str, PrefectFuture]]:
    """Submit every stage of every model; returns model name -> stage -> future."""
    runs: dict[str, dict[str, PrefectFuture]] = {p.name: {} for p in plans}
    for p in plans:
        runs[p.name]["resolve"] = resolve_model.submit(p.id, p.revision)
    for p in plans:
        runs[p.name]["inputs"] = derive_inputs.submit(runs[p.name]["resolve"], p.task, p.input_spec)
    for p in plans:
        r = runs[p.name]
        r["export"] = export_onnx.submit(r["resolve"], str(output_dir / p.name / ONNX_NAME), r["inputs"],
                                         p.strategy, p.opset, p.clean, p.torch_modules, p.task)
    for p in plans:
        r, folder = runs[p.name], output_dir / p.name
        if p.validate.enabled:
            r["validate"] = validate_onnx.submit(r["resolve"], r["export"], r["inputs"], p.validate,
                                                 str(folder / "validation.json"), p.task)
        if p.profile.enabled:
            r["profile"] = profile_onnx.submit(r["export"], p.profile, str(folder))
        r["report"] = report_onnx.submit(r["export"], str(folder))
    return runs


@dataclass
class ModelOutcome:
    """Everything one model's run produced: the place to log it from (MLflow, issue 7) and to summarise it."""

    name: str
    ref: str
    status: str = "ok"  # ok | failed
    failed_stage: str | None = None
    reason: str | None = None
    exit_code: int = 0  # as the CLI's: 2 bad input, 1 any other failure
    stages: dict[str, str] = field(default_factory=dict)  # stage -> done | cached | failed | skipped
    source: dict | None = None  # ModelSource.to_dict(): kind, ref, path, revision, fingerprint
    results: dict[str, dict] = field(default_factory=dict)  # stage -> JSON-able data (params, metrics)
    files: dict[str, list[str]] = field(default_factory=dict)  # stage -> files it wrote (artifacts)

    @property
    def cached(self) -> bool:
        """True when every cacheable stage came from the cache (resolving is never cached)."""
        ran = [s for name, s in self.stages.items() if name != "resolve"]
        return bool(ran) and all(s == "cached" for s in ran)

    def row(self) -> dict:
        """The summary table's row."""
        export = self.results.get("export", {})
        stats = export.get("stats", {})
        parity = self.results.get("validate", {}).get("passed")
        latency = self.results.get("profile", {}).get("latency_ms", {}).get("p50")
        return {
            "model": self.name,
            "strategy": export.get("strategy", "-"),
            "nodes": stats.get("total_nodes", "-"),
            "coverage": f"{stats['coverage']:.0%}" if "coverage" in stats else "-",
            "parity": "-" if parity is None else ("pass" if parity else "FAIL"),
            "p50 ms": f"{latency:.2f}" if latency is not None else "-",
            "status": self.status if self.status == "ok" else f"failed at {self.failed_stage}",
            "cached": "yes" if self.cached else "no",
        }


def collect(plan: ModelPlan, futures: dict[str, PrefectFuture]) -> ModelOutcome:
    """Wait for a model's stages and gather their results; the first failure gives the model's reason."""
    outcome = ModelOutcome(plan.name, plan.id)
    for stage, future in futures.items():
        future.wait()
        state = future.state
        if state.is_completed():
            value = future.result()
            outcome.stages[stage] = "cached" if state.name == "Cached" else "done"
            _record(outcome, stage, value)
        elif state.is_failed() or state.is_crashed():
            outcome.stages[stage] = "failed"
            if outcome.status == "ok":
                outcome.status, outcome.failed_stage = "failed", stage
                outcome.reason, outcome.exit_code = _reason(future)
        else:  # an upstream stage failed: this one never ran
            outcome.stages[stage] = "skipped"
    validation = outcome.results.get("validate", {})
    if outcome.status == "ok" and validation.get("passed") is False:
        outcome.status, outcome.failed_stage, outcome.exit_code = "failed", "validate", 1
        outcome.reason = f"validation failed: {validation.get('summary')}"
    return outcome


def ending(value, failed: list[ModelOutcome]):
    """What a flow returns: VALUE, or a Failed state carrying it when a model failed, so that the flow run, the UI
    and `prefect deployment run --watch` say the export failed. Call such a flow with ``return_state=True``.
    """
    if not failed:
        return value
    from prefect.states import Failed

    first = failed[0]
    more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    return Failed(message=f"{first.name} failed at {first.failed_stage}: {first.reason}{more}", data=value)


def _record(outcome: ModelOutcome, stage: str, value) -> None:
    if isinstance(value, ModelSource):
        outcome.source = value.to_dict()
    elif isinstance(value, Produced):
        outcome.results[stage] = value.data
        outcome.files[stage] = list(value.files)
    elif isinstance(value, dict):
        outcome.results[stage] = value


def _reason(future: PrefectFuture) -> tuple[str, int]:
    """The failure's one-line message and exit code, as the CLI would give them."""
    from modelexport.errors import ModelExportError

    try:
        future.result()
    except ModelExportError as exc:
        return str(exc), exc.exit_code
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {lines[0] if lines else ''}", 1
    return future.state.message or "failed", 1
