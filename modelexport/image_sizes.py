"""Which image sizes a vision model takes, so its export is dynamic in height and width where the model is.

A convolutional network (ResNet, ConvNeXt) runs at any size and a Swin pads to its windows; a ViT-style model
interpolates its position embeddings to another grid when its forward is asked to (``interpolate_pos_encoding``,
which loading asks for: :func:`allow_interpolation`), and raises otherwise. So support is decided by the model
itself: it is run at the sizes validation will use (the resized check's half size and the ``image-size`` case's
wider one) and where it runs, ``pixel_values`` gets dynamic ``height`` and ``width`` axes, which every strategy
exports. Where it does not, validation records the model's reason. A model that runs at other sizes but that
no strategy exports dynamically (SigLIP's attention-pooling head freezes its token count) is exported at one
size with a warning in the sidecar, and validated at that size. Nothing here looks at model names.
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING

from .errors import first_line

if TYPE_CHECKING:
    from .inputs import InputSpec

IMAGE = "pixel_values"
AXES = {2: "height", 3: "width"}
INTERPOLATE = "interpolate_pos_encoding"
CNN_STRIDE = 32  # the total stride of most CNNs: the wider size stays a whole number of their output cells


def allow_interpolation(model) -> None:
    """Make a forward that can interpolate its position embeddings always do so (at the config's own size the
    interpolation is the identity), so the exported graph computes the grid from the input's size."""
    forward = model.forward
    parameter = inspect.signature(forward).parameters.get(INTERPOLATE)
    if parameter is not None and parameter.default is not True:
        model.forward = functools.partial(forward, **{INTERPOLATE: True})


def is_image(spec: InputSpec) -> bool:
    ts = spec.root.get(IMAGE)
    return ts is not None and len(ts.shape) == 4


def has_image_axes(spec: InputSpec) -> bool:
    return is_image(spec) and all(spec.root[IMAGE].dynamic_axes.get(a) == n for a, n in AXES.items())


def wider(config, height: int, width: int) -> tuple[int, int]:
    """The ``image-size`` case's size: one step wider (not square, so swapped axes show). A step is a patch
    (a ViT's grid gains a column), a CNN's total stride, or for a windowed model (Swin) the patch times the window
    times the downsampling of its stages: every stage's grid stays a multiple of its window. At other widths a
    Swin pads, and the exporters freeze whether it padded at the export's size (docs/checking.md)."""
    from .input_generators import config_size, part

    vision = part(config, "vision") if config is not None else None
    patch = getattr(vision, "patch_size", None)
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    if not isinstance(patch, int):
        return height, width + CNN_STRIDE
    window = config_size(vision, "window_size")
    merges = len(getattr(vision, "depths", None) or [1]) - 1
    return height, width + (patch * window * 2**merges if window else patch)


def with_image_axes(spec: InputSpec, config) -> InputSpec:
    """`spec` with ``pixel_values``' height and width dynamic."""
    from .inputs import parse_input_spec

    data = {n: ts.model_dump() for n, ts in spec.root.items()}
    data[IMAGE]["dynamic_axes"] = {**data[IMAGE]["dynamic_axes"], **AXES}
    return parse_input_spec(data)


def without_image_axes(spec: InputSpec) -> InputSpec:
    """`spec` with ``pixel_values``' height and width fixed at their size."""
    from .inputs import parse_input_spec

    data = {n: ts.model_dump() for n, ts in spec.root.items()}
    data[IMAGE]["dynamic_axes"] = {a: n for a, n in data[IMAGE]["dynamic_axes"].items() if a not in AXES}
    return parse_input_spec(data)


def fixed_note(spec: InputSpec, error: Exception) -> str:
    """The sidecar's warning for an export that fell back to one image size."""
    height, width = spec.root[IMAGE].shape[2:]
    return (
        f"{IMAGE} exported at {height}x{width} only: the model runs at other sizes, but no strategy exported a "
        f"dynamic height and width ({first_line(error)})"
    )


def as_exported(spec: InputSpec, onnx_shapes: dict[str, list]) -> InputSpec:
    """`spec` with the image's height and width fixed where the ONNX file fixes them: an export that fell back
    to one size (``fixed_note``) is checked at that size, and ``exercise.skipped_cases`` says so."""
    dims = (onnx_shapes.get(IMAGE) or [])[2:4]
    if not has_image_axes(spec) or not any(isinstance(d, int) for d in dims):
        return spec
    return without_image_axes(spec)


def at_size(spec: InputSpec, height: int, width: int) -> InputSpec:
    """`spec` with its image at `height` x `width`."""
    from .inputs import parse_input_spec

    data = {n: ts.model_dump() for n, ts in spec.root.items()}
    data[IMAGE]["shape"] = [*data[IMAGE]["shape"][:2], height, width]
    return parse_input_spec(data)


def trial_sizes(spec: InputSpec, config) -> list[tuple[int, int]]:
    """The sizes validation runs a dynamic image at besides the export's: the resized check's, the wider one."""
    from .validate import resized_spec

    height, width = spec.root[IMAGE].shape[2:]
    half = resized_spec(with_image_axes(spec, config)).root[IMAGE].shape[2:]
    return [tuple(half), wider(config, height, width)]


def size_failure(model, spec: InputSpec, config) -> str | None:
    """Why the PyTorch `model` cannot run `spec` at the other image sizes, or None if it can. It is run at
    batch 1; a model built without weights on the meta device, where some code cannot run at all (``.item()``):
    a meta model that fails at its own size too cannot tell, and counts as running (export falls back if not)."""
    import torch

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    for height, width in trial_sizes(spec, config):
        reason = _run_at(model, spec, height, width, device)
        if reason is not None:
            if device.type == "meta" and _run_at(model, spec, *spec.root[IMAGE].shape[2:], device) is not None:
                return None
            return f"the PyTorch model fails at {height}x{width}: {reason}"
    return None


def _run_at(model, spec: InputSpec, height: int, width: int, device) -> str | None:
    from .inputs import inputs_from_spec
    from .wrapping import call_model

    tensors = inputs_from_spec(at_size(spec, height, width)).tensors
    try:
        call_model(model, {n: t[:1].to(device) for n, t in tensors.items()})
    except Exception as exc:  # any failure of the model's own code at that size means: not this size
        return first_line(exc)
    return None


def declare_image_axes(model, spec: InputSpec, config) -> InputSpec:
    """`spec` with dynamic image height and width if the model runs at the other sizes; else `spec` as it is."""
    if not is_image(spec) or has_image_axes(spec) or size_failure(model, spec, config) is not None:
        return spec
    return with_image_axes(spec, config)
