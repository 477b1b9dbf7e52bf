"""Save and load ONNX files atomically, with external data only where the 2 GB protobuf limit forces it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import onnx

from . import atomic
from .serialized_weights import SerializedWeights, write_model
from .streamed_weights import StreamedWeights, write_data

PROTOBUF_LIMIT = 1_800_000_000  # a little under 2 GiB: beyond it weights must go to an external file


def external_data_path(path: str | os.PathLike) -> Path:
    """Where the weights of the ONNX file `path` go when they are external: beside it, named after it."""
    path = Path(path)
    return path.with_name(f"{path.name}.data")


def _weight_bytes(model: onnx.ModelProto) -> int:
    return sum(t.ByteSize() for t in model.graph.initializer)  # ByteSize: no copy of the raw bytes


def save_atomic(
    model: onnx.ModelProto, path: str | os.PathLike, weights: SerializedWeights | StreamedWeights | None = None
) -> list[Path]:
    """Write `model` (with `weights`, its initializers as an exporter serialized them or as tensors to stream, if
    given) to `path` (and `path`.data when large or streamed) so that no partial file ever has the final name.

    Files are written into a hidden staging folder beside `path` (named after its writer, see atomic.py), then
    renamed into place: the weights first, the graph last, so a complete ``.onnx`` always has complete weights.
    Returns the files written.
    """
    path = Path(path)
    streamed = isinstance(weights, StreamedWeights)
    spliced = not streamed and weights is not None and weights.chunks
    external = not streamed and not spliced and _weight_bytes(model) > PROTOBUF_LIMIT
    staging = atomic.new_staging_dir(path)
    try:
        staged = staging / path.name
        if streamed:
            with open(external_data_path(staged), "wb") as out:
                write_data(model.graph, weights, out, external_data_path(path).name)
            onnx.save_model(model, staged)
        elif spliced:
            with open(staged, "wb") as out:
                write_model(model, weights, out)
        elif external:
            onnx.save_model(
                model,
                staged,
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=external_data_path(path).name,
                size_threshold=1024,
            )
        else:
            onnx.save_model(model, staged)
        written = []
        data = external_data_path(staged)
        if data.exists():
            shutil.copymode(staged, data)  # onnx creates it 0600; the .onnx beside it has any new file's mode
            os.replace(data, path.parent / data.name)
            written.append(path.parent / data.name)
        os.replace(staged, path)
        written.append(path)
        return written[::-1]
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_graph(path: str | os.PathLike) -> onnx.ModelProto:
    """Load the graph and metadata only (no external weights): enough for tags, reports and comparisons."""
    return onnx.load(str(path), load_external_data=False)
