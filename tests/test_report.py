"""Hierarchy report, GraphML export and the GraphML -> ONNX round trip."""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from modelexport.errors import BadInputError
from modelexport.export import read_tags
from modelexport.graphml import import_graphml
from modelexport.profile import feeds_for
from modelexport.report import write_hierarchy_report
from tests.conftest import run_cli


def test_report_json_markdown_and_graphml(exported, tmp_path):
    result = exported("tiny-bert")
    paths = write_hierarchy_report(result.onnx_path, tmp_path)
    report = json.loads(paths["json"].read_text())
    model = onnx.load(str(result.onnx_path))
    assert report["coverage"]["total_nodes"] == len(model.graph.node)
    assert report["coverage"]["coverage"] == 1.0 and report["coverage"]["untagged_nodes"] == 0
    assert sum(m["nodes"] for m in report["modules"]) == len(model.graph.node)
    assert report["modules"][0]["total_nodes"] == len(model.graph.node)
    assert sum(report["op_types"].values()) == len(model.graph.node)
    attention = next(m for m in report["modules"] if m["module"] == "encoder.layer.0.attention.self")
    assert attention["op_types"]["MatMul"] >= 2 and attention["depth"] == 4
    assert "BertSelfAttention" in paths["markdown"].read_text()

    graph = nx.read_graphml(paths["graphml"])
    tags, _ = read_tags(result.onnx_path)
    ops = {n: d for n, d in graph.nodes(data=True) if d["kind"] == "node"}
    assert len(ops) == len(model.graph.node)
    for node in model.graph.node:
        data = ops[node.name]
        assert data["tag"] == tags[node.name] and data["op_type"] == node.op_type
        assert data["namespace"] == tags[node.name].strip("/")
    assert ops[attention_node(model)]["module"] == "encoder.layer.0.attention.self"
    assert graph.number_of_edges() > len(model.graph.node)
    assert {d["kind"] for _, d in graph.nodes(data=True)} == {"input", "node", "output"}


def attention_node(model) -> str:
    return next(
        n.name
        for n in model.graph.node
        if n.name.startswith("/model/encoder/layer.0/attention/self/") and n.op_type == "MatMul"
    )


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-gpt2", "tiny-vit", "tiny-resnet"])
def test_graphml_round_trip_gives_identical_outputs(exported, name, tmp_path):
    original = exported(name).onnx_path
    paths = write_hierarchy_report(original, tmp_path)
    rebuilt = import_graphml(paths["graphml"], tmp_path / "rebuilt.onnx")
    onnx.checker.check_model(onnx.load(str(rebuilt)), full_check=True)
    a = ort.InferenceSession(str(original), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(rebuilt), providers=["CPUExecutionProvider"])
    feeds = feeds_for(original, a)
    assert [o.name for o in a.get_outputs()] == [o.name for o in b.get_outputs()]
    for x, y in zip(a.run(None, feeds), b.run(None, feeds), strict=True):
        assert x.shape == y.shape and np.array_equal(x, y)
    assert read_tags(rebuilt)[0] == read_tags(original)[0]


def test_import_rejects_foreign_and_damaged_graphml(exported, tmp_path):
    foreign = tmp_path / "foreign.graphml"
    nx.write_graphml(nx.path_graph(3), foreign)
    with pytest.raises(BadInputError, match="not written by modelexport"):
        import_graphml(foreign, tmp_path / "x.onnx")
    paths = write_hierarchy_report(exported("tiny-gpt2").onnx_path, tmp_path / "r")
    graph = nx.read_graphml(paths["graphml"])
    first = next(n for n, d in graph.nodes(data=True) if d["kind"] == "node")
    graph.remove_node(first)  # a node missing: the model no longer checks
    damaged = tmp_path / "damaged.graphml"
    nx.write_graphml(graph, damaged)
    with pytest.raises(BadInputError, match="ONNX checker"):
        import_graphml(damaged, tmp_path / "y.onnx")
    assert not (tmp_path / "y.onnx").exists()


def test_cli(exported, tmp_path):
    onnx_path = exported("tiny-gpt2").onnx_path
    ok = run_cli("report", str(onnx_path), "--output-dir", str(tmp_path / "r"))
    assert ok.returncode == 0, ok.stderr
    graphml = tmp_path / "r" / f"{onnx_path.stem}.graphml"
    assert {p.name for p in (tmp_path / "r").iterdir()} == {"report.json", "report.md", graphml.name}
    back = run_cli("import-graphml", str(graphml), str(tmp_path / "back.onnx"))
    assert back.returncode == 0, back.stderr and (tmp_path / "back.onnx").is_file()
    for args in (
        ("import-graphml", str(onnx_path), str(tmp_path / "x.onnx")),
        ("import-graphml", str(graphml), str(tmp_path / "x.txt")),
        ("report", str(tmp_path / "nope.onnx")),
    ):
        bad = run_cli(*args)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
