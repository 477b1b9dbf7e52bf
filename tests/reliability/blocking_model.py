"""Plain torch models for the reliability tests (`wide` for the memory test). For kill-and-resume tests:
``blocking`` stops in the middle of its export (while the exporter traces it) when MODELEXPORT_TEST_BLOCK names a
marker file, writes its pid there and waits to be killed. A deterministic "middle of an export" without sleeps."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch
from torch import nn


class Small(nn.Module):
    def __init__(self, block: bool = False) -> None:
        super().__init__()
        self.block = block
        torch.manual_seed(0)  # the same weights every time it is built: export and validation load it apart
        self.proj = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        marker = os.environ.get("MODELEXPORT_TEST_BLOCK")
        if self.block and marker and (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
            Path(marker).write_text(str(os.getpid()))
            threading.Event().wait()  # until SIGKILL
        return self.proj(x).relu()


def plain() -> nn.Module:
    return Small()


def blocking() -> nn.Module:
    return Small(block=True)


class Wide(nn.Module):
    """~32 MB of weights: a model, proto or session kept alive per export shows in RSS."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.up = nn.Linear(64, 2048 * 2)
        self.down = nn.Linear(2048 * 2, 2048)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.up(x).relu())


def wide() -> nn.Module:
    return Wide()
