"""Load a resolved model safely: safetensors first, ``weights_only`` pickles, no remote code unless asked."""

from __future__ import annotations

import importlib
import json
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError
from torch import nn

from .dtypes import cast_model
from .errors import BadInputError, first_line
from .image_sizes import allow_interpolation
from .source import ModelSource
from .task_heads import AUTO, HEADS, task_from_architectures, wrap_for_task

# --task values and the transformers auto class each loads (task_heads.HEADS); without a task, the class the model
# was saved as; "auto": the head its config's architectures names. The with-past tasks export with a cache.
TASKS = {task: auto_class for task, (auto_class, _mapping) in HEADS.items()}
TASKS |= {
    "text-generation-with-past": "AutoModelForCausalLM",  # one file with a key/value cache: modelexport/with_past.py
    "text2text-generation-with-past": "AutoModelForSeq2SeqLM",  # encoder + decoder files: modelexport/seq2seq.py
    "automatic-speech-recognition-with-past": "AutoModelForSpeechSeq2Seq",  # Whisper, the same way
}


@dataclass
class LoadedModel:
    """A model in eval mode, its config (None for plain torch modules) and how to call it."""

    model: nn.Module
    config: object | None
    positional: bool  # plain torch modules take their inputs positionally, transformers ones by keyword


def read_config(path: Path) -> dict:
    """Parse config.json, with a clear error for a broken one."""
    file = path / "config.json"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{file} is not valid JSON ({exc}): fix it or re-save the model") from None
    except RecursionError:
        raise BadInputError(f"{file} nests too deeply to be a model config: fix it or re-save the model") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"cannot read {file}: {exc}") from None
    if not isinstance(data, dict):
        raise BadInputError(
            f"{file} holds a JSON {_json_kind(data)}, not an object of settings: fix it or re-save the model"
        )
    return data


def _json_kind(value) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def check_weight_files(path: Path) -> None:
    """Refuse a safetensors file whose header is cut short or corrupt, naming it (safetensors' own error names
    no file: ``SafetensorError: Error while deserializing header: invalid header length``)."""
    for file in sorted(path.glob("*.safetensors")):
        problem = _safetensors_problem(file)
        if problem:
            raise BadInputError(
                f"{file} is not a valid safetensors file ({problem}): download it again or re-save the model"
            )


def _safetensors_problem(file: Path) -> str | None:
    """Why `file` cannot be a complete safetensors file (8-byte header length, JSON header, data), or None."""
    try:
        size = file.stat().st_size
        with open(file, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if size < 8 or length > size - 8:
                return f"cut short or not safetensors: a {length}-byte header in a {size}-byte file"
            header = json.loads(f.read(length))
    except OSError as exc:
        return f"cannot read it: {exc.strerror or exc}"
    except (ValueError, UnicodeDecodeError, RecursionError):
        return "its header is not valid JSON"
    try:
        end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
    except (AttributeError, TypeError, KeyError, IndexError, ValueError):
        return "its header does not describe tensors"
    if 8 + length + end > size:
        return f"it is cut short: {size} of {8 + length + end} bytes"
    return None


def load(
    source: ModelSource,
    task: str | None = None,
    trust_remote_code: bool = False,
    weights: bool = True,
    dtype: str | None = None,
) -> LoadedModel:
    """Instantiate the model `source` points at, in eval mode. Without `weights` a transformers model is built on
    the meta device (its config, class and signature, no tensors read): enough to derive its inputs. `dtype`
    (``dtypes.DTYPES``; None: as saved) is the type its floating-point weights are read into."""
    if source.kind == "factory":
        loaded = _load_factory(source.ref)
        if dtype is not None:
            cast_model(loaded.model, dtype)
        return loaded
    return _load_transformers(Path(source.path), task, trust_remote_code, weights, dtype)


def _load_factory(ref: str) -> LoadedModel:
    module_name, attr = ref.split(":")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: modules in the working directory are found
    try:
        module = importlib.import_module(module_name)
        factory = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise BadInputError(f"cannot load {ref}: {exc}") from None
    model = factory() if callable(factory) and not isinstance(factory, nn.Module) else factory
    if not isinstance(model, nn.Module):
        raise BadInputError(f"{ref} returned {type(model).__name__}, not a torch.nn.Module")
    return LoadedModel(model.eval(), None, positional=True)


def _load_transformers(
    path: Path, task: str | None, trust_remote_code: bool, weights: bool = True, dtype: str | None = None
) -> LoadedModel:
    raw = read_config(path)
    if raw.get("auto_map") and not trust_remote_code:
        raise BadInputError(
            f"the model in {path} ships its own Python code (auto_map in config.json); review it, then pass "
            "--trust-remote-code to run it"
        )
    if task is not None and task != AUTO and task not in TASKS:
        raise BadInputError(f"unknown task '{task}': use auto or one of {', '.join(TASKS)}")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise BadInputError(f"{path} holds no weights (*.safetensors or *.bin): save the model with save_pretrained")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    config = _config(path, trust_remote_code)
    check_weight_files(path)
    if hasattr(config, "use_cache"):
        config.use_cache = False  # decoders' cache outputs (DynamicCache) do not export
    if task == AUTO:
        task = task_from_architectures(config)  # None: the class it was saved as
    model_class = _model_class(transformers, config, task)
    if not weights:
        model = _without_weights(model_class, config, trust_remote_code)
        allow_interpolation(model)
        return LoadedModel(wrap_for_task(model, task), config, positional=False)
    kwargs = dict(config=config, trust_remote_code=trust_remote_code)
    if any(path.glob("*.safetensors")):
        kwargs["use_safetensors"] = True
    try:
        model, info = model_class.from_pretrained(path, output_loading_info=True, **kwargs)
    except pickle.UnpicklingError:
        raise BadInputError(
            f"the weights in {path} are a pickle that does not load safely (weights_only=True refused it): "
            "use safetensors weights from a trusted source"
        ) from None
    except (OSError, ValueError, RuntimeError, KeyError, EOFError, SafetensorError) as exc:
        if "mismatch" in str(exc):
            raise BadInputError(
                f"the weights in {path} do not match its config.json (tensor shapes differ): re-save the model or "
                "fix the config"
            ) from None
        raise BadInputError(
            f"cannot load the model in {path}: {first_line(exc)}: download it again or re-save it"
        ) from None
    missing = info.get("missing_keys") or []
    if missing:
        raise BadInputError(
            f"the weights in {path} lack {len(missing)} tensors its config.json needs (e.g. {sorted(missing)[0]}): "
            "re-save the model or fix the config"
        )
    allow_interpolation(model)
    if dtype is not None:  # loaded as saved (memory-mapped), then cast a tensor at a time: see cast_model
        cast_model(model, dtype)
    return LoadedModel(wrap_for_task(model.eval(), task), config, positional=False)


def _without_weights(model_class, config, trust_remote_code: bool) -> nn.Module:
    """The model's modules on the meta device: no weight is read or allocated."""
    import torch

    with torch.device("meta"):
        if hasattr(model_class, "from_config"):  # an auto class
            return model_class.from_config(config, trust_remote_code=trust_remote_code).eval()
        return model_class._from_config(config).eval()


def load_config(source: ModelSource, trust_remote_code: bool = False):
    """The transformers config of `source` without its weights (None for a plain torch module's factory)."""
    if source.kind == "factory":
        return None
    path = Path(source.path)
    raw = read_config(path)
    if raw.get("auto_map") and not trust_remote_code:
        return None  # its config class is remote code too: load() refuses the model with the reason
    return _config(path, trust_remote_code)


def _config(path: Path, trust_remote_code: bool):
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        return transformers.AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadInputError(
            f"{path / 'config.json'} is not a usable transformers config: {first_line(exc)}: fix "
            "it or re-save the model"
        ) from None


def _model_class(transformers, config, task: str | None):
    """The class to load: the task's auto class if given, else the class the model was saved as, else AutoModel."""
    if task is not None:
        return getattr(transformers, TASKS[task])
    for name in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    if getattr(config, "auto_map", None):
        return transformers.AutoModel  # remote code (allowed by the caller): let the auto class find it
    return transformers.AutoModel
