"""Which module broke parity: the first tagged module, in the order their forwards end, whose outputs differ.

"logits off by 0.3" leaves a user to bisect by hand; the tags can do it. PyTorch's side: a forward hook on every
tagged module records its output tensors (its first call). ONNX Runtime's side: every tensor a module's nodes
write for use outside them (its boundary) is made an output of a copy of the graph, and one run gives them all.
A module's outputs match when each of its PyTorch output tensors equals (within tolerance) one of its boundary
tensors of the same shape; a module none of whose boundary tensors has an output's shape is not compared. Hooks
fire as forwards end, children before parents, so the first module that differs is the innermost one where the
difference starts.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass
class Divergence:
    """The first module whose outputs differ, and by how much (validation.json's ``localization``)."""

    tag: str
    module: str  # attribute path ("" for the root)
    output_index: int  # which of its output tensors
    max_abs_diff: float
    compared: int  # modules compared before and including it

    def describe(self) -> str:
        where = f"module {self.module or '(root)'} ({self.tag})"
        return f"first diverges at {where}: output {self.output_index} off by {self.max_abs_diff:.3g}"

    def to_dict(self) -> dict:
        return asdict(self)


def boundaries(graph, node_tags: dict[str, str]) -> dict[str, list[str]]:
    """Per tag, the tensors the nodes of its subtree write for nodes outside it (or as graph outputs)."""
    outputs_of: dict[str, set[str]] = {}
    consumers: dict[str, set[str]] = {}
    for node in graph.node:
        tag = node_tags.get(node.name, "")
        for tensor in node.output:
            outputs_of.setdefault(tag, set()).add(tensor)
        for tensor in node.input:
            consumers.setdefault(tensor, set()).add(tag)
    graph_outputs = {o.name for o in graph.output}
    result: dict[str, list[str]] = {}
    for tag in {t for t in outputs_of if t}:
        inside = {t for t in outputs_of if t == tag or t.startswith(tag + "/")}
        written = set().union(*(outputs_of[t] for t in inside))
        result[tag] = sorted(
            tensor for tensor in written if tensor in graph_outputs or consumers.get(tensor, set()) - inside
        )
    return result


def onnx_values(onnx_path: str | os.PathLike, tensors: list[str], feeds: dict) -> dict[str, np.ndarray]:
    """The values of `tensors` in one ONNX Runtime run on `feeds` (a copy of the model, with them as outputs)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_path))
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    typed = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output)}
    present = {o.name for o in model.graph.output}
    model.graph.output.extend(typed[t] for t in tensors if t in typed and t not in present)
    with tempfile.TemporaryDirectory(prefix="modelexport-localize-") as tmp:
        path = Path(tmp) / "probe.onnx"
        onnx.save(model, path, save_as_external_data=model.ByteSize() > 2**30)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(None, feeds)))


def torch_outputs(model, module_paths: dict[str, str], tensors: dict, positional: bool) -> list[tuple[str, list]]:
    """(tag, output tensors) of each tagged module's first call, in the order the forwards ended."""
    import torch

    from .wrapping import call_model

    ended: list[tuple[str, list]] = []
    seen: set[str] = set()
    handles = []

    def hook(tag):
        def record(_module, _args, output):
            if tag not in seen:
                seen.add(tag)
                flat = [t.detach() for t in _flatten(output) if isinstance(t, torch.Tensor)]
                ended.append((tag, flat))

        return record

    for tag, path in module_paths.items():
        try:
            module = model.get_submodule(path) if path else model
        except AttributeError:
            continue
        handles.append(module.register_forward_hook(hook(tag)))
    try:
        with torch.no_grad():
            call_model(model, tensors, positional=positional)
    finally:
        for handle in handles:
            handle.remove()
    return ended


def _flatten(value):
    if isinstance(value, dict) or hasattr(value, "to_tuple"):
        value = value.values() if isinstance(value, dict) else value.to_tuple()
    if isinstance(value, list | tuple):
        for item in value:
            yield from _flatten(item)
    else:
        yield value


def first_divergence(
    onnx_path, loaded, inputs, atol: float, rtol: float, module_diffs: dict | None = None
) -> Divergence | None:
    """The first tagged module (as forwards end) whose outputs differ between PyTorch and ONNX Runtime on
    `inputs` (ExampleInputs); None when every compared module matches. `module_diffs`, if given, receives every
    compared module's largest difference (its closest boundary tensor per output)."""
    module_diffs = {} if module_diffs is None else module_diffs
    import onnx

    from .case_check import difference
    from .export import read_sidecar

    sidecar = read_sidecar(onnx_path) or {}
    node_tags, tags = sidecar.get("node_tags") or {}, sidecar.get("tags") or {}
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    boundary = boundaries(graph, node_tags)
    feeds = {i.name: inputs.tensors[i.name].numpy() for i in graph.input if i.name in inputs.tensors}
    values = onnx_values(onnx_path, sorted({t for ts in boundary.values() for t in ts}), feeds)
    paths = {tag: info.get("module", "") for tag, info in tags.items()}
    compared, first = 0, None
    for tag, outputs in torch_outputs(loaded.model, paths, inputs.tensors, loaded.positional):
        candidates = [values[t] for t in boundary.get(tag, []) if t in values]
        for index, output in enumerate(outputs):
            want = output.float().numpy() if output.is_floating_point() else output.numpy()
            same_shape = [np.asarray(c) for c in candidates if np.shape(c) == want.shape]
            if not same_shape:
                continue
            compared += 1
            diffs = [difference(want, c, atol, rtol) for c in same_shape]
            closest = min(d for d, _, _ in diffs)
            module_diffs[tag] = max(module_diffs.get(tag, 0.0), closest)
            if first is None and not any(ok for _, _, ok in diffs):
                first = Divergence(tag, paths.get(tag, ""), index, closest, compared)
    return first
