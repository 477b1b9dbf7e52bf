"""Measure ONNX Runtime latency and roll kernel time up the module tree; writes profile.json/.md, modules.png."""

from __future__ import annotations

from prefect import task

from modelexport import storage
from modelexport.fleet import ProfileSettings

from .policy import CONTENT, Produced, computing, produced


@task(name="profile", cache_policy=CONTENT, persist_result=True)
def profile_onnx(export: Produced, settings: ProfileSettings, output_dir: str) -> Produced:
    """Keyed on the export and the profile settings only: changing them re-runs this stage alone."""
    from modelexport.profile import profile

    folder = storage.Folder(output_dir)
    with computing():
        result = profile(
            export.local("onnx_path"),
            warmup=settings.warmup,
            iterations=settings.iterations,
            threads=settings.threads or 1,
            output_dir=folder.local,
        )
    keep = (
        "latency_ms",
        "throughput_per_s",
        "kernel_ms",
        "attributed_fraction",
        "optimization",
        "threads",
        "iterations",
        "peak_rss_mb",
    )
    data = {k: result.to_dict()[k] for k in keep}
    if result.phases:  # a with-past export: prefill and decode, their headline figures
        data["phases"] = {
            n: {k: p[k] for k in ("latency_ms", "kernel_ms", "attributed_fraction")} for n, p in result.phases.items()
        }
    return produced(data, *folder.commit(result.files.values()))
