"""Plain torch models for the strategy tests, importable as ``tests.strategy_models:FACTORY`` from the CLI.

`distinct` gives every module op types no other module uses, so the true tag of each ONNX node follows from its
op type alone (`DISTINCT_TRUTH`), independently of any exporter's scope bookkeeping. `branchy` takes a
data-dependent branch with ``torch.cond``, which TorchScript tracing cannot capture.
"""

from __future__ import annotations

import torch
from torch import nn

FEATURES = 8
INPUT_SPEC = {"x": {"shape": [2, FEATURES], "dtype": "float32", "dynamic_axes": {"0": "batch"}}}


class Act(nn.Module):
    """A parameter-free module applying one elementwise function: one ONNX op type per instance."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(FEATURES, FEATURES)  # built-in: its Gemm belongs to Encoder
        self.acts = nn.ModuleList([Act(torch.sin), Act(torch.cos)])

    def forward(self, x):
        x = torch.tanh(self.proj(x))
        return self.acts[1](self.acts[0](x))


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.act = Act(torch.abs)

    def forward(self, x):
        return torch.exp(self.act(torch.sigmoid(x)))


class Distinct(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = Encoder()
        self.head = Head()

    def forward(self, x):
        y = self.encoder(torch.neg(x))
        return self.head(y), torch.relu(y)


# op type -> tag, by construction of Distinct (Gemm may come out as MatMul + Add, both inside Encoder).
DISTINCT_TRUTH = {
    "Neg": "/Distinct",
    "Relu": "/Distinct",
    "Gemm": "/Distinct/Encoder",
    "MatMul": "/Distinct/Encoder",
    "Add": "/Distinct/Encoder",
    "Transpose": "/Distinct/Encoder",
    "Tanh": "/Distinct/Encoder",
    "Sin": "/Distinct/Encoder/Act.0",
    "Cos": "/Distinct/Encoder/Act.1",
    "Sigmoid": "/Distinct/Head",
    "Exp": "/Distinct/Head",
    "Abs": "/Distinct/Head/Act",
}


def distinct() -> nn.Module:
    torch.manual_seed(0)
    return Distinct()


class Branchy(nn.Module):
    """Chooses a branch from the data: TorchScript tracing cannot follow ``torch.cond``; torch.export can."""

    def __init__(self):
        super().__init__()
        self.pre = Act(torch.tanh)
        self.pos = Act(torch.sin)
        self.neg = Act(torch.cos)

    def forward(self, x):
        h = self.pre(x)
        return torch.cond(h.sum() > 0, self.pos, self.neg, (h,))


def branchy() -> nn.Module:
    return Branchy()


class CondOnly(nn.Module):
    """Every op of its submodules sits inside torch.cond branches: the top-level graph holds no module's node."""

    def __init__(self):
        super().__init__()
        self.pos = Act(torch.sin)
        self.neg = Act(torch.cos)

    def forward(self, x):
        return torch.cond(x.sum() > 0, self.pos, self.neg, (x,))


def cond_only() -> nn.Module:
    return CondOnly()
