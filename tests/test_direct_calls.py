"""Modules run without ``__call__`` (``child.forward(x)``, stored methods, partials, ``super().forward``,
``Base.forward(self, x)``) get exactly their known tags from every strategy; the wrapping that makes that so is
undone after the export, scopes a normal call once, and leaves ordinary exports as they were."""

from __future__ import annotations

import contextlib
import sys
from collections import Counter

import onnx
import pytest
import torch

from modelexport.direct_calls import _State, scope_direct_calls
from modelexport.export import export_model
from modelexport.inputs import parse_input_spec
from tests import direct_call_models, strategy_models

STRATEGIES = ["htp", "dynamo", "usage", "fx"]
SPEC = parse_input_spec(direct_call_models.INPUT_SPEC)


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("direct-calls")


@pytest.mark.parametrize("factory", sorted(direct_call_models.TRUTH))
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_gives_the_known_tags(strategy, factory, out):
    truth = direct_call_models.TRUTH[factory]
    result = export_model(
        f"tests.direct_call_models:{factory}", out / f"{factory}-{strategy}.onnx", strategy=strategy, input_spec=SPEC
    )
    graph = onnx.load(str(result.onnx_path)).graph
    unknown = {n.op_type for n in graph.node} - truth.keys()
    assert not unknown, f"{strategy} wrote ops the truth table does not know: {unknown}"
    wrong = [
        (n.op_type, result.sidecar["node_tags"][n.name])
        for n in graph.node
        if result.sidecar["node_tags"][n.name] != truth[n.op_type]
    ]
    assert not wrong, wrong


def _instance_forwards(model):
    return {path: module.__dict__.get("forward") for path, module in model.named_modules()}


def test_wrapping_is_undone_after_a_call_and_after_an_error():
    model = direct_call_models.stored_calls()
    before = _instance_forwards(model)
    step, stored = model.step, model.stored
    with scope_direct_calls(model) as state:
        assert all(callable(model.get_submodule(p).__dict__["forward"]) for p in before if p)
        assert "forward" not in model.__dict__  # the root is left alone
        assert model.step is not step and model.stored is not stored
        model(torch.randn(2, 8))
        assert state.redirected == 3  # step, stored, the partial built in forward
    assert _instance_forwards(model) == before and model.step is step and model.stored is stored
    with pytest.raises(RuntimeError, match="boom"), scope_direct_calls(model):
        raise RuntimeError("boom")
    assert _instance_forwards(model) == before and model.step is step


def test_a_failing_export_restores_the_model(out, monkeypatch):
    model = direct_call_models.direct_call()

    def boom(x):
        raise RuntimeError("boom")

    model.acts[1].fn = boom  # runs inside a directly called forward, while the wrappers are in place
    monkeypatch.setattr(direct_call_models, "direct_call", lambda: model)
    with pytest.raises(Exception, match="boom"):
        export_model("tests.direct_call_models:direct_call", out / "fails.onnx", strategy="htp", input_spec=SPEC)
    assert all(v is None for v in _instance_forwards(model).values())


def test_a_module_called_normally_is_entered_once_and_a_direct_call_once():
    model = direct_call_models.DirectCaller()
    calls = Counter()
    for path, module in model.named_modules():
        module.register_forward_pre_hook(lambda m, a, path=path: calls.update([path]))
    with scope_direct_calls(model):
        model(torch.randn(2, 8))
        model.projection(torch.randn(2, 8))  # through __call__: once, not twice
    assert calls == {"": 1, "projection": 2, "projection.proj": 2, "acts.0": 1, "acts.1": 1}
    derived = direct_call_models.SuperForward(direct=True)
    entered = Counter()
    derived.inner.register_forward_pre_hook(lambda m, a: entered.update(["inner"]))
    with scope_direct_calls(derived):
        derived(torch.randn(2, 8))  # inner.forward -> super().forward: one call of one module
    assert entered == {"inner": 1}


@pytest.mark.parametrize("strategy", ["htp", "usage", "dynamo"])
def test_ordinary_exports_are_unchanged(strategy, out, monkeypatch):
    """With the wrapping switched off, the Distinct model exports to the same graph, names and tags."""
    module = sys.modules[f"modelexport.strategies.{strategy}"]
    graphs = {}
    for wrapped in (True, False):
        if not wrapped:
            monkeypatch.setattr(module, "scope_direct_calls", lambda model: contextlib.nullcontext(_State()))
        result = export_model(
            "tests.strategy_models:distinct",
            out / f"plain-{strategy}-{wrapped}.onnx",
            strategy=strategy,
            input_spec=parse_input_spec(strategy_models.INPUT_SPEC),
        )
        graph = onnx.load(str(result.onnx_path)).graph
        graphs[wrapped] = (
            [(n.name, n.op_type, list(n.input), list(n.output)) for n in graph.node],
            result.sidecar["node_tags"],
        )
    assert graphs[True] == graphs[False]


@pytest.fixture(scope="module")
def squeezebert(tmp_path_factory):
    """A tiny SqueezeBERT: its encoder runs each layer as ``layer.forward(...)``; its LayerNorm subclass calls
    ``nn.LayerNorm.forward(self, x)``."""
    import transformers

    path = tmp_path_factory.mktemp("squeezebert") / "tiny-squeezebert"
    torch.manual_seed(0)
    config = transformers.SqueezeBertConfig(
        vocab_size=128,
        hidden_size=32,
        embedding_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    transformers.SqueezeBertModel(config).save_pretrained(path)
    return path


@pytest.mark.parametrize("strategy", ["htp", "usage", "dynamo"])
def test_squeezebert_layers_get_their_own_tags(strategy, squeezebert, out):
    """Each MatMul/Gemm/Conv is tagged with the module whose forward ran it, read independently from the Python
    stack of an eager run (`groundtruth.frame_anchor_truth`); none is left on the encoder, nothing warns."""
    from modelexport.loading import load
    from modelexport.source import resolve
    from tests.groundtruth import ANCHOR_OPS, frame_anchor_truth

    result = export_model(str(squeezebert), out / f"squeezebert-{strategy}.onnx", strategy=strategy)
    graph = onnx.load(str(result.onnx_path)).graph
    tags = result.sidecar["node_tags"]
    found = Counter(tags[n.name] for n in graph.node if n.op_type in ANCHOR_OPS)
    model = load(resolve(str(squeezebert))).model
    tensors = {name: torch.randint(1, 100, (2, 16)) for name in ("input_ids",)}
    truth = frame_anchor_truth(model, tensors)
    assert found == truth
    encoder = "/SqueezeBertModel/SqueezeBertEncoder"
    assert found[encoder] == 0
    for layer in (0, 1):
        assert found[f"{encoder}/SqueezeBertModule.{layer}/SqueezeBertSelfAttention"] == 3  # the q, k, v convolutions
    assert result.sidecar["warnings"] == []


@pytest.fixture(scope="module")
def flaubert(tmp_path_factory):
    """A tiny Flaubert: its FFNs (called through ``__call__``) run their layers from a bound method handed to
    ``apply_chunking_to_forward``; with the direct-call wrapping, torch.export names such modules by their path
    from the module above them, not by their full path."""
    import transformers

    path = tmp_path_factory.mktemp("flaubert") / "tiny-flaubert"
    torch.manual_seed(0)
    transformers.FlaubertModel(
        transformers.FlaubertConfig(emb_dim=32, n_layers=2, n_heads=2, vocab_size=99)
    ).save_pretrained(path)
    return path


@pytest.mark.parametrize("strategy", ["htp", "dynamo"])
def test_flaubert_ffns_keep_their_tags(strategy, flaubert, out):
    from modelexport.loading import load
    from modelexport.source import resolve
    from tests.groundtruth import ANCHOR_OPS, frame_anchor_truth

    result = export_model(str(flaubert), out / f"flaubert-{strategy}.onnx", strategy=strategy)
    graph = onnx.load(str(result.onnx_path)).graph
    found = Counter(result.sidecar["node_tags"][n.name] for n in graph.node if n.op_type in ANCHOR_OPS)
    truth = frame_anchor_truth(load(resolve(str(flaubert))).model, {"input_ids": torch.randint(1, 90, (2, 16))})
    assert found == truth
    assert all(found[f"/FlaubertModel/TransformerFFN.{i}"] == 2 for i in (0, 1))  # lin1 and lin2


def test_dynamo_name_scopes_resolve_full_and_relative_paths():
    from modelexport.strategies.dynamo import scope_from_name_scopes

    full = "['', 'model', 'model.ffns.0', 'model.ffns.0.lin1', 'linear_4']"
    relative = "['', 'model', 'ffns.0', 'lin1', 'linear_4']"
    assert scope_from_name_scopes(full) == scope_from_name_scopes(relative) == "ffns.0.lin1"
    assert scope_from_name_scopes("['', 'model', 'add']") == ""
    assert scope_from_name_scopes("['', 'sym_size_int']") is None
