"""Example inputs: built from a model's config and ``forward`` signature, or given by an input spec (JSON).

An input spec maps each input name to its shape, dtype and dynamic axes, e.g.::

    {"input_ids": {"shape": [2, 16], "dtype": "int64", "dynamic_axes": {"0": "batch", "1": "sequence"},
                   "high": 1000}}

Generators are small and per modality: each declares the forward parameters it can fill and builds one tensor per
name from the config. Batch and sequence axes are dynamic by default; an image's height and width where the model
runs at other sizes (``image_sizes``).
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, model_validator

from .errors import BadInputError

DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
    "bool": torch.bool,
}


class TensorSpec(BaseModel):
    """One input: its shape at export time, dtype, which axes stay dynamic, and the value range."""

    model_config = ConfigDict(extra="forbid")

    shape: list[int] = Field(min_length=0)
    dtype: Literal["float32", "float16", "bfloat16", "float64", "int64", "int32", "bool"] = "float32"
    dynamic_axes: dict[int, str] = Field(default_factory=dict)
    low: float = 0
    high: float | None = None

    @model_validator(mode="after")
    def _check(self) -> TensorSpec:
        if any(d < 1 for d in self.shape):
            raise ValueError(f"every dimension must be >= 1, got {self.shape}")
        bad = [a for a in self.dynamic_axes if not 0 <= a < len(self.shape)]
        if bad:
            raise ValueError(f"dynamic axis {bad[0]} is out of range for shape {self.shape}")
        if self.high is not None and self.high <= self.low:
            raise ValueError(f"high ({self.high}) must be greater than low ({self.low})")
        return self


class InputSpec(RootModel[dict[str, TensorSpec]]):
    """Input name -> TensorSpec, in the order the model takes them."""

    @model_validator(mode="after")
    def _not_empty(self) -> InputSpec:
        if not self.root:
            raise ValueError("the spec names no inputs")
        return self


@dataclass
class ExampleInputs:
    """Named example tensors in forward order, and the dynamic axes of each."""

    tensors: dict[str, torch.Tensor]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.tensors)

    def describe(self) -> dict:
        """A JSON-able description: what the sidecar records as the inputs used."""
        return {
            name: {
                "shape": list(t.shape),
                "dtype": str(t.dtype).removeprefix("torch."),
                "dynamic_axes": {str(k): v for k, v in self.dynamic_axes.get(name, {}).items()},
            }
            for name, t in self.tensors.items()
        }

    def spec(self) -> InputSpec:
        """The input spec that rebuilds inputs of these shapes (other random values)."""
        return parse_input_spec(
            {
                name: {
                    "shape": list(t.shape),
                    "dtype": str(t.dtype).removeprefix("torch."),
                    "dynamic_axes": self.dynamic_axes.get(name, {}),
                }
                for name, t in self.tensors.items()
            }
        )


def parse_input_spec(data: object, source: str = "input spec") -> InputSpec:
    """Validate a spec; every mistake is reported at once with its location."""
    try:
        return InputSpec.model_validate(data)
    except ValidationError as exc:
        raise BadInputError(f"{source} is invalid: {describe_validation_errors(exc)}") from None


def describe_validation_errors(exc: ValidationError) -> str:
    """Every problem pydantic found, with its location (``models.2.opset: ...``), on one line."""

    def part(p) -> str:
        text = str(p)
        return text if text.isprintable() and text.strip() == text and text else json.dumps(text)

    return "; ".join(
        f"{'.'.join(part(p) for p in err['loc']) or '(top level)'}: {' '.join(err['msg'].split())}"
        for err in exc.errors()
    )


def read_user_file(path: Path, what: str, kind: str) -> str:
    """The text of a file the user named (an input spec, a fleet file), or a one-line error saying what is wrong."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInputError(f"{what} {path} does not exist: pass the path of a {kind} file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"cannot read {what} {path}: {exc}") from None


def load_input_spec(path: str | Path) -> InputSpec:
    """Read and validate a JSON input spec file."""
    path = Path(path)
    text = read_user_file(path, "input spec", "JSON")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"input spec {path} is not valid JSON ({exc}): fix the file") from None
    except RecursionError:
        raise BadInputError(f"input spec {path} nests too deeply to be an input spec: fix the file") from None
    return parse_input_spec(data, source=f"input spec {path}")


def integer_range(ts: TensorSpec) -> tuple[int, int]:
    """The ``[low, high)`` an integer input's values are drawn from (high defaults to low + 2, at least 2)."""
    return int(ts.low), int(ts.high) if ts.high is not None else max(int(ts.low) + 2, 2)


def inputs_from_spec(spec: InputSpec, seed: int = 0, scale: dict[int, int] | None = None) -> ExampleInputs:
    """Random tensors matching `spec`; `scale` replaces the size of dynamic axes (to test other shapes)."""
    generator = torch.Generator().manual_seed(seed)
    tensors, axes = {}, {}
    for name, ts in spec.root.items():
        shape = list(ts.shape)
        for axis in ts.dynamic_axes:
            if scale and axis in scale:
                shape[axis] = scale[axis]
        dtype = DTYPES[ts.dtype]
        if dtype.is_floating_point:
            t = torch.randn(shape, generator=generator).to(dtype)
            if ts.high is not None:
                t = ts.low + (ts.high - ts.low) * torch.rand(shape, generator=generator).to(dtype)
        elif dtype == torch.bool:
            t = torch.ones(shape, dtype=torch.bool)
        else:
            low, high = integer_range(ts)
            t = torch.randint(low, high, shape, generator=generator, dtype=dtype)
        tensors[name] = t
        axes[name] = dict(ts.dynamic_axes)
    return ExampleInputs(tensors, axes)


# --- what a transformers model's config allows ------------------------------------------------------------------

# Integer inputs that index an embedding table, and the config value that sizes the table.
EMBEDDING_SIZES = {
    "input_ids": "vocab_size",
    "decoder_input_ids": "vocab_size",
    "token_type_ids": "type_vocab_size",
    "position_ids": "max_position_embeddings",
}
SEQUENCE_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
# Config keys of position schemes that are not a table of max_position_embeddings rows (rotary, ALiBi): their
# models run past it, so the sequence length is not checked against it.
UNBOUNDED_POSITIONS = ("rope_theta", "rope_scaling", "rope_parameters", "rotary_dim", "alibi")


def check_spec_fits(spec: InputSpec, config) -> None:
    """Refuse a spec whose integer inputs index past the model's embedding tables (ids of ``high`` above
    ``vocab_size``, token types above ``type_vocab_size``, sequences or positions beyond
    ``max_position_embeddings``): the model would fail on them deep inside the exporter with an IndexError, or
    worse, an exporter that does not check indices would write a file that then fails validation. Plain torch
    modules (no config) are not checked."""
    if config is None:
        return
    from .input_generators import config_size, part

    config = part(config, "text")  # a multimodal model's tables are in its text config
    for name, ts in spec.root.items():
        attribute = EMBEDDING_SIZES.get(name)
        size = config_size(config, attribute) if attribute else None
        if size is None or not (ts.dtype.startswith("int")):
            continue
        low, high = integer_range(ts)
        if low < 0:
            raise BadInputError(
                f"input spec: {name}.low is {ts.low:g}, but {name} indexes a table of the model "
                f"({attribute} {size}): set {name}.low to 0 or more"
            )
        if high > size:
            given = (
                f"{name}.high is {high}"
                if ts.high is not None
                else f"{name}.low is {ts.low:g} (values up to {high - 1})"
            )
            raise BadInputError(
                f"input spec: {given}, but the model's {attribute} is {size} (config.json): set "
                f"{name}.high to at most {size}"
            )
    positions = config_size(config, "max_position_embeddings")
    if (
        positions is None
        or any(getattr(config, key, None) for key in UNBOUNDED_POSITIONS)
        or getattr(config, "position_embedding_type", "absolute")
        not in ("absolute", "relative_key", "relative_key_query")
    ):
        return
    for name in SEQUENCE_INPUTS:
        ts = spec.root.get(name)
        if ts is not None and len(ts.shape) >= 2 and ts.shape[1] > positions:
            raise BadInputError(
                f"input spec: {name}.shape {ts.shape} has a sequence of {ts.shape[1]}, but the "
                f"model's max_position_embeddings is {positions} (config.json): use a sequence of "
                f"at most {positions}"
            )


# --- inputs of a transformers model ----------------------------------------------------------------------------

# Optional forward parameters that a model's users normally pass; others with defaults are left out.
TEXT_ONLY = {"attention_mask", "token_type_ids"}
USUAL_OPTIONAL = {"attention_mask", "token_type_ids", "decoder_input_ids", "decoder_attention_mask"}
# Optional time-series inputs: observed masks and static features whenever the config sizes them; future values
# and time features where the decoder reads future time features (num_time_features).
TIME_OPTIONAL = ("past_observed_mask", "static_")
TIME_FUTURE = ("future_values", "future_time_features")


def spec_from_config(model: torch.nn.Module, config) -> InputSpec:
    """The input spec a transformers model needs, from its config and the parameters of its ``forward``: each
    parameter is offered to the per-modality generators (``input_generators``). Required parameters must be
    built; optional ones are filled when users normally pass them or when they are the main input of a modality
    not yet filled (a CLIP-style model takes both ``input_ids`` and ``pixel_values``)."""
    from .input_generators import GENERATORS, PRIMARY

    params = inspect.signature(model.forward).parameters
    specs: dict[str, TensorSpec] = {}
    for name, param in params.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        required = param.default is inspect.Parameter.empty
        if name.startswith("decoder_") and not getattr(config, "is_encoder_decoder", False):
            continue
        spec = next((s for g in GENERATORS if (s := g(config, name, model)) is not None), None)
        if name in TEXT_ONLY and "input_ids" not in specs:
            spec = None  # a vision model's attention_mask is not a text mask
        filled = {PRIMARY[n] for n in specs if n in PRIMARY}
        wanted = (
            required
            or name in USUAL_OPTIONAL
            or (name in PRIMARY and PRIMARY[name] not in filled)
            or ("time" in filled and name.startswith(TIME_OPTIONAL))
            or ("time" in filled and name in TIME_FUTURE and getattr(config, "num_time_features", 0))
        )
        if spec is not None and wanted:
            specs[name] = spec
        elif required:
            raise BadInputError(
                f"cannot build an example input for forward parameter '{name}' of {type(model).__name__} from "
                f"its config: write it in an --input-spec FILE, e.g. {missing_entry(name, specs)}"
            )
    if not specs:
        raise BadInputError(
            f"no example inputs could be derived for {type(model).__name__} from its config: write them in an "
            '--input-spec FILE, e.g. {"input_ids": {"shape": [2, 16], "dtype": "int64", "high": 100}}'
        )
    from .image_sizes import declare_image_axes

    return declare_image_axes(model, InputSpec(specs), config)


def missing_entry(name: str, specs: dict[str, TensorSpec]) -> str:
    """The --input-spec entry to write for an input that could not be built: the inputs that could, plus `name`
    with a shape to fill in (its batch axis as theirs)."""
    entries = {n: s.model_dump(mode="json", exclude_defaults=True) for n, s in specs.items()}
    batch = next((s.shape[0] for s in specs.values() if s.shape), 2)
    entries[name] = {"shape": [batch, "..."], "dtype": "float32", "dynamic_axes": {"0": "batch"}}
    return json.dumps({name: entries[name]}) if len(entries) == 1 else json.dumps(entries)


def resolve_spec(
    model: torch.nn.Module, config, input_spec: InputSpec | None = None, recorded: dict | None = None
) -> InputSpec:
    """The inputs to run a model on, the one way every stage finds them: the user's spec, else what the model's
    config and ``forward`` signature call for, else the spec an export `recorded` in its sidecar. A user's spec
    must fit the model's tables (``check_spec_fits``)."""
    if input_spec is not None:
        check_spec_fits(input_spec, config)
        return input_spec
    if config is not None:
        return spec_from_config(model, config)
    if recorded:
        return parse_input_spec(recorded, source="the sidecar's inputs")
    raise BadInputError(
        f"{type(model).__name__} is a plain torch module: give its inputs with --input-spec FILE "
        "(input_spec in a fleet file)"
    )
