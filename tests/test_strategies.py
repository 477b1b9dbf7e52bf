"""Each strategy against a ground truth it does not compute itself; auto's fallback; export --strategy all.

Ground truths:
* the plain `Distinct` model gives each module its own op types, so a node's true tag follows from its op type;
* on the transformers models, a small reference reads the scope the exporter itself recorded — the TorchScript
  node name (matched against the model's module paths by subsequence, not by the strategies' resolver) or the
  dynamo exporter's ``pkg.torch.onnx.name_scopes`` — for every node that has one.
Run with ``-s`` to see the measured figures.
"""

from __future__ import annotations

import ast
import json

import onnx
import pytest

from modelexport.errors import ExportFailedError
from modelexport.export import AUTO_ORDER, export_model
from modelexport.hierarchy import build_hierarchy
from modelexport.inputs import parse_input_spec
from modelexport.loading import load
from modelexport.source import resolve
from modelexport.strategies import STRATEGIES
from tests import strategy_models
from tests.conftest import run_cli

HF_MODELS = ["tiny-bert", "tiny-gpt2", "tiny-vit", "tiny-resnet"]
TESTED = {"htp", "dynamo", "usage", "fx"}
SPEC = parse_input_spec(strategy_models.INPUT_SPEC)


def test_every_registered_strategy_is_tested():
    assert set(STRATEGIES) == TESTED
    assert set(AUTO_ORDER) == TESTED


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("strategies")


def agreement(pairs) -> tuple[float, int]:
    """Share of (truth, tag) pairs that agree, and how many were checked."""
    pairs = list(pairs)
    return sum(t == g for t, g in pairs) / len(pairs), len(pairs)


@pytest.mark.parametrize("strategy", sorted(TESTED))
def test_plain_model_matches_truth_by_construction(strategy, out):
    result = export_model(
        "tests.strategy_models:distinct", out / f"distinct-{strategy}.onnx", strategy=strategy, input_spec=SPEC
    )
    tags = result.sidecar["node_tags"]
    model = onnx.load(str(result.onnx_path))
    unexpected = {n.op_type for n in model.graph.node} - strategy_models.DISTINCT_TRUTH.keys()
    assert not unexpected, f"{strategy} produced ops the truth table does not know: {unexpected}"
    score, n = agreement((strategy_models.DISTINCT_TRUTH[node.op_type], tags[node.name]) for node in model.graph.node)
    print(f"\n[distinct] {strategy}: coverage {result.stats.coverage:.0%}, agreement {score:.1%} of {n} nodes")
    assert result.stats.coverage == 1.0
    assert score == 1.0
    assert result.sidecar["strategy"]["name"] == strategy


def torchscript_truth(node_name: str, module_paths: list[str]) -> str | None:
    """Module path named by a TorchScript node name: the longest module path whose dotted parts occur, in order,
    among the name's parts. None for nodes without a scope."""
    if not node_name.startswith("/model/"):
        return None
    parts = ".".join(node_name.split("/")[2:-1]).split(".")
    best = ""
    for path in module_paths:
        remaining = iter(parts)
        if all(p in remaining for p in path.split(".")) and len(path) > len(best):
            best = path
    return best


def name_scopes_truth(node: onnx.NodeProto, module_paths: set[str]) -> str | None:
    """Deepest module path in the dynamo exporter's own ``name_scopes`` record; None where it recorded none."""
    value = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
    if value is None:
        return None
    found = [s[len("model.") :] for s in ast.literal_eval(value)[:-1] if s.startswith("model.")]
    found = [s for s in found if s in module_paths]
    return found[-1] if found else ("" if "model" in ast.literal_eval(value) else None)


@pytest.fixture(scope="module")
def hierarchies(model_dirs):
    cache = {}

    def get(name):
        if name not in cache:
            model = load(resolve(str(model_dirs[name]))).model
            cache[name] = (build_hierarchy(model), [p for p, _ in model.named_modules() if p])
        return cache[name]

    return get


def measure(name, strategy, model_dirs, hierarchies, out):
    result = export_model(str(model_dirs[name]), out / f"{name}-{strategy}.onnx", strategy=strategy)
    hierarchy, paths = hierarchies(name)
    model = onnx.load(str(result.onnx_path))
    tags = result.sidecar["node_tags"]
    if strategy == "dynamo":
        truths = [(name_scopes_truth(n, set(paths)), n.name) for n in model.graph.node]
    else:
        truths = [(torchscript_truth(n.name, paths), n.name) for n in model.graph.node]
    score, n = agreement((hierarchy.tag_for_path(t), tags[node]) for t, node in truths if t is not None)
    print(
        f"\n[{name}] {strategy}: {result.stats.total_nodes} nodes, coverage {result.stats.coverage:.0%}, "
        f"agreement {score:.2%} of {n} nodes with a recorded scope, {result.attempts[-1].seconds:.2f}s"
    )
    return result, score


@pytest.mark.parametrize("name", HF_MODELS)
@pytest.mark.parametrize("strategy", ["htp", "dynamo"])
def test_exact_strategies_on_transformers_models(strategy, name, model_dirs, hierarchies, out):
    result, score = measure(name, strategy, model_dirs, hierarchies, out)
    assert result.stats.coverage == 1.0
    assert score >= 0.99


@pytest.mark.parametrize("name", HF_MODELS)
def test_usage_on_transformers_models(name, model_dirs, hierarchies, out):
    result, score = measure(name, "usage", model_dirs, hierarchies, out)
    assert result.stats.coverage == 1.0
    assert score >= 0.95  # the target; the figure is printed


@pytest.mark.parametrize("name", ["tiny-resnet", "tiny-bert"])
def test_usage_leaves_the_exporters_graph_and_names_as_htp_has_them(name, model_dirs, out):
    """usage's scopes are tracer scopes, not nodes: the graph is htp's node for node, and once its levels are taken
    out of the names, so are node and value names; the tags agree with htp's."""
    graphs, tags = {}, {}
    for strategy in ("htp", "usage"):
        result = export_model(str(model_dirs[name]), out / f"{name}-{strategy}-graph.onnx", strategy=strategy)
        graphs[strategy] = onnx.load(str(result.onnx_path))
        tags[strategy] = [result.sidecar["node_tags"][n.name] for n in graphs[strategy].graph.node]
    htp, usage = graphs["htp"].graph, graphs["usage"].graph
    assert [(n.name, n.op_type, list(n.input), list(n.output)) for n in usage.node] == [
        (n.name, n.op_type, list(n.input), list(n.output)) for n in htp.node
    ]
    assert [o.name for o in usage.output] == [o.name for o in htp.output]
    assert "~usage" not in str(usage)
    assert tags["usage"] == tags["htp"]
    onnx.checker.check_model(graphs["usage"], full_check=True)


def test_usage_reads_the_innermost_of_its_own_levels():
    from modelexport.strategies.usage import scope_of

    paths = ["encoder", "encoder.layer.0", "encoder.layer.0.attention"]
    assert scope_of("/model/~usage0/encoder/~usage1/layer.0/~usage2_1/attention_1/MatMul", paths) == paths[2]
    assert scope_of("/model/~usage0/encoder/Add", paths) == "encoder"
    assert scope_of("/model/Add", paths) == ""  # the model's own op: the root
    assert scope_of("Identity_7", paths) is None  # named outside every scope: left to tagging


def test_usage_strips_its_levels_from_names_but_keeps_weights_and_unique_names():
    """Values are renamed everywhere they appear (a subgraph reading an outer value too); a weight keeps its name
    (it is in the serialized bytes), and so does a value whose plain name another value already has."""
    from onnx import TensorProto, helper

    from modelexport.strategies.usage import strip_levels

    then = helper.make_graph(
        [helper.make_node("Identity", ["/~usage0/a/Relu_output_0"], ["t"], name="/~usage0/a/Id")],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1])],
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["/~usage0/a/Relu_output_0"], name="/~usage0/a/Relu"),
        helper.make_node(
            "Add", ["/~usage0/a/Relu_output_0", "/~usage1/w"], ["/~usage0/b/Add_output_0"], name="/~usage0/b/Add"
        ),
        helper.make_node("Neg", ["x"], ["/b/Add_output_0"], name="/b/Neg"),
        helper.make_node("If", ["c"], ["y"], name="/~usage0/If", then_branch=then, else_branch=then),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("/~usage0/b/Add_output_0", TensorProto.FLOAT, [1])],
    )
    strip_levels(graph, keep={"/~usage1/w"})
    assert [n.name for n in graph.node] == ["/a/Relu", "/b/Add", "/b/Neg", "/If"]
    assert list(graph.node[0].output) == ["/a/Relu_output_0"]
    assert list(graph.node[1].input) == ["/a/Relu_output_0", "/~usage1/w"]  # the weight keeps its name
    assert list(graph.node[1].output) == ["/~usage0/b/Add_output_0"] == [graph.output[0].name]  # taken
    body = graph.node[3].attribute[0].g.node[0]
    assert body.name == "/a/Id" and list(body.input) == ["/a/Relu_output_0"]


@pytest.mark.parametrize("name", HF_MODELS)
def test_fx_fails_fast_with_reason_on_transformers_models(name, model_dirs, out):
    with pytest.raises(ExportFailedError, match=r"fx: .*torch\.fx cannot trace") as info:
        export_model(str(model_dirs[name]), out / f"{name}-fx.onnx", strategy="fx")
    attempt = info.value.attempts[0]
    assert attempt.strategy == "fx" and not attempt.ok and attempt.seconds < 5
    assert not (out / f"{name}-fx.onnx").exists()


def test_auto_falls_back_when_tracing_cannot_follow_control_flow(out):
    """Branchy chooses a branch with torch.cond: TorchScript tracing (htp) fails, dynamo exports an If node."""
    result = export_model("tests.strategy_models:branchy", out / "branchy.onnx", input_spec=SPEC)
    attempts = result.sidecar["strategy"]["attempts"]
    assert [a["strategy"] for a in attempts] == ["htp", "dynamo"]
    assert attempts[0]["ok"] is False and "trace" in attempts[0]["reason"]
    assert attempts[1]["ok"] is True and result.strategy == "dynamo"
    model = onnx.load(str(result.onnx_path))
    assert "If" in {n.op_type for n in model.graph.node}
    assert result.sidecar["node_tags"]["node_tanh"] == "/Branchy/Act.pre"
    assert json.loads((out / "branchy.hierarchy.json").read_text())["strategy"]["attempts"] == attempts


def test_a_strategy_failing_the_coverage_check_counts_as_failed(out):
    """CondOnly: dynamo exports it, but every top-level node lands on the root (the branches' ops live in If
    subgraphs), which our check rejects; the others cannot trace it. Every attempt is recorded, nothing written."""
    with pytest.raises(ExportFailedError) as info:
        export_model("tests.strategy_models:cond_only", out / "cond.onnx", input_spec=SPEC)
    attempts = {a.strategy: a for a in info.value.attempts}
    assert list(attempts) == list(AUTO_ORDER) and not any(a.ok for a in attempts.values())
    assert "fell back to the root tag" in attempts["dynamo"].reason
    assert "torch.fx cannot trace" in attempts["fx"].reason
    assert not (out / "cond.onnx").exists()


def test_cli_strategy_all_prints_a_table(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(strategy_models.INPUT_SPEC))
    outdir = tmp_path / "all"
    proc = run_cli(
        "export",
        "tests.strategy_models:distinct",
        str(outdir),
        "--strategy",
        "all",
        "--input-spec",
        str(spec),
        env={"COLUMNS": "200"},
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    for strategy in TESTED:
        assert (outdir / f"{strategy}.onnx").is_file()
        assert (outdir / f"{strategy}.hierarchy.json").is_file()
        row = next(line for line in proc.stdout.splitlines() if line.startswith(f"│ {strategy} "))
        assert " ok " in row and "100%" in row and "100.0%" in row, row
    print("\n" + proc.stdout)


def test_cli_strategy_all_reports_failures_and_auto_prints_attempts(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(strategy_models.INPUT_SPEC))
    proc = run_cli(
        "export",
        "tests.strategy_models:branchy",
        str(tmp_path / "b.onnx"),
        "--input-spec",
        str(spec),
        env={"COLUMNS": "200"},
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "strategy htp: failed" in proc.stdout and "strategy dynamo: ok" in proc.stdout
    bad = run_cli(
        "export",
        "tests.strategy_models:branchy",
        str(tmp_path / "c.onnx"),
        "--strategy",
        "nope",
        "--input-spec",
        str(spec),
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and "unknown strategy 'nope'" in bad.stderr


def test_outputs_are_named_after_the_trace_even_when_one_is_an_input_or_repeated():
    import onnx
    from onnx import TensorProto, helper

    from modelexport.strategies.base import name_outputs

    value = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [1])  # noqa: E731
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1], [2.0])
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["7"], name="relu"), helper.make_node("Neg", ["7"], ["9"], name="neg")],
        "g",
        [value("x")],
        [value("7"), value("9"), value("x"), value("9"), value("w")],
        initializer=[weight],
    )
    name_outputs(graph, ["hidden", "logits", "echo", "logits_again", "scale"])
    assert [o.name for o in graph.output] == ["hidden", "logits", "echo", "logits_again", "scale"]
    assert list(graph.node[0].output) == ["hidden"] and list(graph.node[1].input) == ["hidden"]
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model, full_check=True)  # every output is produced, the input keeps its name
    assert [i.name for i in graph.input] == ["x"] and [i.name for i in graph.initializer] == ["w"]
