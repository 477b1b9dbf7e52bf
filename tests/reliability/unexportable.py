"""A plain torch model using an op no ONNX exporter supports here (an eigendecomposition): the export must fail
with one line, leaving nothing behind."""

from __future__ import annotations

import torch
from torch import nn


class Eigen(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigvals(self.proj(x)).abs()


def eigen() -> nn.Module:
    torch.manual_seed(0)
    return Eigen()
