"""Tag rules of the module tree: containers, built-ins, collisions, shared instances."""

from torch import nn

from modelexport.hierarchy import build_hierarchy, common_ancestor
from tests.plain_models import OpSignatureNet, Twins


def test_containers_are_not_segments_and_children_carry_their_key():
    h = build_hierarchy(OpSignatureNet())
    assert set(h.modules) == {
        "/OpSignatureNet",
        "/OpSignatureNet/Encoder",
        "/OpSignatureNet/Encoder/LayerA.0",
        "/OpSignatureNet/Encoder/LayerB.1",
        "/OpSignatureNet/Head",
    }
    # the container and the built-in Linear belong to the nearest tagged module
    assert h.tag_for_path("encoder.layers") == "/OpSignatureNet/Encoder"
    assert h.tag_for_path("encoder.layers.0.proj") == "/OpSignatureNet/Encoder/LayerA.0"
    assert h.modules["/OpSignatureNet/Encoder/LayerA.0"].module == "encoder.layers.0"
    assert h.modules["/OpSignatureNet/Encoder/LayerA.0"].parameters == 8 * 8 + 8


def test_torch_modules_become_segments():
    h = build_hierarchy(OpSignatureNet(), torch_modules=True)
    assert h.tag_for_path("encoder.layers.0.proj") == "/OpSignatureNet/Encoder/LayerA.0/Linear"


def test_colliding_siblings_are_disambiguated_by_attribute_path_and_shared_instances_keep_one_tag():
    h = build_hierarchy(Twins())
    assert h.tag_for_path("left") == "/Twins/LayerA.left"
    assert h.tag_for_path("right") == "/Twins/LayerA.right"
    assert h.tag_for_path("shared") == h.tag_for_path("again") == "/Twins/Head"
    assert len(h.modules) == len(set(h.modules))


def test_same_class_in_two_containers_and_nested_containers():
    class Block(nn.Module):
        def forward(self, x):
            return x

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.ModuleList([Block(), Block()])
            self.up = nn.ModuleList([Block()])
            self.grid = nn.ModuleList([nn.ModuleList([Block(), Block()])])
            self.named = nn.ModuleDict({"attn": Block()})

    h = build_hierarchy(Net())
    assert h.tag_for_path("down.0") == "/Net/Block.down.0"
    assert h.tag_for_path("up.0") == "/Net/Block.up.0"
    assert h.tag_for_path("down.1") == "/Net/Block.1"
    assert h.tag_for_path("grid.0.1") == "/Net/Block.0.1"
    assert h.tag_for_path("named.attn") == "/Net/Block.attn"
    assert len({h.tag_for_path(p) for p, _ in Net().named_modules() if p and "." in p}) >= 6


def test_common_ancestor():
    assert common_ancestor(["/A/B/C", "/A/B/D"]) == "/A/B"
    assert common_ancestor(["/A/B", "/A/B"]) == "/A/B"
    assert common_ancestor(["/A/B/C", "/A"]) == "/A"
    assert common_ancestor(["/A/Bx", "/A/B"]) == "/A"
