"""A fleet file: the models a team exports together, with shared defaults (YAML, validated with pydantic).

Every mistake in the file is reported at once, each with its location (``models[2].opset: ...``), so a user
fixes the file in one go. Paths in the file (model directories, input specs) are relative to the file.

Example::

    name: demo
    defaults:
      opset: 18
      validate: {atol: 1.0e-4, rtol: 1.0e-3}   # default: by the export's dtype
      profile: {warmup: 2, iterations: 20}
    models:
      - id: ../models/tiny-bert          # a directory (relative to this file), a hub id or module.path:factory
        name: bert                       # output folder DIR/bert/ (default: the id's last part)
      - id: org/model
        revision: v1.0                   # branch, tag or commit
        opset: 17
        profile: {enabled: false}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import BadInputError
from .export import DEFAULT_OPSET
from .inputs import load_input_spec, parse_input_spec, read_user_file

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class ValidateSettings(BaseModel):
    """Parity check of the ONNX file against PyTorch."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    atol: float | None = Field(None, gt=0)  # None: the default of the export's dtype (dtypes.TOLERANCES)
    rtol: float | None = Field(None, ge=0)


class ProfileSettings(BaseModel):
    """ONNX Runtime latency measurement."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    warmup: int = Field(2, ge=0)
    iterations: int = Field(20, ge=1)
    threads: int | None = Field(None, ge=1)


class Settings(BaseModel):
    """What the defaults section and each model may set."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    revision: str | None = None
    task: str | None = None
    strategy: str = "auto"
    opset: int = Field(DEFAULT_OPSET, ge=7, le=23)
    input_spec: str | dict | None = None  # a JSON file (relative to the fleet file) or the spec inline
    clean: bool = False
    torch_modules: bool = False
    trust_remote_code: bool = False  # run Python code shipped with the model (auto_map): only when asked
    # the memory a worker can give this model: one whose estimated need is larger fails at once (memory.py)
    max_memory_gb: float | None = Field(None, gt=0)
    dtype: Literal["float32", "float16", "bfloat16"] | None = None  # weights and compute (dtypes.py); None: as saved
    stream_weights: bool = False  # write weights one tensor at a time (streamed_weights.py); always past 2 GB
    validation: ValidateSettings = Field(default_factory=ValidateSettings, alias="validate")
    profiling: ProfileSettings = Field(default_factory=ProfileSettings, alias="profile")

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        from .strategies import STRATEGIES

        if value != "auto" and value not in STRATEGIES:
            raise ValueError(f"unknown strategy '{value}': use auto or one of {', '.join(STRATEGIES)}")
        return value

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str | None) -> str | None:
        from .loading import TASKS

        if value is not None and value not in TASKS:
            raise ValueError(f"unknown task '{value}': use one of {', '.join(TASKS)}")
        return value


class ModelEntry(Settings):
    id: str = Field(min_length=1)
    name: str | None = None

    @field_validator("id")
    @classmethod
    def _no_credentials(cls, value: str) -> str:
        from .redaction import has_credentials, scrub

        if has_credentials(value):  # it would be kept in flow parameters, reports and MLflow params
            raise ValueError(f"'{scrub(value)}' holds a credential: give the hub id alone and the token in HF_TOKEN")
        return value

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        if value is not None and not NAME.match(value):
            raise ValueError(
                f"name '{value}' must be letters, digits, '.', '_' or '-' (no '/' or leading '.'): it names a folder"
            )
        return value


class FleetFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("fleet", pattern=NAME.pattern)
    defaults: Settings = Field(default_factory=Settings)
    models: list[ModelEntry] = Field(min_length=1)


@dataclass(frozen=True)
class ModelPlan:
    """One model of a fleet with its defaults applied and its paths resolved: all a pipeline needs."""

    name: str
    id: str
    revision: str | None
    task: str | None
    strategy: str
    opset: int
    input_spec: dict | None
    clean: bool
    torch_modules: bool
    trust_remote_code: bool
    max_memory_gb: float | None
    validation: ValidateSettings  # the file's `validate:` section
    profiling: ProfileSettings  # the file's `profile:` section
    dtype: str | None = None
    stream_weights: bool = False


@dataclass(frozen=True)
class Fleet:
    name: str
    path: Path | None
    models: list[ModelPlan]


def load_fleet(path: str | Path) -> Fleet:
    """Read and validate a fleet file; raise BadInputError naming every mistake with its location."""
    import yaml

    path = Path(path)
    text = read_user_file(path, "fleet file", "YAML")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise BadInputError(f"fleet file {path} is not valid YAML{line}: fix the file") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise BadInputError(f"fleet file {path} nests too deeply to be a fleet file: fix the file") from None
    return parse_fleet(data, base=path.parent, source=f"fleet file {path}", path=path)


def plan_model(model: str, base: Path = Path("."), source: str = "model settings", **settings) -> ModelPlan:
    """The plan of one model from the settings of a fleet file's model entry (by their names in code:
    ``validation``, ``profiling``; None means the default), checked as a fleet file's model is."""
    entry = {"id": model, **{k: v for k, v in settings.items() if v is not None}}
    return parse_fleet({"models": [entry]}, base=base, source=source).models[0]


def parse_fleet(data: object, base: Path = Path("."), source: str = "fleet", path: Path | None = None) -> Fleet:
    """Validate fleet data (already parsed YAML); relative paths are taken from `base`."""
    problems: list[str] = []
    try:
        fleet = FleetFile.model_validate(data)
    except ValidationError as exc:
        problems = [f"{_location(err['loc'])}: {err['msg'].removeprefix('Value error, ')}" for err in exc.errors()]
        raise BadInputError(f"{source} is invalid: {_one_line(problems)}") from None
    plans, seen = [], {}
    defaults = fleet.defaults.model_dump(exclude_unset=True, by_alias=False)
    for index, entry in enumerate(fleet.models):
        where = f"models[{index}]"
        merged = Settings.model_validate(_merge(defaults, entry.model_dump(exclude_unset=True, exclude={"id", "name"})))
        name = entry.name or _default_name(entry.id)
        if name in seen:
            problems.append(f"{where}.name: '{name}' is also the name of models[{seen[name]}]: names must be unique")
        seen.setdefault(name, index)
        try:
            spec = _input_spec(merged.input_spec, base)
        except BadInputError as exc:
            problems.append(f"{where}.input_spec: {exc}")
            spec = None
        plans.append(
            ModelPlan(
                name,
                _model_ref(entry.id, base),
                merged.revision,
                merged.task,
                merged.strategy,
                merged.opset,
                spec,
                merged.clean,
                merged.torch_modules,
                merged.trust_remote_code,
                merged.max_memory_gb,
                merged.validation,
                merged.profiling,
                merged.dtype,
                merged.stream_weights,
            )
        )
    if problems:
        raise BadInputError(f"{source} is invalid: {_one_line(problems)}")
    return Fleet(fleet.name, path, plans)


def check_output_folders(fleet: Fleet, output_dir: str | Path, cache_dir: str | Path | None = None) -> None:
    """Refuse, before anything runs, a fleet whose outputs cannot be written: OUTPUT_DIR (and CACHE_DIR) must be
    directories this process can create and write in, and no model folder may lie outside OUTPUT_DIR (names cannot
    hold ``/`` or ``..``, but ``OUTPUT_DIR/<name>`` may already exist as a symlink to elsewhere, which the export
    would write through)."""
    from . import storage
    from .redaction import has_credentials

    for location, option in ((output_dir, "--output-dir"), (cache_dir, "--cache-dir")):
        if location is not None and has_credentials(str(location)):
            raise BadInputError(
                f"{option}: the URL holds a credential; give the store's credentials in the environment "
                "(e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), never in the URL"
            )
        if location is not None and storage.is_remote(location):
            storage.check_writable(str(location), option)
        elif location is not None:
            check_writable_dir(storage.as_local(location), option)
    if storage.is_remote(output_dir):
        return
    root = storage.as_local(output_dir).resolve()
    for index, plan in enumerate(fleet.models):
        folder = storage.as_local(output_dir) / plan.name
        if not folder.resolve().is_relative_to(root):
            raise BadInputError(
                f"models[{index}].name: {folder} leads outside the output directory "
                f"(to {folder.resolve()}): remove that link or choose another name"
            )


def check_writable_dir(path: str | Path, option: str) -> None:
    """Raise BadInputError unless `path` is (or can be made) a directory this process can write in. Nothing is
    created: the nearest existing folder on the way must be a directory we can create files in."""
    import tempfile

    path = Path(path)
    existing = path
    while not (existing.exists() or existing.is_symlink()):
        existing = existing.parent
    if not existing.is_dir():
        where = "is" if existing == path else f"cannot be created: {existing} is"
        raise BadInputError(f"{option} {path} {where} not a directory: choose another location")
    try:
        with tempfile.TemporaryFile(dir=existing):  # unnamed where the OS allows: nothing left even if killed
            pass
    except OSError as exc:
        raise BadInputError(
            f"{option} {path} cannot be written ({existing}: {exc.strerror or exc}): choose another "
            "location or fix its permissions"
        ) from None


def _one_line(problems: list[str]) -> str:
    """Problems joined on one line: keys and values quoted from the file may hold line breaks."""
    return "; ".join(problems).replace("\r", "\\r").replace("\n", "\\n")


def _location(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _merge(base: dict, override: dict) -> dict:
    """Per-model settings over the defaults; nested sections (validate, profile) merge key by key."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = (
            _merge(merged[key], value)
            if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "input_spec"
            else value
        )
    return merged


def _default_name(ref: str) -> str:
    last = re.split(r"[/\\:]", ref.rstrip("/\\"))[-1]
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", last).lstrip(".-_") or "model"
    return cleaned[:100]


def _model_ref(ref: str, base: Path) -> str:
    """A path-like id (or one that exists beside the file) becomes an absolute path; hub ids stay as they are."""
    candidate = base / Path(ref).expanduser()
    if ref.startswith((".", "/", "~")) or candidate.exists():
        return str(candidate.resolve())
    return ref


def _input_spec(value: str | dict | None, base: Path) -> dict | None:
    if value is None:
        return None
    spec = parse_input_spec(value) if isinstance(value, dict) else load_input_spec(base / value)
    return spec.model_dump(mode="json")
