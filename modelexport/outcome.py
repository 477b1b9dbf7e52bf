"""What one model's run through the pipeline produced: plain data that the flows fill in, the MLflow records are
written from and the CLI summarises."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ModelOutcome:
    """Everything one model's run produced: stage states, the results each stage returned and the files it wrote."""

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
    stamps: dict[str, list] = field(default_factory=dict, repr=False)  # every file -> its stamp (storage.stamps)

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
