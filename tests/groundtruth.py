"""Ground truth for tags, computed independently of modelexport's own tagging code.

Two independent sources:
* `scope_truth`: the scope torch's TorchScript tracer recorded in each node name, turned into a tag by a small
  reference implementation of the documented tag rules (written separately from modelexport.hierarchy);
* `anchor_truth`: an eager run under a TorchFunctionMode with forward hooks, counting the compute ops
  (linear, matmul, addmm, conv, attention) each module's own forward called — no exporter involved.
"""

from __future__ import annotations

import re
from collections import Counter

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

CONTAINER_TYPES = (nn.ModuleList, nn.Sequential, nn.ModuleDict)


def _taggable(m: nn.Module) -> bool:
    return not isinstance(m, CONTAINER_TYPES) and not type(m).__module__.startswith("torch.")


def _candidates(owner: nn.Module):
    """(relative path, container key or None, module) of the taggable modules directly under `owner`."""
    out = []

    def walk(m, rel, key):
        for name, child in m._modules.items():
            if child is None:
                continue
            r = f"{rel}.{name}" if rel else name
            if isinstance(child, CONTAINER_TYPES):
                walk(child, r, f"{key}.{name}" if key else name)
            elif _taggable(child):
                out.append((r, f"{key}.{name}" if key else (name if key is not None and key == "" else None), child))

    for name, child in owner._modules.items():
        if child is None:
            continue
        if isinstance(child, CONTAINER_TYPES):
            walk(child, name, "")
        elif _taggable(child):
            out.append((name, None, child))
    return out


def reference_tag(model: nn.Module, path: str) -> str:
    """The documented tag of the module at attribute `path` (ops of built-ins go to their holder)."""
    tag, owner = "/" + type(model).__name__, model
    parts = path.split(".") if path else []
    while parts:
        # find the candidate under `owner` whose relative path is a prefix of what remains
        remaining = ".".join(parts)
        cands = _candidates(owner)
        match = None
        for rel, key, mod in cands:
            if remaining == rel or remaining.startswith(rel + "."):
                match = (rel, key, mod)
        if match is None:
            return tag
        rel, key, mod = match
        segment = type(mod).__name__ + (f".{key}" if key else "")
        clash = sum(1 for r, k, m in cands if type(m).__name__ + (f".{k}" if k else "") == segment)
        if clash > 1:
            segment = f"{type(mod).__name__}.{rel}"
        tag, owner = f"{tag}/{segment}", mod
        parts = parts[len(rel.split(".")) :]
    return tag


def node_scope(name: str, paths: set[str]) -> str | None:
    """Attribute path recorded by the TorchScript tracer in a node name (the wrapper's child is 'model').

    A level is a path relative to the enclosing scope or, below a called Sequential, to an ancestor of it.
    """
    parts = name.split("/")[1:-1] if name.startswith("/") else []
    if not parts or parts[0] != "model":
        return None
    path = ""

    def below(level):
        return [p for p in paths if (p == level or p.endswith("." + level)) and (not path or p.startswith(path + "."))]

    for level in parts[1:]:
        options = below(level)
        if not options and re.search(r"_\d+$", level):  # a repeated call: attention_1 is attention
            level = re.sub(r"_\d+$", "", level)
            options = below(level)
        if not options:
            break
        path = min(options, key=len)
    return path


def scope_truth(model: nn.Module, onnx_model) -> dict[str, str]:
    """Node name -> expected tag, for every node whose name carries a scope."""
    truth = {}
    paths = {p for p, _ in model.named_modules(remove_duplicate=False)}
    for node in onnx_model.graph.node:
        scope = node_scope(node.name, paths)
        if scope is not None:
            truth[node.name] = reference_tag(model, scope)
    return truth


ANCHORS = {
    torch.nn.functional.linear: 1,
    torch.matmul: 1,
    torch.Tensor.matmul: 1,
    torch.Tensor.__matmul__: 1,
    torch.bmm: 1,
    torch.addmm: 1,
    torch.nn.functional.conv1d: 1,
    torch.nn.functional.conv2d: 1,
    torch.nn.functional.scaled_dot_product_attention: 2,
}
ANCHOR_OPS = {"MatMul", "Gemm", "Conv"}


def anchor_truth(model: nn.Module, tensors: dict, positional: bool = False) -> Counter:
    """Tag -> number of MatMul/Gemm/Conv the eager forward of each module ran itself (hooks + function mode)."""
    tags = {id(m): reference_tag(model, p) for p, m in model.named_modules()}
    stack: list[str] = []
    counts: Counter = Counter()

    class Count(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            weight = ANCHORS.get(func)
            if weight and stack:
                counts[stack[-1]] += weight
            return func(*args, **(kwargs or {}))

    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(lambda mod, a: stack.append(tags[id(mod)])))
        handles.append(m.register_forward_hook(lambda mod, a, o: [stack.pop()] and None))
    try:
        with torch.inference_mode(), Count():
            model(*tensors.values()) if positional else model(**tensors)
    finally:
        for h in handles:
            h.remove()
    return counts


def frame_anchor_truth(model: nn.Module, tensors: dict, positional: bool = False) -> Counter:
    """Like `anchor_truth`, but the module of each compute op is read from the Python stack, not from hooks: the
    innermost frame running a function named ``forward`` whose ``self`` is one of the model's modules. It sees a
    ``child.forward(x)`` call as the child's and ``super().forward`` / ``Base.forward(self, x)`` as the module's
    own, with no exporter and no ``__call__`` involved."""
    import sys

    tags = {id(m): reference_tag(model, p) for p, m in model.named_modules()}
    counts: Counter = Counter()

    class Count(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            weight = ANCHORS.get(func)
            frame = sys._getframe(1) if weight else None
            while frame is not None:
                owner = frame.f_locals.get("self") if frame.f_code.co_name == "forward" else None
                if owner is not None and id(owner) in tags:
                    counts[tags[id(owner)]] += weight
                    break
                frame = frame.f_back
            return func(*args, **(kwargs or {}))

    with torch.inference_mode(), Count():
        model(*tensors.values()) if positional else model(**tensors)
    return counts
