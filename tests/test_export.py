"""Hierarchy-tagged export (htp): tags checked against ground truth computed independently of our tagging code."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from modelexport.export import export_model, read_tags
from modelexport.inputs import inputs_from_spec, parse_input_spec, spec_from_config
from modelexport.loading import load
from modelexport.source import resolve
from modelexport.tagging import HIERARCHY_KEY, TAG_KEY, iter_nodes
from tests.groundtruth import ANCHOR_OPS, anchor_truth, scope_truth
from tests.plain_models import OP_SIGNATURE_TRUTH

PLAIN_SPEC = {"x": {"shape": [4, 8], "dtype": "float32", "dynamic_axes": {"0": "batch"}}}


@pytest.fixture(scope="session")
def extra_model_dirs(tmp_path_factory):
    """Architectures beyond the demo set: a T5 encoder and ALBERT (one layer shared by every call)."""
    import torch
    from transformers import AlbertConfig, AlbertModel, T5Config, T5EncoderModel

    out = tmp_path_factory.mktemp("extra")
    torch.manual_seed(0)
    T5EncoderModel(T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)).save_pretrained(
        out / "t5-encoder"
    )
    AlbertModel(
        AlbertConfig(
            vocab_size=128,
            embedding_size=16,
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    ).save_pretrained(out / "albert")
    return {"t5-encoder": out / "t5-encoder", "albert": out / "albert"}


@pytest.fixture(scope="session")
def tagged(model_dirs, extra_model_dirs, exported, tmp_path_factory):
    """name -> (ExportResult, loaded model, example inputs) for every model under test."""
    out = tmp_path_factory.mktemp("tagged")
    cache = {}

    def get(name):
        if name not in cache:
            if name == "plain":
                spec = parse_input_spec(PLAIN_SPEC)
                result = export_model("tests.plain_models:factory", out / "plain.onnx", input_spec=spec)
                loaded = load(resolve("tests.plain_models:factory"))
                cache[name] = (result, loaded, inputs_from_spec(spec))
            else:
                path = model_dirs.get(name) or extra_model_dirs[name]
                result = exported(name) if name in model_dirs else export_model(str(path), out / f"{name}.onnx")
                loaded = load(resolve(str(path)))
                cache[name] = (result, loaded, inputs_from_spec(spec_from_config(loaded.model, loaded.config)))
        return cache[name]

    return get


MODELS = ["tiny-bert", "tiny-gpt2", "t5-encoder", "tiny-vit", "tiny-resnet", "albert", "plain"]


@pytest.mark.parametrize("name", MODELS)
def test_every_node_tagged_and_matching_ground_truth(tagged, name):
    result, loaded, inputs = tagged(name)
    model = onnx.load(str(result.onnx_path))
    tags, _ = read_tags(result.onnx_path)
    nodes = list(iter_nodes(model.graph))
    assert len(tags) == len(nodes) and all(tags[n.name] for n in nodes), "every node carries a tag"

    truth = scope_truth(loaded.model, model)
    agree = sum(tags[n] == t for n, t in truth.items())
    root = result.sidecar["tree"]["tag"]
    root_fallbacks = sum(1 for n, t in truth.items() if t != root and tags[n] == root)

    expected_anchors = anchor_truth(loaded.model, inputs.tensors, positional=loaded.positional)
    got_anchors = Counter(tags[n.name] for n in model.graph.node if n.op_type in ANCHOR_OPS)
    anchors_agree = sum((expected_anchors & got_anchors).values())
    anchors_total = max(sum(expected_anchors.values()), sum(got_anchors.values()))

    print(
        f"\n[{name}] nodes={len(nodes)} tagged=100% scope-truth agreement={agree}/{len(truth)} "
        f"({agree / len(truth):.2%}) anchor-op agreement={anchors_agree}/{anchors_total} "
        f"root fallbacks={root_fallbacks} root-tagged={result.stats.root_tagged_nodes}"
    )
    assert agree / len(truth) >= 0.99
    assert anchors_agree == anchors_total, (expected_anchors, got_anchors)
    assert root_fallbacks == 0
    assert len(truth) / len(nodes) >= 0.7, "the exporter's record must cover most nodes for the check to mean much"


def test_plain_model_tags_equal_truth_by_construction_on_every_node(tagged):
    """Each module of OpSignatureNet emits op types no other module emits: the truth of every node, constants
    included (a constant belongs to the module of the op it feeds), is known without any exporter record."""
    result, _, _ = tagged("plain")
    model = onnx.load(str(result.onnx_path))
    tags, _ = read_tags(result.onnx_path)
    consumers = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def truth(node):
        if node.op_type in OP_SIGNATURE_TRUTH:
            return OP_SIGNATURE_TRUTH[node.op_type]
        (consumer,) = {id(c): c for out in node.output for c in consumers.get(out, [])}.values()
        return truth(consumer)

    wrong = [(n.name, n.op_type, tags[n.name], truth(n)) for n in model.graph.node if tags[n.name] != truth(n)]
    print(f"\n[plain] {len(model.graph.node)} nodes, {len(wrong)} differ from the truth by construction")
    assert not wrong


def test_shared_layer_has_one_tag_for_all_its_calls(tagged):
    """ALBERT runs one layer instance three times: every call's ops carry that layer's single tag."""
    result, _, _ = tagged("albert")
    model = onnx.load(str(result.onnx_path))
    tags, _ = read_tags(result.onnx_path)
    layer = "/AlbertModel/AlbertTransformer/AlbertLayerGroup.0/AlbertLayer.0"
    assert {t for t in tags.values() if "AlbertLayer." in t} <= {
        t for t in result.sidecar["tags"] if t.startswith(layer)
    }
    attention_matmuls = [
        n for n in model.graph.node if n.op_type == "MatMul" and tags[n.name] == layer + "/AlbertAttention"
    ]
    assert len(attention_matmuls) == 3 * 6  # 3 calls x (q, k, v, scores, context, dense)


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-resnet", "plain"])
def test_checker_ort_and_clean_export_give_identical_outputs(tagged, name, tmp_path):
    result, loaded, inputs = tagged(name)
    spec = parse_input_spec(PLAIN_SPEC) if name == "plain" else None
    ref = "tests.plain_models:factory" if name == "plain" else result.sidecar["model"]["path"]
    clean = export_model(ref, tmp_path / "clean.onnx", clean=True, input_spec=spec)

    clean_model = onnx.load(str(clean.onnx_path))
    assert not any(n.metadata_props for n in iter_nodes(clean_model.graph))
    assert not any(p.key.startswith("modelexport.") for p in clean_model.metadata_props)
    assert json.loads(clean.sidecar_path.read_text())["node_tags"], "the sidecar still holds every tag"

    feeds = {k: v.numpy() for k, v in inputs.tensors.items()}
    outputs = []
    for path in (result.onnx_path, clean.onnx_path):
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
        outputs.append(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds))
    for tagged_out, clean_out in zip(*outputs, strict=True):
        np.testing.assert_array_equal(tagged_out, clean_out)


def test_tags_and_tree_live_in_onnx_metadata_and_sidecar(exported):
    result = exported("tiny-bert")
    model = onnx.load(str(result.onnx_path))
    node = model.graph.node[len(model.graph.node) // 2]
    assert any(p.key == TAG_KEY and p.value.startswith("/BertModel") for p in node.metadata_props)
    tree = json.loads(next(p.value for p in model.metadata_props if p.key == HIERARCHY_KEY))
    assert tree["tag"] == "/BertModel" and tree["children"]

    sidecar = json.loads(result.sidecar_path.read_text())
    layer = sidecar["tags"]["/BertModel/BertEncoder/BertLayer.0/BertAttention/BertSelfAttention"]
    assert layer["module"] == "encoder.layer.0.attention.self"
    assert layer["class"].endswith("BertSelfAttention") and layer["parameters"] > 0 and layer["nodes"] > 0
    assert sidecar["strategy"]["name"] == "htp" and sidecar["strategy"]["attempts"][0]["ok"]
    assert set(sidecar["versions"]) >= {"torch", "onnx", "onnxruntime", "transformers", "modelexport"}
    assert sidecar["inputs"]["input_ids"]["dynamic_axes"] == {"0": "batch", "1": "sequence"}
    stats = sidecar["stats"]
    assert stats["total_nodes"] == len(model.graph.node) == stats["tagged_nodes"]
    assert stats["root_tagged_nodes"] == sum(1 for t in sidecar["node_tags"].values() if t == "/BertModel")
    assert sum(t["nodes"] for t in sidecar["tags"].values()) == stats["total_nodes"]


def test_dynamic_axes_accept_other_batch_and_sequence(exported):
    result = exported("tiny-bert")
    session = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    feeds = {i.name: np.ones((3, 7), dtype=np.int64) for i in session.get_inputs()}
    (hidden, _) = session.run(None, feeds)
    assert hidden.shape[:2] == (3, 7)


def test_torch_modules_flag_tags_builtin_modules(model_dirs, tmp_path):
    result = export_model(str(model_dirs["tiny-bert"]), tmp_path / "m.onnx", torch_modules=True)
    tags = set(result.sidecar["node_tags"].values())
    assert "/BertModel/BertEncoder/BertLayer.0/BertAttention/BertSelfAttention/Linear.query" in tags
    assert "/BertModel/BertEncoder/BertLayer.0/BertAttention/BertSelfOutput/LayerNorm" in tags
