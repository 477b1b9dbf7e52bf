"""What a strategy is: one way of capturing a model as ONNX together with the module scope of every node."""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import onnx
from torch import nn

from .. import streamed_weights
from ..errors import typed_line
from ..hierarchy import Hierarchy
from ..inputs import ExampleInputs
from ..lowerings import torchscript_lowerings
from ..serialized_weights import SerializedWeights, split_weights
from ..streamed_weights import StreamedWeights, attach_initializers, keep_initializers
from ..tagging import iter_nodes
from ..wrapping import KeywordWrapper


@dataclass
class Capture:
    """A strategy's result: the ONNX model, and for each top-level node the attribute path of the module whose
    ``forward`` ran it ("" for the root), or None where the strategy cannot tell."""

    onnx_model: onnx.ModelProto
    scopes: list[str | None]
    exporter: str  # e.g. "torch.onnx (TorchScript)"
    # initializers kept out of onnx_model: the exporter's bytes, or the model's own tensors (streamed_weights)
    weights: SerializedWeights | StreamedWeights = field(default_factory=SerializedWeights)
    # attribute paths of the submodules whose forward ran during the capture (`direct_calls`); None: not known
    ran: frozenset[str] | None = None


class Strategy:
    """Subclasses set `name`/`description` and implement `capture`; they raise on failure with a reason."""

    name: ClassVar[str]
    description: ClassVar[str]

    def capture(
        self,
        model: nn.Module,
        inputs: ExampleInputs,
        opset: int,
        positional: bool,
        hierarchy: Hierarchy | None = None,
        stream_weights: bool = False,
    ) -> Capture:
        """Graph outputs are named after the model's own output fields (``KeywordWrapper.output_names``).
        `hierarchy` is the module tree the tags will come from (``usage`` marks only its modules; None: all).
        `stream_weights` asks for the weights as the model's tensors (``streamed_weights``), never serialized in
        memory; a strategy that cannot raises."""
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


def torchscript_export(
    module: KeywordWrapper, inputs: ExampleInputs, opset: int, stream_weights: bool = False, **options
) -> tuple[onnx.ModelProto, SerializedWeights | StreamedWeights]:
    """Run the TorchScript exporter (``dynamo=False``) on `inputs` (positional, named, with their dynamic axes);
    return its ModelProto without initializers, and those kept apart. The tracing strategies share this call and
    differ only in the module they trace. Outputs get the names the module saw in the trace (no eager run
    beforehand to learn them).

    The weights are kept apart in one of two ways. As the exporter serialized them (no temporary file, no parse
    and re-serialization), which saves a third of the export of a 440 MB model (see benchmarks/) but holds them
    about three more times in memory. Or, with `stream_weights` or weights past ``STREAM_ABOVE_BYTES`` (protobuf's
    2 GB limit), never serialized: the model's own tensors, written one at a time when the file is saved.
    """
    import torch

    args = tuple(inputs.tensors.values())
    kwargs = dict(
        input_names=inputs.names,
        dynamic_axes={**inputs.dynamic_axes} or None,
        opset_version=opset,
        do_constant_folding=True,
        **options,
    )
    size = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    captured = _KeepWrites()
    with quiet_exporter(), torch.no_grad(), torchscript_lowerings(opset):
        if stream_weights or size > streamed_weights.STREAM_ABOVE_BYTES:
            with keep_initializers() as weights:
                torch.onnx.export(module, args, captured, dynamo=False, export_params=False, **kwargs)
            proto = onnx.ModelProto.FromString(captured.data())
            attach_initializers(proto.graph, weights)
        else:
            torch.onnx.export(module, args, captured, dynamo=False, **kwargs)
            proto, weights = split_weights(captured.data())
    name_outputs(proto.graph, module.output_names)
    return proto, weights


def name_outputs(graph: onnx.GraphProto, names: list[str]) -> None:
    """Rename the graph's outputs to `names`. A node's output is renamed where it is produced and consumed; an
    output no node produces here (a graph input, a weight) or that repeats another gets an Identity instead."""
    if len(names) != len(graph.output):
        raise RuntimeError(f"the exporter wrote {len(graph.output)} outputs for the model's {len(names)}")
    produced = {value for node in graph.node for value in node.output}
    staying = {output.name for output, name in zip(graph.output, names) if output.name == name}
    renames: dict[str, str] = {}
    for output, name in zip(graph.output, names):
        old = output.name
        if old == name:
            continue
        if old in produced and old not in staying and old not in renames:
            renames[old] = name
        else:
            graph.node.append(
                onnx.helper.make_node("Identity", [renames.get(old, old)], [name], name=f"{name}_Identity")
            )
        output.name = name
    for node in iter_nodes(graph):
        for values in (node.input, node.output):
            for i, value in enumerate(values):
                if value in renames:
                    values[i] = renames[value]
    for info in graph.value_info:
        if info.name in renames:
            info.name = renames[info.name]


class _KeepWrites:
    """A write-only file that keeps the objects written to it: the exporter's one ``bytes``, never copied."""

    def __init__(self):
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(data)
        return len(data)

    def flush(self) -> None:
        pass

    def data(self) -> bytes:
        return self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)


# torch.export's pointer to the model's code in its error text
RAISED_AT = re.compile(
    r'The following call raised this error:\n\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<function>\S+)\n'
    r"(?P<code>[^\n]*)"
)


def root_reason(exc: BaseException) -> str:
    """``Type: first line`` of the innermost cause: torch wraps the real reason in pages of advice. Where
    torch.export names the model's line that raised it (a data-dependent guard, a size it cannot follow), that line
    is added: it is the construct to change."""
    where = ""
    while True:
        found = RAISED_AT.search(str(exc))
        if found and not where:
            code = found["code"].strip()
            where = f" (at {Path(found['file']).name}:{found['line']} in {found['function']}: {code})"
        if exc.__cause__ is None:
            return typed_line(exc) + where
        exc = exc.__cause__
