"""Tag cost: a tagged export (``export_model``, end to end) ÷ loading the model and calling ``torch.onnx.export``
with the same exporter and opset; and the tagging pass alone on 1×, 4× and 16× the layers (time per node).

The tagged side pays for everything a user of ``modelexport export`` pays: resolving (content hash), loading,
example inputs, one eager run for the output names, capture, tagging, writing the ONNX and the sidecar. The
plain side is what the user would write by hand: ``from_pretrained``, dummy inputs, the same keyword wrapper the
strategy exports through (transformers 5 models need it for TorchScript), and one ``torch.onnx.export`` call to a
file with the same options.
"""

from __future__ import annotations

import gc
import math
import time
from pathlib import Path

from .common import RAM_DISK, BenchModel, build, failed, in_turns, interleaved, quiet_disk, scratch_folder, summary

# The exporter each strategy runs under the hood; the plain baseline calls exactly that one.
DYNAMO_STRATEGIES = {"dynamo"}


def plain_export(model: BenchModel, output: Path, names: list[str], dynamo: bool, opset: int) -> None:
    """What a user writes without modelexport: load (or build), dummy inputs, one torch.onnx.export to a file."""
    import torch

    from modelexport.strategies.base import quiet_exporter
    from modelexport.wrapping import KeywordWrapper

    torch_model, inputs, positional = load_with_inputs(model)
    wrapper = KeywordWrapper(torch_model, inputs.names, positional=positional).eval()
    args = tuple(inputs.tensors.values())
    with quiet_exporter(), torch.no_grad():
        if dynamo:
            from modelexport.strategies.dynamo import dynamic_shapes

            torch.onnx.export(
                wrapper,
                args,
                str(output),
                input_names=inputs.names,
                output_names=names,
                dynamic_shapes=dynamic_shapes(inputs),
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
                report=False,
            )
        else:
            torch.onnx.export(
                wrapper,
                args,
                str(output),
                input_names=inputs.names,
                output_names=names,
                dynamic_axes={**inputs.dynamic_axes} or None,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )


def load_with_inputs(model: BenchModel):
    """The torch model (``from_pretrained``, or its factory), its example inputs, and whether it is positional."""
    import importlib

    import transformers

    from modelexport.inputs import inputs_from_spec, spec_from_config

    if model.factory:
        module, attr = model.factory.split(":")
        return getattr(importlib.import_module(module), attr)(), inputs_from_spec(input_spec(model)), True
    torch_model = getattr(transformers, model.class_name).from_pretrained(build(model)).eval()
    return torch_model, inputs_from_spec(spec_from_config(torch_model, torch_model.config)), False


def input_spec(model: BenchModel):
    """The input spec a plain torch model is exported with (None: derived from the transformers config)."""
    from modelexport.inputs import parse_input_spec

    from .plain_models import INPUT_SPECS

    return parse_input_spec(INPUT_SPECS[model.factory.split(":")[1]]) if model.factory else None


def tag_cost(model: BenchModel, strategy: str, reps: int, min_seconds: float = 0.0, deadline: float = math.inf) -> dict:
    """Tagged export ÷ plain export, interleaved, for one strategy and model."""
    with scratch_folder(f"{strategy}-{model.name}") as out:
        return _tag_cost(model, strategy, reps, min_seconds, deadline, out)


def _tag_cost(model: BenchModel, strategy: str, reps: int, min_seconds: float, deadline: float, out: Path) -> dict:
    from modelexport.errors import ModelExportError
    from modelexport.export import DEFAULT_OPSET, export_model

    ref, spec = (model.factory, input_spec(model)) if model.factory else (str(build(model)), None)
    tagged_path, plain_path = out / f"{model.name}.onnx", out / f"{model.name}.plain.onnx"
    try:
        first = export_model(ref, tagged_path, strategy=strategy, input_spec=spec)
    except ModelExportError as exc:
        return failed(str(exc))
    names = first.sidecar["outputs"]
    onnx_mb = round(tagged_path.stat().st_size / 1e6, 1)

    # Both sides write a new file: the tagged export must (it renames a complete temporary file into place), and
    # rewriting an existing file in place is faster than writing a new one (~4x on this disk), which would
    # otherwise be counted as the cost of tags. Before each timed run (untimed): both files go, the disk writes
    # back what the last run wrote (where the folder is not on the RAM disk, see scratch_folder), and the garbage
    # the last run left in reference cycles (torch.export's graphs, a loaded model) is collected, so that neither
    # side pays for the other's.
    def tagged():
        export_model(ref, tagged_path, strategy=strategy, input_spec=spec)

    def plain():
        plain_export(model, plain_path, names, strategy in DYNAMO_STRATEGIES, DEFAULT_OPSET)

    figure = interleaved(
        tagged,
        plain,
        reps,
        warmup=False,  # the first export above warmed the tagged side; the plain one shares its libraries
        min_seconds=min_seconds,
        before=lambda: (quiet_disk(tagged_path, plain_path), gc.collect()),
        deadline=deadline,
    )
    figure["nodes"] = first.stats.total_nodes
    figure["onnx_mb"] = onnx_mb
    figure["folder"] = "RAM disk" if out.is_relative_to(RAM_DISK) else "disk"
    return figure


def layered_bert(layers: int):
    """A small BERT with `layers` layers: the tagging pass's input grows with it."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=512,
        hidden_size=64,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=64,
    )
    return BertModel(config).eval(), config


def tagging_input(layers: int):
    """The htp capture of a `layers`-layer BERT (nodes named) and its hierarchy: what the tagging pass takes."""
    from modelexport import tagging
    from modelexport.export import DEFAULT_OPSET
    from modelexport.hierarchy import build_hierarchy
    from modelexport.inputs import inputs_from_spec, spec_from_config
    from modelexport.strategies import STRATEGIES

    model, config = layered_bert(layers)
    inputs = inputs_from_spec(spec_from_config(model, config))
    capture = STRATEGIES["htp"].capture(model, inputs, DEFAULT_OPSET, False)
    tagging.name_nodes(capture.onnx_model.graph)
    return capture, build_hierarchy(model)


def tagging_pass(capture, hierarchy) -> tuple[float, int]:
    """Microseconds per node of project_tags + node_tags + apply_tags on a fresh copy of `capture`'s graph, and
    the number of nodes."""
    import onnx

    from modelexport import tagging

    proto = onnx.ModelProto()
    proto.CopyFrom(capture.onnx_model)
    start = time.perf_counter()
    tags, _ = tagging.project_tags(proto.graph, capture.scopes, hierarchy)
    mapping = tagging.node_tags(proto, tags)
    tagging.apply_tags(proto, mapping, hierarchy.tree())
    return (time.perf_counter() - start) / len(mapping) * 1e6, len(mapping)


def tagging_scaling(layer_counts: tuple[int, ...], reps: int) -> dict:
    """Per-node time at each size, and the largest size's per-node time ÷ the smallest's (flat ≈ 1).

    Each repetition times every size once, in turns (the order rotating), and gives one largest ÷ smallest
    ratio: a slow spell of the machine hits the sizes of a repetition alike, as in :func:`interleaved`. The garbage
    collector is off within a repetition, as timeit does: a collection landing in one pass is not the pass's cost.
    """
    inputs = {n: tagging_input(n) for n in layer_counts}
    per_node: dict[int, list[float]] = {n: [] for n in layer_counts}
    nodes: dict[int, int] = {}
    for rep in range(reps):
        gc.collect()
        gc.disable()
        try:
            for n in in_turns(layer_counts, rep):
                us_per_node, nodes[n] = tagging_pass(*inputs[n])
                per_node[n].append(us_per_node)
        finally:
            gc.enable()
    sizes = {f"x{n}": summary(per_node[n], nodes=nodes[n], layers=n, unit="us/node") for n in layer_counts}
    smallest, largest = per_node[layer_counts[0]], per_node[layer_counts[-1]]
    sizes["largest_over_smallest"] = summary([b / a for a, b in zip(smallest, largest)])
    return sizes
