"""Validation inputs that exercise what the export-time inputs leave idle.

The example inputs keep ``token_type_ids`` at 0, ``attention_mask`` at 1 and the sequence short, so a corrupted
token-type row, a position-embedding row past the export length or broken mask handling would all pass. Each case
here is built from the export's spec and the model's config, and run once (seed 0) beside the export-shape and
resized checks:

- ``token-types``: token types drawn from every type the config has (``type_vocab_size`` > 1);
- ``padded``: attention masks with padding, the first row padded on the left, the second on the right;
- ``longest``: the longest sequence the config's positions allow (``max_position_embeddings``), capped at
  LONGEST_CAP, where the sequence axis is dynamic;
- ``image-size``: an image one step wider than the export's (``image_sizes.wider``), where its height and width
  are dynamic: a position grid, window or stride frozen at the export's size fails here. Where the model cannot
  take another size, :func:`skipped_cases` says why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .image_sizes import IMAGE, at_size, has_image_axes, is_image, size_failure, wider

if TYPE_CHECKING:
    import numpy as np

    from .inputs import InputSpec

LONGEST_CAP = 512  # tokens: long enough to reach every position row of most text models, cheap enough to run

# changes the generated input tensors in place; returns the [batch, sequence] positions whose outputs are compared
Adjust = Callable[[dict], "np.ndarray | None"]


def exercising_cases(
    spec: InputSpec, config, onnx_shapes: dict[str, list]
) -> list[tuple[str, InputSpec, Adjust | None]]:
    """(case name, spec, adjustment of its tensors) of every case that applies to this model; `onnx_shapes` are
    the ONNX file's input shapes (a named dimension is dynamic), so a file exported at fixed sizes is not run at
    others (the resized check already says so)."""
    if config is None:
        return []
    cases = []
    from .input_generators import config_size

    types = config_size(config, "type_vocab_size") or 0
    if "token_type_ids" in spec.root and types > 1:
        cases.append(("token-types", _with(spec, {"token_type_ids": {"low": 0, "high": types}}), None))
    mask = spec.root.get("attention_mask")
    if mask is not None and len(mask.shape) == 2 and mask.shape[0] >= 2 and mask.shape[1] >= 4:
        cases.append(("padded", spec, _pad_masks))
    longest = _longest(spec, config, onnx_shapes)
    if longest is not None:
        cases.append(("longest", longest, None))
    if has_image_axes(spec) and not _fixed_image(onnx_shapes):
        height, width = spec.root[IMAGE].shape[2:]
        cases.append(("image-size", at_size(spec, *wider(config, height, width)), None))
    return cases


def skipped_cases(spec: InputSpec, model, config, onnx_shapes: dict[str, list]) -> dict[str, str]:
    """Cases that apply to this kind of model but were not run, each with why: an image the model cannot take at
    another size (the PyTorch model's own error), or that the spec or the ONNX file fixes."""
    if config is None or not is_image(spec):
        return {}
    reason = None if has_image_axes(spec) else size_failure(model, spec, config)
    fixed = _fixed_image(onnx_shapes)
    if reason is None and fixed:  # the sidecar's warnings say why, for an export that fell back to one size
        reason = f"the ONNX file fixes {IMAGE} at {fixed[0]}x{fixed[1]}"
    if reason is None and not has_image_axes(spec):
        reason = f"the input spec fixes {IMAGE}' height and width"
    return {"image-size": reason} if reason else {}


def _fixed_image(onnx_shapes: dict[str, list]) -> list[int] | None:
    """The image's height and width where the ONNX file fixes them (a named dimension is dynamic)."""
    dims = (onnx_shapes.get(IMAGE) or [])[2:4]
    return dims if dims and any(isinstance(d, int) for d in dims) else None


def _with(spec: InputSpec, changes: dict[str, dict]) -> InputSpec:
    from .inputs import parse_input_spec

    return parse_input_spec({n: ts.model_dump() | changes.get(n, {}) for n, ts in spec.root.items()})


def _pad_masks(tensors: dict) -> np.ndarray:
    """A quarter of the first row masked at its start (left padding), of the second at its end (right padding).
    Only the real tokens' outputs are compared: a padding position's own output is undefined (a decoder's left
    padding attends to nothing), while every real token must attend to the real tokens alone."""
    mask = tensors["attention_mask"]
    pad = mask.shape[1] // 4
    mask[0, :pad] = 0
    mask[1, -pad:] = 0
    return mask.numpy() != 0


def _longest(spec: InputSpec, config, onnx_shapes: dict[str, list]) -> InputSpec | None:
    """The spec at the longest sequence the config allows, where the file's sequence axes are dynamic."""
    from .input_generators import config_size

    limit = min(config_size(config, "max_position_embeddings") or 0, LONGEST_CAP)
    axes = {name for ts in spec.root.values() for name in ts.dynamic_axes.values() if "sequence" in name}
    if not limit or not axes:
        return None
    changes = {}
    for name, ts in spec.root.items():
        dims = onnx_shapes.get(name) or []
        shape = [
            limit
            if ts.dynamic_axes.get(axis) in axes and axis < len(dims) and not isinstance(dims[axis], int)
            else size
            for axis, size in enumerate(ts.shape)
        ]
        if shape != list(ts.shape):
            changes[name] = {"shape": shape}
    return _with(spec, changes) if changes else None
