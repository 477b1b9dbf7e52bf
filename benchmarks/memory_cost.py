"""``python -m benchmarks.memory_cost [--sizes small medium]``: peak RSS ÷ weight bytes and seconds per GB of
export (streamed weights), validate and profile, at two LLaMA-style model sizes, with the slope between them.

Not part of ``make bench`` (the two models take ~5 minutes on 2 cores). Each stage runs as the CLI does, under
``/usr/bin/time -v`` (the kernel's high-water mark, not a sample); models are built from a LlamaConfig with random
weights in a temporary folder that is deleted afterwards. Results: benchmarks/README.md, "Memory".
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# hidden, layers, intermediate, heads, kv heads (vocabulary 32000): ~87M and ~250M parameters
SIZES = {"small": (768, 6, 2048, 12, 4), "medium": (1024, 12, 2816, 16, 4), "1b": (2048, 22, 5632, 32, 4)}
STAGES = {
    "export": ["export", "{model}", "{onnx}", "--task", "text-generation", "--stream-weights"],
    "validate": ["validate", "{onnx}", "--seeds", "0"],
    "profile": ["profile", "{onnx}"],
}


def build(folder: Path, hidden: int, layers: int, intermediate: int, heads: int, kv_heads: int) -> int:
    """Save a random LLaMA-style model; returns its weight bytes."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def timed(args: list[str]) -> tuple[float, float]:
    """(peak RSS in bytes, wall seconds) of ``python -m cli ARGS``."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        ["/usr/bin/time", "-v", sys.executable, "-m", "cli", *args], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr[-500:]}")
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1)) * 1024
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", done.stderr).group(1)
    seconds = sum(float(part) * 60**i for i, part in enumerate(reversed(wall.split(":"))))
    return peak, seconds


def measure(sizes: list[str]) -> dict:
    results = {}
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="modelexport-memory-") as tmp:
            folder, onnx = Path(tmp) / "model", Path(tmp) / "model.onnx"
            weights = build(folder, *SIZES[size])
            row = {"weight_bytes": weights}
            for stage, template in STAGES.items():
                peak, seconds = timed([a.format(model=folder, onnx=onnx) for a in template])
                row[stage] = {"peak_bytes": peak, "peak_over_weights": round(peak / weights, 2)}
                row[stage]["seconds_per_gb"] = round(seconds / (weights / 1e9), 1)
            results[size] = row
            print(size, row, flush=True)
    if len(sizes) >= 2:
        small, large = results[sizes[0]], results[sizes[-1]]
        extra = large["weight_bytes"] - small["weight_bytes"]
        for stage in STAGES:  # extra peak bytes per extra weight byte: the cost that grows with the model
            slope = (large[stage]["peak_bytes"] - small[stage]["peak_bytes"]) / extra
            print(f"{stage}: slope {slope:.2f} bytes of peak RSS per weight byte")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["small", "medium"], choices=list(SIZES))
    measure(parser.parse_args().sizes)


if __name__ == "__main__":
    main()
