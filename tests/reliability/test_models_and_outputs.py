"""Hostile or broken models, concurrent writers and a full disk: each refused or survived, nothing half-written."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli import main
from modelexport.errors import BadInputError
from modelexport.inputs import parse_input_spec
from tests.conftest import REPO


def _copy(model_dirs, tmp_path, name="tiny-bert"):
    target = tmp_path / "model"
    shutil.copytree(model_dirs[name], target)
    return target


def _edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_weights_never_run_code(model_dirs, tmp_path, capsys):
    model = tmp_path / "evil"
    model.mkdir()
    shutil.copy(model_dirs["tiny-bert"] / "config.json", model)
    marker = tmp_path / "PWNED"
    torch.save({"embeddings.word_embeddings.weight": _Evil(marker)}, model / "pytorch_model.bin")
    assert main(["export", str(model), str(tmp_path / "o.onnx")]) == 2
    assert not marker.exists(), "the pickle's payload ran"
    assert "weights_only" in capsys.readouterr().err


@pytest.mark.parametrize(
    "change, words",
    [
        ({"intermediate_size": 48}, "do not match its config.json"),
        ({"num_hidden_layers": 3}, "lack 16 tensors"),
    ],
)
def test_weights_that_do_not_match_the_config(model_dirs, tmp_path, capsys, change, words):
    model = _copy(model_dirs, tmp_path)
    _edit_config(model, **change)
    assert main(["export", str(model), str(tmp_path / "o.onnx")]) == 2
    assert words in capsys.readouterr().err
    assert not list(tmp_path.glob("o*"))


def test_disk_full_while_writing_leaves_nothing(model_dirs, tmp_path, monkeypatch, capsys):
    """A full disk cannot be caused safely here: the save raises ENOSPC as the OS would."""
    import onnx

    from modelexport import onnx_io

    def full(*args, **kwargs):
        path = args[1]
        with open(path, "wb") as fh:
            fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    def full_splice(model, weights, out):
        out.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(onnx, "save_model", full)  # weights parsed with the model (past 2 GB, imports)
    monkeypatch.setattr(onnx_io, "write_model", full_splice)  # the exporter's weights spliced back (exports)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["export", str(model_dirs["tiny-bert"]), str(out / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and err.count("\n") == 1
    assert list(out.iterdir()) == []


def test_files_written_atomically_get_the_permissions_of_any_new_file(tmp_path):
    """0o666 less the umask, as open() gives: not mkstemp's 0o600, which left reports readable by their owner only."""
    from modelexport import atomic

    saved = os.umask(0o027)
    try:
        atomic.write_text(tmp_path / "report.md", "# report\n")
        (tmp_path / "plain.md").write_text("# plain\n")
    finally:
        os.umask(saved)
    assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "plain.md").stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.md", "report.md"]  # no temporary file left


def test_external_weights_get_the_mode_of_the_onnx_file_beside_them(model_dirs, tmp_path, monkeypatch):
    """A model past the protobuf limit keeps its weights in OUTPUT.onnx.data, which onnx creates 0o600: it gets the
    .onnx file's mode (the limit is lowered here, so a tiny model takes that path)."""
    from modelexport import onnx_io, streamed_weights
    from modelexport.export import export_model

    monkeypatch.setattr(streamed_weights, "STREAM_ABOVE_BYTES", 1000)
    out = tmp_path / "big.onnx"
    export_model(str(model_dirs["tiny-bert"]), out, strategy="htp")
    data = onnx_io.external_data_path(out)
    assert data.stat().st_size > 10_000  # the weights really are there
    assert stat.S_IMODE(data.stat().st_mode) == stat.S_IMODE(out.stat().st_mode) == 0o666 & ~_umask()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.hierarchy.json", "big.onnx", "big.onnx.data"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_two_processes_exporting_the_same_model_to_the_same_file(model_dirs, tmp_path):
    out = tmp_path / "same.onnx"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "cli", "export", str(model_dirs["tiny-bert"]), str(out)]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    import onnx

    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    sidecar = json.loads((tmp_path / "same.hierarchy.json").read_text())
    assert sidecar["stats"]["total_nodes"] == len(onnx.load(str(out)).graph.node)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.hierarchy.json", "same.onnx"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
spec_like = (
    st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.fixed_dictionaries(
            {},
            optional={
                "shape": st.lists(st.integers(-2, 64), max_size=5) | json_values,
                "dtype": st.sampled_from(["float32", "int64", "bool", "f", "int8"]) | json_values,
                "dynamic_axes": st.dictionaries(st.integers(-2, 6).map(str), st.text(max_size=5), max_size=3)
                | json_values,
                "low": json_values,
                "high": json_values,
                "extra": json_values,
            },
        ),
        max_size=3,
    )
    | json_values
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec_like)
def test_input_spec_parser_accepts_or_explains_anything(data):
    """Any JSON value either parses into a valid spec or raises BadInputError with a one-line message."""
    try:
        spec = parse_input_spec(data)
    except BadInputError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("input spec is invalid")
        return
    for tensor in spec.root.values():
        assert all(d >= 1 for d in tensor.shape)
        assert all(0 <= axis < len(tensor.shape) for axis in tensor.dynamic_axes)
