"""The CLI as a user meets it: exit codes, one-line errors, nothing half-written."""

from __future__ import annotations

import json

import pytest

from cli import main
from tests.conftest import run_cli


def _files(path):
    return sorted(p.name for p in path.iterdir())


def test_export_and_inspect_from_the_cli(model_dirs, tmp_path, capsys):
    out = tmp_path / "gpt2.onnx"
    assert main(["export", str(model_dirs["tiny-gpt2"]), str(out), "--strategy", "htp"]) == 0
    printed = capsys.readouterr().out
    assert "100% tagged" in printed and "GPT2Block" in printed
    assert _files(tmp_path) == ["gpt2.hierarchy.json", "gpt2.onnx"]

    assert main(["inspect", str(out)]) == 0
    tree = capsys.readouterr().out
    assert "GPT2Model" in tree and "GPT2Attention" in tree and "Conv1D.c_attn" in tree and "LayerNormalization" in tree


def test_plain_module_factory_with_input_spec(tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"x": {"shape": [2, 8], "dynamic_axes": {"0": "batch"}}}))
    assert main(["export", "tests.plain_models:twins", str(tmp_path / "t.onnx"), "--input-spec", str(spec)]) == 0
    sidecar = json.loads((tmp_path / "t.hierarchy.json").read_text())
    assert {"/Twins/LayerA.left", "/Twins/LayerA.right", "/Twins/Head"} <= set(sidecar["node_tags"].values())


def test_help_is_instant_and_lists_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "export" in result.stdout and "inspect" in result.stdout


def _broken_config(tmp_path, model_dirs=None):
    d = tmp_path / "broken"
    d.mkdir()
    (d / "config.json").write_text("{not json")
    return str(d)


def _not_a_model(tmp_path, model_dirs=None):
    d = tmp_path / "empty"
    d.mkdir()
    (d / "notes.txt").write_text("hi")
    return str(d)


def _remote_code(tmp_path, model_dirs):
    import shutil

    d = tmp_path / "remote"
    shutil.copytree(model_dirs["tiny-bert"], d)
    config = json.loads((d / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (d / "config.json").write_text(json.dumps(config))
    (d / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    return str(d)


BAD_INPUTS = {
    "missing path": (lambda t, m: str(t / "nope"), "out.onnx", 2, "does not exist"),
    "not a model directory": (_not_a_model, "out.onnx", 2, "no config.json"),
    "broken config.json": (_broken_config, "out.onnx", 2, "not valid JSON"),
    "output dir missing": (lambda t, m: str(m["tiny-bert"]), "missing/out.onnx", 2, "does not exist: create it"),
    "output not writable": (lambda t, m: str(m["tiny-bert"]), "/proc/out.onnx", 2, "not writable"),
    "output not .onnx": (lambda t, m: str(m["tiny-bert"]), "out.txt", 2, "must end in .onnx"),
    "remote code refused": (_remote_code, "out.onnx", 2, "--trust-remote-code"),
    "bad strategy": (lambda t, m: str(m["tiny-bert"]), "out.onnx --strategy nope", 2, "unknown strategy"),
    "bad dtype": (lambda t, m: str(m["tiny-bert"]), "out.onnx --dtype float8", 2, "unknown dtype 'float8'"),
    "plain module without spec": (lambda t, m: "tests.plain_models:factory", "out.onnx", 2, "--input-spec"),
    "unknown python module": (lambda t, m: "no_such_pkg.mod:make", "out.onnx", 2, "cannot find Python module"),
    "hub unreachable": (lambda t, m: "nobody/nothing", "out.onnx", 1, "cannot reach the Hugging Face Hub"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_with_exit_code_and_leaves_nothing(case, tmp_path, model_dirs, monkeypatch, capsys):
    make_model, output, code, words = BAD_INPUTS[case]
    work = tmp_path / "work"
    work.mkdir()
    model = make_model(tmp_path, model_dirs)
    out, *extra = output.split()
    out_path = out if out.startswith("/") else str(work / out)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")
    assert main(["export", model, out_path, *extra]) == code
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("modelexport: error:") and words in err, err
    assert _files(work) == [], "no partial ONNX or sidecar"


def test_bad_input_spec_is_reported_with_its_location(model_dirs, tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps({"input_ids": {"shape": [2, "x"], "dtype": "int64"}, "mask": {"shape": [1], "dtype": "f"}})
    )
    assert main(["export", str(model_dirs["tiny-bert"]), str(tmp_path / "o.onnx"), "--input-spec", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "input_ids.shape.1" in err and "mask.dtype" in err and err.count("\n") == 1


def test_subprocess_exit_code_for_bad_input(tmp_path):
    result = run_cli("export", str(tmp_path / "missing"), str(tmp_path / "o.onnx"))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("modelexport: error:") and "Traceback" not in result.stderr


def test_output_that_is_not_a_terminal_is_not_squeezed_to_80_columns(monkeypatch):
    """A nightly job's log: rich would fold the fleet and review tables into 80 columns."""
    import io
    import sys

    from cli.terminal import LOG_WIDTH, new_console

    monkeypatch.setattr(sys, "stdout", io.StringIO())
    monkeypatch.delenv("COLUMNS", raising=False)
    assert new_console().width == LOG_WIDTH
    monkeypatch.setenv("COLUMNS", "100")  # a width the user set wins
    assert new_console().width == 100
