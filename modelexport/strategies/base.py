"""What a strategy is: one way of capturing a model as ONNX together with the module scope of every node."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from dataclasses import dataclass
from typing import ClassVar

import onnx
from torch import nn

from ..inputs import ExampleInputs
from ..onnx_io import PROTOBUF_LIMIT


@dataclass
class Capture:
    """A strategy's result: the ONNX model, and for each top-level node the attribute path of the module whose
    ``forward`` ran it ("" for the root), or None where the strategy cannot tell."""

    onnx_model: onnx.ModelProto
    scopes: list[str | None]
    exporter: str  # e.g. "torch.onnx (TorchScript)"


class Strategy:
    """Subclasses set `name`/`description` and implement `capture`; they raise on failure with a reason."""

    name: ClassVar[str]
    description: ClassVar[str]

    def capture(
        self, model: nn.Module, inputs: ExampleInputs, output_names: list[str], opset: int, positional: bool
    ) -> Capture:
        raise NotImplementedError


STRATEGIES: dict[str, Strategy] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a strategy selectable by its name."""
    STRATEGIES[cls.name] = cls()
    return cls


@contextlib.contextmanager
def quiet_exporter():
    """Silence torch.onnx's deprecation, tracer and registration chatter: our report says what matters."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "torch.fx")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings(), _no_torchscript_ir_dump():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


@contextlib.contextmanager
def _no_torchscript_ir_dump():
    """torch's TorchScript exporter switches its C++ log on for every export (its ``setup_onnx_logging`` tests a
    function, not its result, for truth), so an op it cannot export dumps the whole Torch IR graph on stderr.
    Our one-line error names the op; keep the log off."""
    try:
        from torch.onnx._internal.torchscript_exporter import utils
    except ImportError:  # another torch layout: nothing to silence
        yield
        return
    original = utils.setup_onnx_logging
    utils.setup_onnx_logging = lambda verbose: contextlib.nullcontext()
    try:
        yield
    finally:
        utils.setup_onnx_logging = original


def torchscript_export(module: nn.Module, inputs: ExampleInputs, output_names: list[str], opset: int,
                       **options) -> onnx.ModelProto:
    """Run the TorchScript exporter (``dynamo=False``) on `inputs` (positional, named, with their dynamic axes)
    and return its ModelProto; the tracing strategies share this call and differ only in the module they trace.

    The exporter writes into memory and we parse that: no temporary file written and read back, which cost as
    much as a third of the export of a 440 MB model (see benchmarks/). Models past protobuf's 2 GB limit need a
    path for their external weights, so they go through a temporary folder.
    """
    import torch

    args = tuple(inputs.tensors.values())
    kwargs = dict(input_names=inputs.names, output_names=output_names, dynamic_axes={**inputs.dynamic_axes} or None,
                  opset_version=opset, do_constant_folding=True, **options)
    size = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    with quiet_exporter(), torch.no_grad():
        if size < PROTOBUF_LIMIT:
            buffer = io.BytesIO()
            torch.onnx.export(module, args, buffer, dynamo=False, **kwargs)
            return onnx.ModelProto.FromString(buffer.getbuffer())
        with tempfile.TemporaryDirectory(prefix="modelexport-export-") as tmp:
            path = f"{tmp}/model.onnx"
            torch.onnx.export(module, args, path, dynamo=False, **kwargs)
            return onnx.load(path)


def root_reason(exc: BaseException) -> str:
    """``Type: first line`` of the innermost cause: torch wraps the real reason in pages of advice."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0].strip() if lines else ''}"
