"""Keep an exporter's serialized weights as bytes: parse and rewrite only the graph around them.

Tagging touches nodes, never weights, yet parsing a 440 MB ModelProto and serializing it again cost more than a
third of a BERT-base export (see benchmarks/). So the exporter's bytes are split at the protobuf wire level: the
graph's ``initializer`` fields (GraphProto field 5) stay slices of the exporter's buffer, everything else becomes
a small ModelProto to tag; `write_model` writes the small model with the slices spliced back into its graph.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import onnx

MODEL_GRAPH = 7  # ModelProto.graph
GRAPH_INITIALIZER = 5  # GraphProto.initializer
TENSOR_NAME = 8  # TensorProto.name
LENGTH_DELIMITED = 2


@dataclass
class SerializedWeights:
    """A graph's initializers exactly as serialized (each field's key, length and TensorProto), unparsed."""

    chunks: list[memoryview] = field(default_factory=list)  # contiguous runs of initializer fields
    names: list[str] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.chunks)


def split_weights(data: bytes) -> tuple[onnx.ModelProto, SerializedWeights]:
    """The model in `data` without its initializers, and those initializers as slices of `data`."""
    view = memoryview(data)
    head, graphs = [], []
    for number, wire, start, value, end in _fields(view, 0, len(view)):
        (graphs if number == MODEL_GRAPH and wire == LENGTH_DELIMITED else head).append((start, value, end))
    if len(graphs) != 1:  # not what an exporter writes: parse it the ordinary way
        return onnx.ModelProto.FromString(data), SerializedWeights()
    _, graph_start, graph_end = graphs[0]
    weights, rest = SerializedWeights(), []
    run_start = run_end = None
    for number, wire, start, value, end in _fields(view, graph_start, graph_end):
        if number != GRAPH_INITIALIZER or wire != LENGTH_DELIMITED:
            rest.append(view[start:end])
            continue
        weights.names.append(_tensor_name(view, value, end))
        if run_end != start:
            if run_start is not None:
                weights.chunks.append(view[run_start:run_end])
            run_start = start
        run_end = end
    if run_start is not None:
        weights.chunks.append(view[run_start:run_end])
    graph = b"".join(rest)
    model = b"".join(view[s:e] for s, _, e in head) + _key(MODEL_GRAPH) + _varint(len(graph)) + graph
    return onnx.ModelProto.FromString(model), weights


def write_model(model: onnx.ModelProto, weights: SerializedWeights, out: BinaryIO) -> None:
    """Write `model` with `weights` back in its graph: one ModelProto, as if serialized whole."""
    if model.graph.initializer and weights.chunks:
        raise ValueError("the model has parsed initializers as well as serialized ones")
    data = memoryview(model.SerializeToString())
    graph = None
    for number, wire, start, value, end in _fields(data, 0, len(data)):
        if number == MODEL_GRAPH and wire == LENGTH_DELIMITED:
            graph = (value, end)
        else:
            out.write(data[start:end])
    value, end = graph if graph else (0, 0)
    out.write(_key(MODEL_GRAPH) + _varint(end - value + weights.nbytes))
    out.write(data[value:end])
    for chunk in weights.chunks:
        out.write(chunk)


def _fields(buf: memoryview, pos: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(number, wire type, field start, value start, field end) of each field of the message in buf[pos:end]."""
    while pos < end:
        key, value = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, stop = _read_varint(buf, value)
        elif wire == 1:
            stop = value + 8
        elif wire == LENGTH_DELIMITED:
            length, value = _read_varint(buf, value)
            stop = value + length
        elif wire == 5:
            stop = value + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} at byte {pos}")
        if stop > end:
            raise ValueError(f"truncated protobuf field at byte {pos}")
        yield number, wire, pos, value, stop
        pos = stop


def _tensor_name(buf: memoryview, pos: int, end: int) -> str:
    for number, wire, _, value, stop in _fields(buf, pos, end):
        if number == TENSOR_NAME and wire == LENGTH_DELIMITED:
            return bytes(buf[value:stop]).decode("utf-8")
    return ""


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError(f"truncated protobuf varint at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(number: int, wire: int = LENGTH_DELIMITED) -> bytes:
    return _varint(number << 3 | wire)
