"""What a model run uploads to MLflow: its output files, the ONNX model (with a signature read from its graph and
the export's example inputs) and, on pass, a registry version with the ``validated`` alias. Used by
tracking/runs.py.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
import tempfile
from pathlib import Path

from modelexport.redaction import scrub

TAG = "modelexport."  # prefix of our run tags
ALIAS = "validated"
TEXT_SUFFIXES = {".json", ".md", ".graphml", ".txt", ".yaml", ".yml", ".csv", ".html", ".xml", ".log"}
SKIP_SUFFIXES = {".onnx", ".data", ".part", ".onnx_data"}  # the ONNX model goes through mlflow.onnx instead


def registered_name(model: str, fleet: str | None = None) -> str:
    """The registry name of a model: ``modelexport.<fleet>.<model>`` (``modelexport.<model>`` outside a fleet)."""
    safe = [re.sub(r"[^\w\-.]", "-", p).strip(".") or "_" for p in ([fleet] if fleet else []) + [model]]
    return ".".join(["modelexport", *safe])


def log_text(client, run_id: str, name: str, text: str, artifact_path: str | None = None) -> None:
    """Log `text` (scrubbed) as the artifact `name`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(scrub(text), encoding="utf-8")
        client.log_artifact(run_id, str(path), artifact_path)


def log_files(client, run_id: str, output_dir: Path, artifact_path: str = "outputs") -> None:
    """Log every file of the model's output dir except ONNX weights; text files scrubbed of secrets."""
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / artifact_path
        for path in sorted(p for p in output_dir.rglob("*") if p.is_file()):
            if path.suffix in SKIP_SUFFIXES or path.name.startswith("."):
                continue
            target = staged / path.relative_to(output_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix in TEXT_SUFFIXES:
                target.write_text(scrub(path.read_text(encoding="utf-8", errors="replace")), encoding="utf-8")
            else:
                shutil.copyfile(path, target)
        if staged.is_dir():
            client.log_artifacts(run_id, str(staged), artifact_path)


def log_onnx(
    onnx_path: Path, run_id: str, experiment: str, example: dict | None, name: str = "model"
) -> tuple[str, str]:
    """Log the ONNX file with ``mlflow.onnx`` (its signature and input `example`) as the run's model `name`;
    returns its URI and id. MLflow checks the example by loading the model and running it once."""
    import mlflow.onnx
    import onnx

    proto = onnx.load(str(onnx_path))  # our own copy: log_model moves weights out of the proto it is given
    # Created explicitly so the model lands in the run's experiment without touching the global active one.
    logged = mlflow.initialize_logged_model(name=name, source_run_id=run_id, experiment_id=experiment)
    info = mlflow.onnx.log_model(
        proto,
        name=name,
        run_id=run_id,
        model_id=logged.model_id,
        onnx_execution_providers=["CPUExecutionProvider"],
        signature=signature(proto),
        input_example=runnable_example(proto, example),
        pip_requirements=[f"onnx=={onnx.__version__}", f"onnxruntime=={_version('onnxruntime')}"],
    )
    return info.model_uri, logged.model_id


def runnable_example(proto, example: dict | None) -> dict | None:
    """`example` where it feeds every input of the graph, else None (the signature alone): MLflow runs the example
    once and, when an input is missing, prints the whole example as an error. An encoder-decoder's decoder with past
    is such a case: its sidecar's spec leaves out the encoder's key/value pasts, which a run of the encoder makes."""
    if example is None:
        return None
    return example if {v.name for v in fed_inputs(proto)} <= set(example) else None


def fed_inputs(proto) -> list:
    """The graph inputs a caller feeds: those that are not also initializers (weights listed as inputs)."""
    initializers = {i.name for i in proto.graph.initializer}
    return [v for v in proto.graph.input if v.name not in initializers]


def signature(proto):
    """The model's signature from its graph: one tensor spec per input and output, dynamic axes as -1."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec
    from onnx.helper import tensor_dtype_to_np_dtype

    def specs(values):
        out = []
        for v in values:
            t = v.type.tensor_type
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
            out.append(TensorSpec(np.dtype(tensor_dtype_to_np_dtype(t.elem_type)), shape, v.name))
        return Schema(out)

    return ModelSignature(inputs=specs(fed_inputs(proto)), outputs=specs(proto.graph.output))


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def register_version(model_uri: str, model: str, fleet: str | None, run_id: str) -> str:
    """Register `model_uri` as a new version of the model's registry name and point the alias at it.

    MLflow prints what it registered to stderr ("Successfully registered model ...", "Created version ..."); those
    lines follow MLflow's log level like its other notices (the CLI sets WARNING unless --debug).
    """
    import mlflow

    name = registered_name(model, fleet)
    notices = logging.getLogger("mlflow").isEnabledFor(logging.INFO)
    with contextlib.nullcontext() if notices else contextlib.redirect_stderr(io.StringIO()):
        version = mlflow.register_model(model_uri, name, tags={TAG + "run_id": run_id, TAG + "fleet": fleet or ""})
    mlflow.MlflowClient().set_registered_model_alias(name, ALIAS, version.version)
    return str(version.version)
