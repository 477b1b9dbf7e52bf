"""`compare`: per-module counts, tags only in one file, agreement; as a library call and from the CLI."""

from __future__ import annotations

import json
from collections import Counter

import onnx
import pytest

from modelexport.compare import compare_files, distribution_agreement
from modelexport.export import export_model
from modelexport.inputs import parse_input_spec
from tests import strategy_models
from tests.conftest import run_cli

SPEC = parse_input_spec(strategy_models.INPUT_SPEC)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The Distinct model exported with htp and with usage, plus a copy of the htp file with one tag moved."""
    out = tmp_path_factory.mktemp("compare")
    a = export_model("tests.strategy_models:distinct", out / "a.onnx", strategy="htp", input_spec=SPEC).onnx_path
    b = export_model("tests.strategy_models:distinct", out / "b.onnx", strategy="usage", input_spec=SPEC).onnx_path
    model = onnx.load(str(a))
    sin = next(n for n in model.graph.node if n.op_type == "Sin")
    for prop in sin.metadata_props:
        if prop.key == "hierarchy_tag":
            prop.value = "/Distinct/Moved"
    moved = out / "moved.onnx"
    onnx.save(model, str(moved))
    return a, b, moved


def test_distribution_agreement():
    assert distribution_agreement(Counter(x=2, y=2), Counter(x=1, y=1)) == 1.0
    assert distribution_agreement(Counter(x=3, y=1), Counter(x=1, y=3)) == 0.5
    assert distribution_agreement(Counter(x=1), Counter(y=1)) == 0.0


def test_same_model_two_strategies_agree(pair):
    a, b, _ = pair
    result = compare_files(a, b)
    assert result.agreement == 1.0 and not result.only_in_a and not result.only_in_b
    row = next(r for r in result.modules if r.tag == "/Distinct/Encoder/Act.0")
    assert row.a_op_types == row.b_op_types == {"Sin": 1}


def test_a_moved_tag_shows(pair):
    a, _, moved = pair
    result = compare_files(a, moved)
    assert result.name_agreement == pytest.approx(8 / 9, abs=1e-3)
    assert result.only_in_a == ["/Distinct/Encoder/Act.0"] and result.only_in_b == ["/Distinct/Moved"]
    assert result.agreement == pytest.approx(8 / 9, abs=1e-3)


def test_cli_json_and_table(pair, tmp_path):
    a, _, moved = pair
    proc = run_cli("compare", str(a), str(moved), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["only_in_b"] == ["/Distinct/Moved"] and data["a_nodes"] == data["b_nodes"] == 9
    assert {m["tag"] for m in data["modules"]} >= {"/Distinct", "/Distinct/Moved"}
    table = run_cli("compare", str(a), str(moved), env={"COLUMNS": "200"})
    assert table.returncode == 0 and "only in B" in table.stdout and "88.9%" in table.stdout


def test_cli_bad_input(pair, tmp_path):
    a, _, _ = pair
    missing = run_cli("compare", str(a), str(tmp_path / "nope.onnx"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    bare = tmp_path / "bare.onnx"
    model = onnx.load(str(a))
    for node in model.graph.node:
        del node.metadata_props[:]
    del model.metadata_props[:]
    onnx.save(model, str(bare))
    untagged = run_cli("compare", str(a), str(bare))
    assert untagged.returncode == 2 and "no hierarchy tags" in untagged.stderr
