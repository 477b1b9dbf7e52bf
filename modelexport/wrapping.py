"""Call a model by keyword and flatten its outputs into named tensors.

Exporters pass inputs positionally; transformers models take many optional parameters, so a small wrapper maps
positional tensors to keywords (the TorchScript exporter otherwise fills ``forward`` defaults positionally) and
returns a flat tuple of tensors named after the model's own output fields (``last_hidden_state``, ``logits``).
Inputs named ``past_key_values.*`` become the model's cache object and a cache it returns becomes ``present.*``
outputs (`kv_cache`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from . import kv_cache

WRAPPED_ATTRIBUTE = "model"


def flatten_outputs(outputs) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs of a model's outputs: ModelOutput fields, dict keys, tuple positions; a lone tensor
    is ``output`` (an empty name would leave the ONNX output unnamed and unmatched by validation)."""
    if isinstance(outputs, torch.Tensor):
        return [("output", outputs)]
    flat: list[tuple[str, torch.Tensor]] = []

    def visit(name: str, value) -> None:
        if value is None:
            return
        if kv_cache.is_cache(value):  # a decoder's grown cache: present.{i}.key / .value
            flat.extend(kv_cache.flatten(value))
        elif isinstance(value, torch.Tensor):
            flat.append((name, value))
        elif isinstance(value, Mapping) or hasattr(value, "to_tuple"):
            for key, item in value.items():
                visit(f"{name}.{key}" if name else str(key), item)
        elif isinstance(value, (tuple, list)):
            for i, item in enumerate(value):
                visit(f"{name}.{i}" if name else f"output_{i}", item)

    visit("", outputs)
    return flat


class KeywordWrapper(nn.Module):
    """Takes the inputs positionally, calls the model by keyword, returns a flat tuple of output tensors; the
    names of the last call's outputs are kept in `output_names` (an exporter's trace is that call)."""

    def __init__(self, model: nn.Module, input_names: list[str], positional: bool = False, as_dict: bool = False):
        super().__init__()
        setattr(self, WRAPPED_ATTRIBUTE, model)
        self.input_names = list(input_names)
        self.positional = positional
        self.as_dict = as_dict  # name -> tensor instead of a tuple: torch.export keeps the names in its output spec
        self.output_names: list[str] = []

    def forward(self, *args):
        model = getattr(self, WRAPPED_ATTRIBUTE)
        outputs = model(*args) if self.positional else model(**kv_cache.pack(model, dict(zip(self.input_names, args))))
        return self.flat(outputs)

    def flat(self, outputs) -> tuple | dict:
        """The outputs as a flat tuple of tensors (or dict, see `as_dict`); their names go to `output_names`."""
        named = flatten_outputs(outputs)
        if not named:
            raise ValueError(f"{type(getattr(self, WRAPPED_ATTRIBUTE)).__name__} returns no tensors")
        self.output_names = [name for name, _ in named]
        return dict(named) if self.as_dict else tuple(t for _, t in named)


def call_model(
    model: nn.Module, tensors: dict[str, torch.Tensor], positional: bool = False
) -> list[tuple[str, torch.Tensor]]:
    """Run `model` eagerly without gradients and return its named, flattened outputs; the model is left as it was
    (`unchanged_after`)."""
    with torch.inference_mode(), unchanged_after(model):
        outputs = model(*tensors.values()) if positional else model(**kv_cache.pack(model, dict(tensors)))
    return flatten_outputs(outputs)


PLAIN = (str, int, float, bool, type(None))


@contextlib.contextmanager
def unchanged_after(model: nn.Module) -> Iterator[None]:
    """Undo what a forward does to its own module tree, so that no check depends on the calls before it:
    BigBird, called on a sequence too short for its sparse attention, swaps in full attention for good; Swin
    clamps its window to a small input's grid and keeps it, so after a run at 112x112 it fails at 224x224. Each
    module's submodules, public attributes and plain private ones are put back; weights are not copied."""
    saved = [
        (
            module,
            dict(module._modules),
            {k: v for k, v in vars(module).items() if not k.startswith("_") or isinstance(v, PLAIN)},
        )
        for module in model.modules()
    ]
    try:
        yield
    finally:
        for module, children, attributes in saved:
            if module._modules != children:
                module._modules.clear()
                module._modules.update(children)
            module.__dict__.update(attributes)
