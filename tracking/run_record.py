"""What an MLflow model run records, computed from plain dicts: the sidecar, the validation report, the profile.

Kept apart from :mod:`tracking.runs` (which talks to MLflow) so the choice of names and numbers reads in one
place and is testable without a store. Metric names are listed in the README's MLflow section.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

SIDECAR_SUFFIX = ".hierarchy.json"
VERSIONED = ("modelexport", "torch", "onnx", "onnxruntime", "onnxscript", "transformers")
LATENCY_KEYS = ("mean", "p50", "p90", "p99", "stdev")
EXAMPLE_MAX_VALUES = 16_384  # a 512-token text example has 1,536; a 3x224x224 image 150,528


def find_sidecar(output_dir: Path) -> dict | None:
    """The export's sidecar in `output_dir` (the only ``*.hierarchy.json``), or None. For an encoder-decoder's
    directory of two files (`export_files`), the decoder's, with each file's ``onnx`` and ``stats`` under
    ``parts``."""
    found = sorted(output_dir.glob(f"*{SIDECAR_SUFFIX}"))
    if found:
        return json.loads(found[0].read_text(encoding="utf-8"))
    files = export_files(output_dir)
    if not files:
        return None
    sidecars = {
        stem: json.loads(path.with_name(stem + SIDECAR_SUFFIX).read_text(encoding="utf-8"))
        for stem, path in files.items()
    }
    parts = {
        stem: {"onnx": str(files[stem].relative_to(output_dir)), "stats": s.get("stats")}
        for stem, s in sidecars.items()
    }
    return sidecars["decoder_model"] | {"parts": parts}


def export_files(output_dir: Path) -> dict[str, Path]:
    """``{"encoder_model": path, "decoder_model": path}`` of an encoder-decoder export in a folder of
    `output_dir`; empty for anything else."""
    from modelexport import seq2seq

    for folder in sorted(p for p in output_dir.iterdir() if p.is_dir()) if output_dir.is_dir() else []:
        if seq2seq.is_export_directory(folder):
            return {path.stem: path for path in seq2seq.part_paths(folder).values()}
    return {}


def results_digest(*parts: dict | None) -> str:
    """A fingerprint of an export's results (sidecar, validation, profile): equal digests, equal records."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def read_json(output_dir: Path, name: str) -> dict | None:
    """`name` (validation.json, profile.json) from the model's output dir, as the pipeline writes it; or None."""
    path = output_dir / name
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def find_onnx(output_dir: Path, export: dict | None) -> Path | None:
    """The exported ONNX file: the one the sidecar names, else the only ``*.onnx`` in `output_dir`."""
    if export and export.get("onnx") and (output_dir / export["onnx"]).is_file():
        return output_dir / export["onnx"]
    found = sorted(output_dir.glob("*.onnx"))
    return found[0] if len(found) == 1 else None


def attempts_text(strategy: dict) -> str:
    """``htp: ok; dynamo: failed (ExportFailedError: ...)`` — the short form of the strategy attempts."""
    parts = []
    for a in strategy.get("attempts", []):
        parts.append(f"{a.get('strategy')}: ok" if a.get("ok") else f"{a.get('strategy')}: failed ({a.get('reason')})")
    return "; ".join(parts)[:500]


def inputs_text(inputs: dict) -> str:
    """``input_ids:int64[batch,sequence]`` per input: shape with dynamic axes named."""
    parts = []
    for name, spec in inputs.items():
        axes = spec.get("dynamic_axes", {})
        dims = [axes.get(str(i), str(d)) for i, d in enumerate(spec.get("shape", []))]
        parts.append(f"{name}:{spec.get('dtype')}[{','.join(dims)}]")
    return " ".join(parts)


def export_params(export: dict) -> dict:
    model = export.get("model") or {}
    options = export.get("options") or {}
    versions = export.get("versions") or {}
    params = {
        "model.id": model.get("ref"),
        "model.kind": model.get("kind"),
        "model.revision": model.get("revision") or model.get("fingerprint"),
        "model.fingerprint": model.get("fingerprint"),
        "task": options.get("task") or "auto",
        "strategy": (export.get("strategy") or {}).get("name"),
        "strategy.attempts": attempts_text(export.get("strategy") or {}),
        "exporter": export.get("exporter"),
        "opset": export.get("opset"),
        "inputs": inputs_text(export.get("inputs") or {}),
        "outputs": ",".join(export.get("outputs") or []),
        "clean": options.get("clean"),
        "torch_modules": options.get("torch_modules"),
        "dtype": options.get("dtype"),
        "stream_weights": options.get("stream_weights"),
    }
    params |= {f"version.{name}": versions[name] for name in VERSIONED if name in versions}
    return params


def export_metrics(export: dict) -> dict:
    stats = export.get("stats") or {}
    return {
        "nodes_total": stats.get("total_nodes"),
        "nodes_tagged": stats.get("tagged_nodes"),
        "nodes_root_tagged": stats.get("root_tagged_nodes"),
        "tag_coverage": stats.get("coverage"),
        "modules": len(export.get("tags") or {}),
    } | {  # an encoder-decoder's files, each on its own
        f"{stem}.{name}": (part.get("stats") or {}).get(key)
        for stem, part in (export.get("parts") or {}).items()
        for name, key in (("nodes_total", "total_nodes"), ("tag_coverage", "coverage"))
    }


def per_output(validation: dict) -> dict[str, dict]:
    """Worst max abs/rel difference of each output over every seed and shape case; None where it errored."""
    outputs: dict[str, dict] = {}
    for check in validation.get("checks", []):
        entry = outputs.setdefault(check["output"], {"max_abs_diff": 0.0, "max_rel_diff": 0.0, "passed": True})
        entry["passed"] = entry["passed"] and bool(check.get("passed"))
        for key in ("max_abs_diff", "max_rel_diff"):
            value = check.get(key)
            entry[key] = float("inf") if value is None else max(entry[key], float(value))
    return outputs


def validation_metrics(validation: dict, key) -> dict:
    outputs = per_output(validation)
    metrics = {"validation_passed": 1.0 if validation.get("passed") else 0.0}
    for name, entry in outputs.items():
        metrics[key("parity", name, "max_abs_diff")] = entry["max_abs_diff"]
        metrics[key("parity", name, "max_rel_diff")] = entry["max_rel_diff"]
    if outputs:
        metrics["parity_max_abs_diff"] = max(e["max_abs_diff"] for e in outputs.values())
        metrics["parity_max_rel_diff"] = max(e["max_rel_diff"] for e in outputs.values())
    return metrics


def validation_reason(validation: dict) -> str:
    return f"validation failed: {validation.get('summary') or 'an output is over tolerance'}"


def profile_metrics(profile: dict, key, top: int) -> dict:
    latency = profile.get("latency_ms") or {}
    metrics = {f"latency_{k}_ms": latency.get(k) for k in LATENCY_KEYS}
    metrics |= {
        "throughput_per_s": profile.get("throughput_per_s"),
        "attributed_fraction": profile.get("attributed_fraction"),
        "kernel_ms": profile.get("kernel_ms"),
        "peak_memory_mb": profile.get("peak_rss_mb"),  # the ORT session's process peak while profiling
        "peak_memory_delta_mb": profile.get("peak_rss_delta_mb"),
    }
    modules = sorted(profile.get("modules") or [], key=lambda m: m.get("self_ms") or 0, reverse=True)
    for module in modules[:top]:
        metrics[key("module_self_ms", module.get("tag") or "root")] = module.get("self_ms")
    for phase, measured in (profile.get("phases") or {}).items():  # a with-past export: prefill, decode
        lat = measured.get("latency_ms") or {}
        metrics |= {f"{phase}_latency_{k}_ms": lat.get(k) for k in LATENCY_KEYS}
        metrics[f"{phase}_attributed_fraction"] = measured.get("attributed_fraction")
        metrics[f"{phase}_kernel_ms"] = measured.get("kernel_ms")
    return metrics


def params_and_metrics(
    export: dict | None, validation: dict | None, profile: dict | None, tolerances: dict | None, key, top: int
) -> tuple[dict, dict]:
    """Every param and metric of one model run; missing parts are simply absent."""
    params: dict = {}
    metrics: dict = {}
    if export:
        params |= export_params(export)
        metrics |= export_metrics(export)
    tolerances = tolerances or (validation or {}).get("tolerances") or {}
    params |= {f"tolerance.{k}": v for k, v in tolerances.items()}
    if validation:
        metrics |= validation_metrics(validation, key)
        divergence = validation.get("localization") or {}
        if divergence.get("tag"):  # the first module whose outputs differ (modelexport.localize)
            params |= {"parity.first_divergent_module": divergence["tag"], "parity.divergence": divergence["summary"]}
    if profile:
        metrics |= profile_metrics(profile, key, top)
    for stage, part in (("export", export), ("validate", validation), ("profile", profile)):
        metrics[f"peak_rss_mb.{stage}"] = (part or {}).get("peak_rss_mb")  # the stage's largest RSS
    return params, {k: v for k, v in metrics.items() if v is not None}


def input_example(export: dict | None) -> dict | None:
    """MLflow's input example: the first item of the export's example batch, made from its recorded spec the way
    validation and profiling make it (same seed), so it is an input the model was checked on. One item, and only
    up to EXAMPLE_MAX_VALUES values: MLflow writes the example as JSON, parses it back and runs the model on it,
    about a second for one 3x224x224 image, the longest part of such a model's record; a larger input (an image) is
    described by the signature alone. None also where there is no spec, or an input is bfloat16 (numpy has no
    such type)."""
    if not export or not export.get("inputs"):
        return None
    import torch

    from modelexport.inputs import inputs_from_spec, parse_input_spec

    tensors = inputs_from_spec(parse_input_spec(export["inputs"], source="the sidecar's inputs")).tensors
    first = {name: t[:1] if t.dim() else t for name, t in tensors.items()}
    if (
        any(t.dtype == torch.bfloat16 for t in first.values())
        or sum(t.numel() for t in first.values()) > EXAMPLE_MAX_VALUES
    ):
        return None
    return {name: t.numpy() for name, t in first.items()}
