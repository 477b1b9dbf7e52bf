"""modules.png: where the time goes, as an icicle of inclusive time per module over the modules' own time."""

from __future__ import annotations

import os
from pathlib import Path

from . import atomic


def _segment(module: dict) -> str:
    """The tag's last segment: the class name (with its key, e.g. ``BertLayer.0``)."""
    return module["tag"].rstrip("/").rsplit("/", 1)[-1] or "(root)"


def _label(module: dict) -> str:
    """Attribute path and class, e.g. ``encoder.layer.0.attention.self (BertSelfAttention)``."""
    cls = _segment(module).split(".")[0]
    return f"{module['module']} ({cls})" if module["module"] else cls


def _children(modules: list[dict]) -> dict[int, list[int]]:
    """Rebuild the tree from the pre-order list (each entry has its depth)."""
    children: dict[int, list[int]] = {i: [] for i in range(len(modules))}
    stack: list[int] = []
    for i, m in enumerate(modules):
        while stack and modules[stack[-1]]["depth"] >= m["depth"]:
            stack.pop()
        if stack:
            children[stack[-1]].append(i)
        stack.append(i)
    return children


def plot_modules(result, path: str | os.PathLike, top: int = 15, phase: str | None = None) -> Path:
    """Draw the icicle (top) and the modules with the most own time (bottom); write a PNG atomically. `phase`
    names the phase of a with-past export the result measured (prefill, decode, ...)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modules = [m for m in result.modules if m["depth"] >= 0]
    children = _children(modules)
    total = modules[0]["total_ms"] if modules else 0.0
    palette = plt.get_cmap("tab20").colors
    colour: dict[int, tuple] = {0: (0.75, 0.75, 0.75)}
    for n, child in enumerate(children.get(0, [])):
        colour[child] = palette[n % len(palette)]

    fig, (icicle, bars) = plt.subplots(2, 1, figsize=(13, 9), gridspec_kw={"height_ratios": [1.1, 1]})
    depth_max = max((m["depth"] for m in modules if m["total_ms"] > 0), default=0)

    rects: list[tuple[float, float, float, tuple]] = []  # y, width, left, colour: drawn in one call below

    def draw(i: int, x: float, inherited) -> None:
        m = modules[i]
        width = m["total_ms"] / total if total else 0.0
        shade = colour.get(i, inherited)
        rects.append((-m["depth"], width, x, shade))
        if width > 0.06:
            text = f"{_segment(m)}\n{m['total_ms']:.3g} ms"
            icicle.text(x + width / 2, -m["depth"], text, ha="center", va="center", fontsize=7, clip_on=True)
        cursor = x + (m["self_ms"] / total if total else 0.0)  # own time first, then each child
        for child in children[i]:
            draw(child, cursor, shade)
            cursor += modules[child]["total_ms"] / total if total else 0.0

    if modules:
        draw(0, 0.0, colour[0])
        ys, widths, lefts, shades = zip(*rects)  # one bar container, not one per module (~1.5 ms each)
        icicle.barh(ys, widths, left=lefts, height=0.92, color=shades, edgecolor="white", linewidth=0.6)
    icicle.set_xlim(0, 1)
    icicle.set_ylim(-depth_max - 0.6, 0.6)
    icicle.set_yticks([-d for d in range(depth_max + 1)], [f"depth {d}" for d in range(depth_max + 1)])
    icicle.set_xlabel("share of the p50 latency (width = module incl. its children; its own time sits at the left)")
    icicle.set_title(
        f"{Path(result.onnx_path).name}{f' ({phase})' if phase else ''}: p50 "
        f"latency {result.latency_ms['p50']:.3f} ms per run, by module "
        f"({result.optimization}, {result.threads} thread(s)); {result.attributed_fraction:.1%} of kernel time "
        "attributed",
        fontsize=10,
    )
    for side in ("top", "right"):
        icicle.spines[side].set_visible(False)

    timed = [i for i in range(len(modules)) if modules[i]["self_ms"] > 0]
    ranked = sorted(timed, key=lambda i: modules[i]["self_ms"], reverse=True)[:top][::-1]
    owner = {}
    for i in range(len(modules)):
        for child in children[i]:
            owner[child] = owner.get(i, child) if modules[i]["depth"] >= 1 else child
    values = [modules[i]["self_ms"] for i in ranked]
    bars.barh(range(len(ranked)), values, color=[colour.get(owner.get(i, 0), colour[0]) for i in ranked])
    bars.set_yticks(range(len(ranked)), [_label(modules[i]) for i in ranked], fontsize=8)
    latency = result.latency_ms["p50"] or 1.0
    for y, value in enumerate(values):
        bars.text(value, y, f" {value:.3g} ms ({value / latency:.0%})", va="center", fontsize=7)
    bars.set_xlabel("own time per run (ms, of the p50 latency), excluding child modules")
    bars.set_title(f"top {len(ranked)} modules by own time (colour: top-level block)", fontsize=10)
    bars.set_xlim(0, max(values, default=1) * 1.25 or 1)
    for side in ("top", "right"):
        bars.spines[side].set_visible(False)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)
