"""The wire-level split of an exporter's bytes: the small model plus spliced weights is the same ModelProto."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelexport.serialized_weights import split_weights, write_model


def small_model(weights: int = 3) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), f"w{i}") for i in range(weights)]
    nodes, last = [], "x"
    for i in range(weights):
        nodes.append(helper.make_node("MatMul", [last, f"w{i}"], [f"h{i}"], name=f"/layer.{i}/MatMul"))
        last = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info(last, TensorProto.FLOAT, [1, 4])],
        initializer=inits,
    )
    model = helper.make_model(graph, producer_name="test", opset_imports=[helper.make_opsetid("", 18)])
    helper.set_model_props(model, {"source": "test"})
    return model


def test_split_keeps_everything_but_the_weights_and_names_them():
    model = small_model()
    small, weights = split_weights(model.SerializeToString())
    assert weights.names == ["w0", "w1", "w2"]
    assert len(weights.chunks) == 1  # the serializer writes initializers back to back: one slice
    assert not small.graph.initializer
    assert [n.name for n in small.graph.node] == [n.name for n in model.graph.node]
    assert small.producer_name == "test" and small.metadata_props[0].value == "test"
    assert small.opset_import == model.opset_import


def test_write_model_splices_the_weights_back_after_edits():
    model = small_model()
    small, weights = split_weights(model.SerializeToString())
    small.graph.node[1].metadata_props.add(key="hierarchy_tag", value="/Model/Layer.1")
    out = io.BytesIO()
    write_model(small, weights, out)
    written = onnx.ModelProto.FromString(out.getvalue())
    expected = onnx.ModelProto()
    expected.CopyFrom(model)
    expected.graph.node[1].metadata_props.add(key="hierarchy_tag", value="/Model/Layer.1")
    assert written == expected
    onnx.checker.check_model(written)


def test_initializers_between_other_fields_become_several_slices():
    # GraphProto fields in an unusual order: initializer, node, initializer (parsers accept any order)
    model = small_model(weights=2)
    graph = model.graph
    parts = [
        _field(5, graph.initializer[0]),
        _field(1, graph.node[0]),
        _field(5, graph.initializer[1]),
        _field(1, graph.node[1]),
    ]
    parts += [_field(11, v) for v in graph.input] + [_field(12, v) for v in graph.output]
    reordered = onnx.ModelProto()
    reordered.CopyFrom(model)
    reordered.ClearField("graph")
    data = reordered.SerializeToString() + _key(7) + _varint(sum(map(len, parts))) + b"".join(parts)
    small, weights = split_weights(data)
    assert weights.names == ["w0", "w1"] and len(weights.chunks) == 2
    out = io.BytesIO()
    write_model(small, weights, out)
    written = onnx.ModelProto.FromString(out.getvalue())
    assert [numpy_helper.to_array(t).tolist() for t in written.graph.initializer] == [
        numpy_helper.to_array(t).tolist() for t in model.graph.initializer
    ]
    assert [n.name for n in written.graph.node] == [n.name for n in model.graph.node]


def test_truncated_bytes_are_refused():
    data = small_model().SerializeToString()
    with pytest.raises(ValueError, match="truncated"):
        split_weights(data[:-7])


def test_parsed_and_serialized_initializers_together_are_refused():
    model = small_model()
    _, weights = split_weights(model.SerializeToString())
    with pytest.raises(ValueError, match="initializers"):
        write_model(model, weights, io.BytesIO())


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def _key(number: int) -> bytes:
    return _varint(number << 3 | 2)


def _field(number: int, message) -> bytes:
    data = message.SerializeToString()
    return _key(number) + _varint(len(data)) + data
