"""The per-(module, op family) check of one strategy's tags against another's, and the warning for a subtree
whose parent holds every node though its children own the parameters."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from modelexport.crosscheck import OP_FAMILIES, family_agreement, family_counts, lumped_subtrees
from modelexport.errors import BadInputError
from modelexport.export import export_model
from modelexport.inputs import parse_input_spec
from tests import direct_call_models, strategy_models
from tests.conftest import run_cli

SPEC = parse_input_spec(direct_call_models.INPUT_SPEC)


def test_family_agreement_compares_each_family_per_module():
    a = family_counts([("/M/A", "MatMul"), ("/M/B", "Gemm"), ("/M/A", "Relu"), ("/M", "Reshape")])
    assert a == Counter({("/M/A", "matmul"): 1, ("/M/B", "matmul"): 1, ("/M/A", "activation"): 1})
    same = family_agreement(a, a)
    assert same.agreement == 1.0 and not same.differences
    # b: the same compute, but B's matrix product lumped on the parent, and more shape ops (not compared)
    b = family_counts([("/M/A", "MatMul"), ("/M", "MatMul"), ("/M/A", "Relu"), ("/M", "Shape"), ("/M", "Gather")])
    moved = family_agreement(a, b)
    assert moved.families["matmul"] == {"agreement": 0.5, "a_nodes": 2, "b_nodes": 2}
    assert moved.families["activation"]["agreement"] == 1.0
    assert moved.agreement == pytest.approx((2 * 0.5 + 1 * 1.0) / 3, abs=1e-4)
    assert {(r.tag, r.family) for r in moved.differences} == {("/M", "matmul"), ("/M/B", "matmul")}
    only = family_agreement(a, family_counts([("/M", "Conv")]))
    assert only.agreement is None and only.only_in_a == ["activation", "matmul"] and only.only_in_b == ["conv"]
    assert OP_FAMILIES["Conv"] == "conv" and "Reshape" not in OP_FAMILIES


def _tree(tag, nodes, parameters=0, children=()):
    return {
        "tag": tag,
        "module": tag.rsplit("/", 1)[-1].lower(),
        "nodes": nodes,
        "parameters": parameters,
        "children": list(children),
    }


def test_lumped_subtree_warning():
    lumped = _tree("/M", 3, 10, [_tree("/M/Enc", 40, 10, [_tree("/M/Enc/L.0", 0, 5), _tree("/M/Enc/L.1", 0, 5)])])
    [warning] = lumped_subtrees(lumped)
    assert warning.startswith("/M/Enc holds all 40 nodes of its subtree, but its children L.0, L.1 own 10 parameters")
    fine = _tree("/M", 3, 10, [_tree("/M/Enc", 40, 10, [_tree("/M/Enc/L.0", 0, 5), _tree("/M/Enc/L.1", 2, 5)])])
    assert lumped_subtrees(fine) == []
    no_parameters = _tree("/M", 3, 0, [_tree("/M/Act", 0)])  # a parameter-free child may well be unused
    assert lumped_subtrees(no_parameters) == []
    # a child that ran but left no node (its ops constant-folded, as Swin's relative position bias) is spared
    assert len(lumped_subtrees(lumped, ran=frozenset({"enc"}))) == 1
    assert lumped_subtrees(lumped, ran=frozenset({"enc", "l.1"})) == []


@pytest.mark.parametrize("strategy", ["htp", "usage"])
def test_parent_using_its_childs_weights_warns_in_the_sidecar(strategy, tmp_path):
    result = export_model(
        "tests.direct_call_models:parameters_only", tmp_path / "p.onnx", strategy=strategy, input_spec=SPEC
    )
    [warning] = result.sidecar["warnings"]
    assert (
        warning.startswith("/HoldsParametersOnly/ParametersOnly holds all ")
        and "Projection own 72 parameters" in warning
    )


def test_cross_check_on_request(tmp_path):
    result = export_model(
        "tests.direct_call_models:direct_call", tmp_path / "d.onnx", input_spec=SPEC, cross_check="dynamo"
    )
    check = result.sidecar["cross_check"]
    assert result.strategy == "htp" and check["strategy"] == "dynamo" and check["against"] == "htp"
    assert check["ok"] and check["agreement"] == 1.0 and check["differences"] == []
    assert set(check["families"]) == {"matmul", "math"}
    assert not (tmp_path / "d-dynamo.onnx").exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "d.hierarchy.json",
        "d.onnx",
    ]
    plain = export_model("tests.direct_call_models:direct_call", tmp_path / "e.onnx", input_spec=SPEC)
    assert plain.sidecar["cross_check"] is None
    same = export_model(
        "tests.direct_call_models:direct_call",
        tmp_path / "f.onnx",
        input_spec=SPEC,
        strategy="usage",
        cross_check="usage",
    )
    assert same.sidecar["cross_check"]["ok"] is False and "nothing to compare" in same.sidecar["cross_check"]["reason"]
    failing = export_model(
        "tests.strategy_models:branchy",
        tmp_path / "g.onnx",
        strategy="dynamo",
        input_spec=parse_input_spec(strategy_models.INPUT_SPEC),
        cross_check="htp",
    )  # tracing cannot follow torch.cond: recorded, not raised
    assert failing.sidecar["cross_check"]["ok"] is False and failing.sidecar["cross_check"]["reason"]
    with pytest.raises(BadInputError, match="unknown strategy 'nope'"):
        export_model("tests.direct_call_models:direct_call", tmp_path / "h.onnx", input_spec=SPEC, cross_check="nope")


def test_cli_cross_check_and_warning_on_stderr(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(direct_call_models.INPUT_SPEC))
    proc = run_cli(
        "export",
        "tests.direct_call_models:parameters_only",
        str(tmp_path / "p.onnx"),
        "--input-spec",
        str(spec),
        "--cross-check",
        "usage",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning: /HoldsParametersOnly/ParametersOnly holds all" in proc.stderr
    assert "cross-check usage vs htp: family agreement 100.0%" in proc.stdout
    sidecar = json.loads((tmp_path / "p.hierarchy.json").read_text())
    assert sidecar["cross_check"]["strategy"] == "usage" and len(sidecar["warnings"]) == 1


def test_strategy_all_records_family_agreement(tmp_path):
    from modelexport.export_all import export_all

    runs = export_all("tests.direct_call_models:direct_call", tmp_path / "all", input_spec=SPEC)
    assert {r.strategy: r.family_agreement_with_htp for r in runs} == {
        "htp": 1.0,
        "dynamo": 1.0,
        "usage": 1.0,
        "fx": 1.0,
    }
    data = json.loads((tmp_path / "all" / "export-all.json").read_text())
    assert [r["strategy"] for r in data["runs"]] == [r.strategy for r in runs]
    assert all(r["ok"] and r["family_agreement_with_htp"] == 1.0 and r["warnings"] == [] for r in data["runs"])


def test_only_nodes_computed_from_the_inputs_are_compared():
    """A weight-only computation (BiT's weight standardisation) is folded by one exporter and kept by another: it
    says nothing about which module runs the model, so the family counts leave it out."""
    from onnx import TensorProto, helper

    from modelexport.crosscheck import computed_from_inputs

    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["w"], ["w_mean"], name="weight_mean"),
            helper.make_node("Sub", ["w", "w_mean"], ["w_std"], name="standardise"),
            helper.make_node("Constant", [], ["c"], name="const", value_float=1.0),
            helper.make_node("MatMul", ["x", "w_std"], ["y"], name="matmul"),
            helper.make_node("Relu", ["y"], ["z"], name="relu"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor("w", TensorProto.FLOAT, [2, 2], [1.0, 2.0, 3.0, 4.0])],
    )
    assert computed_from_inputs(graph) == {"matmul", "relu"}
