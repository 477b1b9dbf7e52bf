"""Node-data overlays for Google's Model Explorer: a value per ONNX node, which it colours the graph by.

The format is Model Explorer's ``GraphNodeData`` (``model_explorer.node_data_builder``): ``results`` keyed by node
id, which its ONNX adapter (``model-explorer-onnx``) takes from the node's name, and a gradient from the smallest
value to the largest. The tagged file's ``namespace`` metadata groups the nodes into modules, so a module's colour
bar shows where its time goes. To look at one::

    pip install ai-edge-model-explorer model-explorer-onnx
    model-explorer model.onnx --extensions=model_explorer_onnx --node_data_paths=model_profile/latency.node_data.json
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import atomic

GRADIENT = [{"stop": 0, "bgColor": "#fff7ec"}, {"stop": 0.5, "bgColor": "#fc8d59"}, {"stop": 1, "bgColor": "#7f0000"}]


def node_data(values: dict[str, float], name: str) -> dict:
    """One graph's node data: `values` per node name, coloured by a gradient."""
    return {"name": name, "results": {node: {"value": value} for node, value in values.items()}, "gradient": GRADIENT}


def write_node_data(path: str | os.PathLike, values: dict[str, float], name: str) -> Path:
    """Write the node data of `values` to `path` atomically."""
    return atomic.write_text(path, json.dumps(node_data(values, name)))
