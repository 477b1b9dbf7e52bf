"""Export without a second copy of the weights: keep them as the model's own tensors and stream them, one at a
time, into the external data file.

The TorchScript exporter's constant folding turns each ``Linear`` weight into its transpose, but as a view of the
parameter's storage, so the folded initializers cost nothing. What costs is serializing them: contiguous copies
in the protobuf, the protobuf's bytes, then Python's bytes of those (about 4x the weights in all, see docs/
exporting.md, "Memory"). So the exporter runs with ``export_params=False`` (the same graph, no weights in it)
while `keep_initializers` takes its final initializer dict on the way; the graph's weight inputs become external
initializers, and `write_data` writes each tensor (made contiguous alone) at its offset in the data file.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

import onnx

if TYPE_CHECKING:
    import torch

# Weights past this many bytes are always streamed: protobuf cannot hold 2 GB (onnx_io.PROTOBUF_LIMIT). A test lowers
# it to make a tiny model take this path.
STREAM_ABOVE_BYTES = 1_800_000_000
# Tensors of at least a MiB start at a multiple of 64 KiB in the data file, as onnx's own writer places them, so
# ONNX Runtime can map them.
ALIGN_FROM_BYTES = 2**20
ALIGNMENT = 2**16

ONNX_TYPES = {  # by torch dtype name: torch is imported only when a model is exported
    "float32": onnx.TensorProto.FLOAT,
    "float16": onnx.TensorProto.FLOAT16,
    "bfloat16": onnx.TensorProto.BFLOAT16,
    "float64": onnx.TensorProto.DOUBLE,
    "int64": onnx.TensorProto.INT64,
    "int32": onnx.TensorProto.INT32,
    "int16": onnx.TensorProto.INT16,
    "int8": onnx.TensorProto.INT8,
    "uint8": onnx.TensorProto.UINT8,
    "bool": onnx.TensorProto.BOOL,
}


@dataclass
class StreamedWeights:
    """A graph's initializers as torch tensors (views of the model's parameters where the exporter made them)."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.tensors)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


@contextlib.contextmanager
def keep_initializers() -> Iterator[StreamedWeights]:
    """While a TorchScript export runs, keep the initializer dict it would serialize (its last pass over them,
    deduplication, returns it), and run its whole-graph shape inference without the weights' values: that pass
    serializes the graph with every weight to hand it to onnx (~0.8x the weights more at its peak), and it needs
    only their shapes, which the graph's weight inputs carry. The passes are torch's module functions, replaced
    for the block; only this thread's calls are changed (the pipeline's compute lock runs one export at a time
    anyway, and torch's exporter keeps global state of its own)."""
    import torch

    weights, owner = StreamedWeights(), threading.get_ident()
    passes = torch._C
    deduplicate = passes._jit_pass_onnx_deduplicate_initializers
    infer = passes._jit_pass_onnx_graph_shape_type_inference

    def keeping(graph, params, training):
        kept = deduplicate(graph, params, training)
        if threading.get_ident() == owner:
            weights.tensors = dict(kept)
        return kept

    def inferring(graph, params, opset):
        return infer(graph, {} if threading.get_ident() == owner else params, opset)

    passes._jit_pass_onnx_deduplicate_initializers = keeping
    passes._jit_pass_onnx_graph_shape_type_inference = inferring
    try:
        yield weights
    finally:
        passes._jit_pass_onnx_deduplicate_initializers = deduplicate
        passes._jit_pass_onnx_graph_shape_type_inference = infer


def attach_initializers(graph: onnx.GraphProto, weights: StreamedWeights) -> None:
    """Turn the graph inputs an ``export_params=False`` export left for the weights into initializers without
    data (`write_data` gives them their place in the data file)."""
    inputs = [i for i in graph.input if i.name not in weights.tensors]
    del graph.input[:]
    graph.input.extend(inputs)
    for name, tensor in weights.tensors.items():
        dtype = str(tensor.dtype).removeprefix("torch.")
        if dtype not in ONNX_TYPES:
            raise RuntimeError(f"weight {name} has dtype {dtype}, which has no ONNX type here")
        graph.initializer.append(onnx.TensorProto(name=name, dims=tensor.shape, data_type=ONNX_TYPES[dtype]))


def write_data(graph: onnx.GraphProto, weights: StreamedWeights, out: BinaryIO, location: str) -> None:
    """Write every weight to `out`, one tensor in memory at a time, and point its initializer at it."""
    offset = 0
    for initializer in graph.initializer:
        tensor = weights.tensors.get(initializer.name)
        if tensor is None:
            continue
        data = _bytes_of(tensor)
        if data.nbytes >= ALIGN_FROM_BYTES and offset % ALIGNMENT:
            pad = ALIGNMENT - offset % ALIGNMENT
            out.write(b"\0" * pad)
            offset += pad
        out.write(data)
        del initializer.external_data[:]
        initializer.ClearField("raw_data")
        initializer.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", offset), ("length", data.nbytes)):
            initializer.external_data.add(key=key, value=str(value))
        offset += data.nbytes
        del data


def _bytes_of(tensor: torch.Tensor) -> memoryview:
    """The tensor's bytes in row-major order (little-endian, as ONNX stores raw data); a copy only when it is a
    non-contiguous view."""
    import torch

    flat = tensor.detach().contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")
