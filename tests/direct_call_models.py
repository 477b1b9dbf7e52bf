"""Plain models whose modules run without ``__call__`` (importable as ``tests.direct_call_models:FACTORY``).

Research code calls ``child.forward(x)`` directly, keeps ``self.step = self.child.forward``, wraps a forward in
``functools.partial``, or calls ``super().forward(x)`` / ``Base.forward(self, x)`` from a module's own forward. As
in `strategy_models.Distinct`, every module emits op types no other module emits, so each node's true tag
follows from its op type (`TRUTH[factory]`), independently of any exporter's scope record. ``super().forward``
and ``Base.forward(self, x)`` run the *same* module: their ops are that module's own.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from tests.strategy_models import Act

FEATURES = 8
INPUT_SPEC = {"x": {"shape": [2, FEATURES], "dtype": "float32", "dynamic_axes": {"0": "batch"}}}


class Projection(nn.Module):
    """Owns parameters: a Linear (Gemm, or MatMul + Add) then Sin."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(FEATURES, FEATURES)

    def forward(self, x):
        return torch.sin(self.proj(x))


class DirectCaller(nn.Module):
    """Runs every child by calling its ``forward`` directly, as SqueezeBERT's encoder runs its layers."""

    def __init__(self):
        super().__init__()
        self.projection = Projection()
        self.acts = nn.ModuleList([Act(torch.cos), Act(torch.atan)])

    def forward(self, x):
        x = self.projection.forward(torch.neg(x))
        for act in self.acts:
            x = act.forward(x)
        return torch.exp(x)


class StoredCalls(nn.Module):
    """A bound ``forward`` stored at construction, a stored ``partial`` of one, and one built per call."""

    def __init__(self):
        super().__init__()
        self.projection = Projection()
        self.first = Act(torch.cos)
        self.second = Act(torch.atan)
        self.step = self.projection.forward
        self.stored = functools.partial(self.first.forward)

    def forward(self, x):
        x = self.stored(self.step(torch.neg(x)))
        return torch.exp(functools.partial(self.second.forward)(x))


class Base(nn.Module):
    def forward(self, x):
        return torch.tanh(x)


class Derived(Base):
    """Calls ``super().forward``: Tanh (the base's code) and Abs are both this module's."""

    def forward(self, x):
        return torch.abs(super().forward(x))


class SuperForward(nn.Module):
    def __init__(self, direct: bool = False):
        super().__init__()
        self.inner = Derived()
        self.direct = direct

    def forward(self, x):
        x = torch.sigmoid(x)
        x = self.inner.forward(x) if self.direct else self.inner(x)
        return torch.exp(x)


class ShiftNorm(nn.LayerNorm):
    """A LayerNorm subclass calling the base class's forward explicitly, as ``SqueezeBertLayerNorm`` does."""

    def __init__(self, features):
        nn.LayerNorm.__init__(self, features)

    def forward(self, x):
        x = nn.LayerNorm.forward(self, torch.sigmoid(x))
        return torch.cos(x)


class Scaled(Base):
    """Calls its custom base class's forward explicitly: ``Base.forward(self, x)``."""

    def forward(self, x):
        return torch.abs(Base.forward(self, torch.atan(x)))


class BaseForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = ShiftNorm(FEATURES)
        self.scaled = Scaled()

    def forward(self, x):
        return torch.exp(self.scaled.forward(self.norm(torch.neg(x))))


class ParametersOnly(nn.Module):
    """The parent uses its child's weight itself and never runs the child: every node is the parent's, though
    the child owns the parameters (what the "subtree on one parent" warning is for)."""

    def __init__(self):
        super().__init__()
        self.projection = Projection()

    def forward(self, x):
        return torch.tanh(torch.nn.functional.linear(x, self.projection.proj.weight, self.projection.proj.bias))


class HoldsParametersOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = ParametersOnly()

    def forward(self, x):
        return torch.neg(self.body(x))


_PROJECTION = {"Gemm", "MatMul", "Add", "Transpose", "Sin"}


def _truth(root: str, projection: str | None = None, **ops: str) -> dict[str, str]:
    table = {op: f"{root}/{projection}" for op in _PROJECTION} if projection else {}
    table.update({op: f"{root}{tag}" for op, tag in ops.items()})
    return table


# factory -> op type -> the tag of the only module that emits it.
TRUTH = {
    "direct_call": _truth("/DirectCaller", "Projection", Neg="", Exp="", Cos="/Act.0", Atan="/Act.1"),
    "stored_calls": _truth("/StoredCalls", "Projection", Neg="", Exp="", Cos="/Act.first", Atan="/Act.second"),
    "super_forward": _truth("/SuperForward", Sigmoid="", Exp="", Tanh="/Derived", Abs="/Derived"),
    "super_forward_direct": _truth("/SuperForward", Sigmoid="", Exp="", Tanh="/Derived", Abs="/Derived"),
    "base_forward": _truth(
        "/BaseForward",
        Neg="",
        Exp="",
        LayerNormalization="/ShiftNorm",
        Sigmoid="/ShiftNorm",
        Cos="/ShiftNorm",
        Tanh="/Scaled",
        Atan="/Scaled",
        Abs="/Scaled",
    ),
}


def direct_call() -> nn.Module:
    torch.manual_seed(0)
    return DirectCaller()


def stored_calls() -> nn.Module:
    torch.manual_seed(0)
    return StoredCalls()


def super_forward() -> nn.Module:
    return SuperForward()


def super_forward_direct() -> nn.Module:
    return SuperForward(direct=True)


def base_forward() -> nn.Module:
    torch.manual_seed(0)
    return BaseForward()


def parameters_only() -> nn.Module:
    torch.manual_seed(0)
    return HoldsParametersOnly()
