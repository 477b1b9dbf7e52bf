"""Plain torch models for tests (importable as ``tests.plain_models:factory`` by the CLI).

`OpSignatureNet` is built so that every module uses op types no other module uses: the module that produced
each ONNX node is known by construction, independently of any exporter's scope records.
"""

import torch
from torch import nn


class LayerA(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        return torch.relu(self.proj(x))


class LayerB(nn.Module):
    def forward(self, x):
        return torch.sigmoid(x).pow(2.0)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([LayerA(), LayerB()])

    def forward(self, x):
        x = torch.neg(x)
        for layer in self.layers:
            x = layer(x)
        return x


class Head(nn.Module):
    def forward(self, x):
        return torch.tanh(x).sum(dim=-1, keepdim=True)


class OpSignatureNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = Encoder()
        self.head = Head()

    def forward(self, x):
        return self.head(self.encoder(x * 3.0))


# Op type -> the tag of the only module that emits it.
OP_SIGNATURE_TRUTH = {
    "Mul": "/OpSignatureNet",
    "Neg": "/OpSignatureNet/Encoder",
    "Gemm": "/OpSignatureNet/Encoder/LayerA.0",
    "MatMul": "/OpSignatureNet/Encoder/LayerA.0",
    "Relu": "/OpSignatureNet/Encoder/LayerA.0",
    "Sigmoid": "/OpSignatureNet/Encoder/LayerB.1",
    "Pow": "/OpSignatureNet/Encoder/LayerB.1",
    "Tanh": "/OpSignatureNet/Head",
    "ReduceSum": "/OpSignatureNet/Head",
}


class Twins(nn.Module):
    """Two sibling modules of one class outside a container, and one shared instance used twice."""

    def __init__(self):
        super().__init__()
        self.left = LayerA()
        self.right = LayerA()
        self.shared = Head()
        self.again = self.shared

    def forward(self, x):
        return self.again(self.shared(self.left(x) + self.right(x)))


def factory():
    torch.manual_seed(0)
    return OpSignatureNet()


def twins():
    torch.manual_seed(0)
    return Twins()
