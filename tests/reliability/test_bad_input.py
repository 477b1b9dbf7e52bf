"""Bad input at the pipeline level, as a new user would give it: each is one line on stderr saying what and what
to do, exit 2 (the fleet file or options are wrong) or a failed model with its reason (exit 1), no traceback,
nothing written. The fleet-file parser is fuzzed."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli import main
from modelexport.errors import BadInputError
from modelexport.fleet import load_fleet, parse_fleet


def _run_fleet(tmp_path, text: str | None, capsys, *extra: str, fleet: Path | None = None) -> tuple[int, str]:
    if fleet is None:
        fleet = tmp_path / "fleet.yaml"
        fleet.write_text(textwrap.dedent(text), encoding="utf-8")
    code = main(["run-fleet", str(fleet), "--output-dir", str(tmp_path / "out"), *extra])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "text, expected",
    [
        ("models: [id: x\n", "is not valid YAML at line 2: fix the file"),
        ("", "is invalid: (top level): Input should be a valid dictionary"),
        ("- id: org/a\n", "is invalid: (top level): Input should be a valid dictionary"),
        ("models: [{id: org/a}]\ncolour: red\n", "colour: Extra inputs are not permitted"),
        ("models: [{id: org/a, opset_version: 17}]\n", "models[0].opset_version: Extra inputs are not permitted"),
        ("models: [{id: org/a, validate: yes}]\n", "models[0].validate"),
        ("models: [{id: org/a, opset: [18]}]\n", "models[0].opset: Input should be a valid integer"),
        ("models: {id: org/a}\n", "models: Input should be a valid list"),
        ("models: [{id: org/a}, {id: other/a}]\n", "models[1].name: 'a' is also the name of models[0]: names must be"),
        ("models: [{id: org/a, name: ../escape}]\n", "models[0].name: name '../escape' must be letters, digits"),
        ("models: [{id: org/a, name: /tmp/abs}]\n", "models[0].name: name '/tmp/abs' must be letters, digits"),
        ("models: [{id: org/a, name: ..}]\n", "models[0].name: name '..' must be letters"),
        ("models: [{id: org/a, input_spec: nowhere.json}]\n", "models[0].input_spec: input spec"),
        ("models: [{id: org/a, task: dancing}]\n", "models[0].task: unknown task 'dancing'"),
        ("[" * 100_000, "nests too deeply to be a fleet file: fix the file"),  # was RecursionError, exit 1
    ],
)
def test_an_invalid_fleet_file_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, text, expected):
    code, err = _run_fleet(tmp_path, text, capsys)
    assert code == 2, err
    assert expected in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_fleet_file_that_is_a_folder_or_missing(tmp_path, capsys):
    code, err = _run_fleet(tmp_path, None, capsys, fleet=tmp_path)
    assert code == 2 and "cannot read fleet file" in err and err.count("\n") == 1
    code, err = _run_fleet(tmp_path, None, capsys, fleet=tmp_path / "nope.yaml")
    assert code == 2 and "does not exist: pass the path of a YAML file" in err


def test_a_model_folder_that_is_a_symlink_out_of_the_output_dir_is_refused(tmp_path, capsys):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "bert").symlink_to(outside)
    code, err = _run_fleet(tmp_path, "models: [{id: org/bert}]\n", capsys)
    assert code == 2, err
    assert "models[0].name: " in err and "leads outside the output directory" in err and err.count("\n") == 1
    assert list(outside.iterdir()) == []


def test_hub_ids_cannot_name_a_path_outside(tmp_path):
    from modelexport.source import resolve

    fleet = parse_fleet({"models": [{"id": "org/../../escape"}, {"id": "a/.."}]}, base=tmp_path)
    assert [p.name for p in fleet.models] == ["escape", "model"]  # folder names never carry a path
    for ref in ("org/../../escape", "org/..", "org//x", "org\\..\\x"):
        with pytest.raises(BadInputError, match="does not exist: pass an existing model directory, a hub id"):
            resolve(ref)


def test_bad_options_exit_2(tmp_path, capsys):
    code, err = _run_fleet(tmp_path, "models: [{id: org/a}]\n", capsys, "--concurrency", "0")
    assert code == 2 and "--concurrency must be at least 1" in err


def test_an_op_no_exporter_supports_fails_the_model_with_one_line_and_no_file(prefect_harness, tmp_path):
    from flows import run_fleet_flow

    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        'models: [{id: "tests.reliability.unexportable:eigen", name: eigen, input_spec: {x: {shape: [4, 4]}}}]\n'
    )
    (outcome,) = run_fleet_flow(str(fleet), str(tmp_path / "out")).models
    assert (outcome.status, outcome.failed_stage, outcome.exit_code) == ("failed", "export", 1)
    assert "aten::linalg_eigvals" in outcome.reason and "is not supported" in outcome.reason
    assert "every strategy failed (htp: " in outcome.reason and "; fx: " in outcome.reason
    assert "--strategy" not in outcome.reason and "\n" not in outcome.reason
    assert [p.name for p in (tmp_path / "out" / "eigen").iterdir()] == []


# --- fuzzing --------------------------------------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers(-3, 30) | st.floats(allow_nan=False) | st.text(max_size=10)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
settings_like = st.fixed_dictionaries(
    {},
    optional={
        "revision": values,
        "task": st.sampled_from(["text-classification", "dancing"]) | values,
        "strategy": st.sampled_from(["auto", "htp", "x"]) | values,
        "opset": st.integers(0, 30) | values,
        "input_spec": values,
        "clean": values,
        "torch_modules": values,
        "validate": st.fixed_dictionaries({}, optional={"enabled": values, "atol": values, "rtol": values}) | values,
        "profile": st.fixed_dictionaries({}, optional={"iterations": values, "threads": values}) | values,
        "colour": values,
    },
)
model_like = st.fixed_dictionaries(
    {"id": st.sampled_from(["org/a", "./m", "/abs", "..", "org/../x", "pkg.mod:fn", ""]) | st.text(max_size=12)},
    optional={"name": st.sampled_from(["a", "a", "../x", "/x", ".", "é", "a b"]) | values},
).map(lambda base: base)
fleet_like = (
    st.fixed_dictionaries(
        {},
        optional={
            "name": st.text(max_size=10) | values,
            "defaults": settings_like | values,
            "models": st.lists(st.one_of(model_like, values), max_size=4) | values,
        },
    )
    | values
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleet_like)
def test_fleet_parser_accepts_or_explains_anything(tmp_path_factory, data):
    """Any YAML value either parses into a fleet whose model folders stay inside the output dir, or raises
    BadInputError with a one-line message."""
    base = tmp_path_factory.getbasetemp()
    try:
        fleet = parse_fleet(data, base=base, source="fleet file f.yaml")
    except BadInputError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("fleet file f.yaml is invalid: ")
        return
    names = [p.name for p in fleet.models]
    assert len(set(names)) == len(names) and fleet.models
    for name in names:
        assert name not in ("", ".", "..") and "/" not in name and "\\" not in name and not os.path.isabs(name)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=60) | fleet_like.map(lambda d: yaml.safe_dump(d, allow_unicode=True)))
def test_fleet_file_text_is_parsed_or_explained(tmp_path, text):
    path = tmp_path / "fleet.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_fleet(path)
    except BadInputError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(f"fleet file {path}")


# --- bad input given to export / run as a user gives it (issue 26): exit 2, one line naming it, nothing written --


def _one_line_error(capsys, code: int, *words: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("modelexport: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


@pytest.mark.parametrize("opset, extra", [("0", []), ("24", []), ("0", ["--strategy", "all"])])
def test_an_opset_out_of_range_is_refused_by_export(model_dirs, tmp_path, capsys, opset, extra):
    """`--opset 0` was read as "not given" and exported at 18, exit 0."""
    out = tmp_path / "out" / ("all" if extra else "model.onnx")
    (tmp_path / "out").mkdir()
    code = main(["export", str(model_dirs["tiny-bert"]), str(out), "--opset", opset, *extra])
    _one_line_error(capsys, code, f"opset {opset} is out of range: use 7..23")
    assert list((tmp_path / "out").iterdir()) == []


def _copy_of_bert(model_dirs, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(model_dirs["tiny-bert"], tmp_path / "bert"))


@pytest.mark.parametrize(
    "damage, words",
    [
        ("truncated", ["model.safetensors is not a valid safetensors file", "download it again or re-save"]),
        ("half", ["model.safetensors is not a valid safetensors file (it is cut short"]),
        ("random", ["model.safetensors is not a valid safetensors file", "download it again or re-save"]),
        ("config list", ["config.json holds a JSON array, not an object", "fix it or re-save the model"]),
        ("config string", ["config.json holds a JSON string, not an object"]),
    ],
)
def test_a_damaged_model_folder_is_bad_input_naming_the_file(model_dirs, tmp_path, capsys, damage, words):
    """Was exit 1 with `SafetensorError: Error while deserializing header` (no file named) or
    `AttributeError: 'list' object has no attribute 'get'`."""
    model = _copy_of_bert(model_dirs, tmp_path)
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    if damage == "truncated":
        weights.write_bytes(data[:100])
    elif damage == "half":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "random":
        weights.write_bytes(os.urandom(5000))
    else:
        (model / "config.json").write_text("[1, 2, 3]" if damage == "config list" else '"bert"')
    (tmp_path / "out").mkdir()
    code = main(["export", str(model), str(tmp_path / "out" / "model.onnx")])
    _one_line_error(capsys, code, *words)
    assert list((tmp_path / "out").iterdir()) == []


def test_an_input_spec_nested_too_deeply_is_bad_input(model_dirs, tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text("[" * 100_000)
    code = main(["export", str(model_dirs["tiny-bert"]), str(tmp_path / "model.onnx"), "--input-spec", str(spec)])
    _one_line_error(capsys, code, f"input spec {spec} nests too deeply to be an input spec: fix the file")


@pytest.mark.parametrize(
    "in_the_way, words",
    [
        ("x.onnx", ["output ", "x.onnx is a directory: pass the path of a file to write, or remove the directory"]),
        (
            "x.hierarchy.json",
            ["x.hierarchy.json (the sidecar of ", "x.onnx) is a directory: remove it or choose another"],
        ),
    ],
)
def test_a_directory_where_the_output_or_sidecar_goes_is_bad_input(model_dirs, tmp_path, capsys, in_the_way, words):
    """Was `IsADirectoryError: [Errno 21] Is a directory: 'x.onnx'` (exit 1), and for the sidecar, after the whole
    export, `cannot write .../x.onnx: Is a directory; free space or choose another location`: the wrong file."""
    out = tmp_path / "out"
    (out / in_the_way).mkdir(parents=True)
    code = main(["export", str(model_dirs["tiny-bert"]), str(out / "x.onnx")])
    _one_line_error(capsys, code, *words)
    assert [p.name for p in out.iterdir()] == [in_the_way]


def test_a_sidecar_that_cannot_be_written_names_the_sidecar(model_dirs, tmp_path, capsys, monkeypatch):
    """Found only when it is written (the directory appeared after the checks): the error names the sidecar, not
    the ONNX file, and does not suggest freeing space; no ONNX is left without its sidecar."""
    from modelexport import export

    out = tmp_path / "out"
    out.mkdir()
    real_save = export.onnx_io.save_atomic

    def save_then_block_the_sidecar(*args, **kwargs):
        (out / "x.hierarchy.json").mkdir()
        return real_save(*args, **kwargs)

    monkeypatch.setattr(export.onnx_io, "save_atomic", save_then_block_the_sidecar)
    code = main(["export", str(model_dirs["tiny-bert"]), str(out / "x.onnx")])
    err = _one_line_error(
        capsys,
        code,
        f"cannot write {out / 'x.hierarchy.json'}: a directory has that name; remove it or choose another output",
    )
    assert "free space" not in err
    assert [p.name for p in out.iterdir()] == ["x.hierarchy.json"]


@pytest.mark.parametrize("command", ["run", "run-fleet"])
@pytest.mark.parametrize("option", ["--output-dir", "--cache-dir"])
def test_outputs_that_cannot_be_written_fail_before_prefect_starts(
    model_dirs, tmp_path, capsys, monkeypatch, command, option
):
    """`run --output-dir FILE/sub` failed with `NotADirectoryError: ... .cache` (exit 1) once Prefect was up."""
    import flows

    monkeypatch.setattr(flows, "run_model_flow", lambda *a, **k: pytest.fail("the pipeline started"))
    monkeypatch.setattr(flows, "run_fleet_flow", lambda *a, **k: pytest.fail("the pipeline started"))
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(f"models: [{{id: {model_dirs['tiny-bert']}}}]\n")
    target = [command, str(model_dirs["tiny-bert"]) if command == "run" else str(fleet), "--no-tracking"]
    places = {"--output-dir": str(tmp_path / "out"), option: str(blocker / "sub")}
    code = main([*target, *(a for item in places.items() for a in item)])
    _one_line_error(
        capsys,
        code,
        f"{option} {blocker / 'sub'} cannot be created: {blocker} is not a directory: choose another location",
    )
    assert not (tmp_path / "out").exists()


def test_an_output_dir_that_cannot_be_written_says_what_to_do(model_dirs, tmp_path, capsys, monkeypatch):
    """As root a chmod'ed folder is writable anyway: the refusal the OS would give is simulated."""
    import tempfile

    import flows

    monkeypatch.setattr(flows, "run_model_flow", lambda *a, **k: pytest.fail("the pipeline started"))

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    code = main(["run", str(model_dirs["tiny-bert"]), "--output-dir", str(tmp_path / "out"), "--no-tracking"])
    _one_line_error(
        capsys,
        code,
        f"--output-dir {tmp_path / 'out'} cannot be written ({tmp_path}: Permission "
        "denied): choose another location or fix its permissions",
    )


def _spec_file(tmp_path, **inputs) -> Path:
    import json

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({name: {"dtype": "int64", "shape": [2, 16], **ts} for name, ts in inputs.items()}))
    return spec


VOCABULARY_CASES = {  # tiny-bert: vocab_size 128, type_vocab_size 2, max_position_embeddings 64
    "ids past the vocabulary": (
        {"input_ids": {"high": 100_000}},
        "input_ids.high is 100000, but the model's vocab_size is 128 (config.json): set input_ids.high to at most 128",
    ),
    "negative ids": (
        {"input_ids": {"low": -1, "high": 10}},
        "input_ids.low is -1, but input_ids indexes a table of the model (vocab_size 128): set "
        "input_ids.low to 0 or more",
    ),
    "token types past type_vocab_size": (
        {"input_ids": {"high": 100}, "token_type_ids": {"high": 3}},
        "token_type_ids.high is 3, but the model's type_vocab_size is 2",
    ),
    "a sequence past max_position_embeddings": (
        {"input_ids": {"high": 100, "shape": [1, 65]}},
        "input_ids.shape [1, 65] has a sequence of 65, but the model's "
        "max_position_embeddings is 64 (config.json): use a sequence of at "
        "most 64",
    ),
    "positions past max_position_embeddings": (
        {"input_ids": {"high": 100}, "position_ids": {"high": 65}},
        "position_ids.high is 65, but the model's max_position_embeddings is 64",
    ),
}


@pytest.mark.parametrize("strategy", ["htp", "auto"])
@pytest.mark.parametrize("case", VOCABULARY_CASES)
def test_an_input_spec_past_the_models_tables_is_bad_input_for_export(model_dirs, tmp_path, capsys, strategy, case):
    """`high` above the vocabulary failed htp with an IndexError (exit 1), and `auto` fell back to dynamo, which
    printed `Evaluation failed: cannot reshape` lines and exited 0 with a file that then failed validation."""
    inputs, words = VOCABULARY_CASES[case]
    out = tmp_path / "out"
    out.mkdir()
    code = main(
        [
            "export",
            str(model_dirs["tiny-bert"]),
            str(out / "model.onnx"),
            "--strategy",
            strategy,
            "--input-spec",
            str(_spec_file(tmp_path, **inputs)),
        ]
    )
    _one_line_error(capsys, code, f"modelexport: error: input spec: {words}")
    assert list(out.iterdir()) == []


def test_an_input_spec_past_the_vocabulary_is_bad_input_for_validate(model_dirs, exported, tmp_path, capsys):
    result = exported("tiny-bert")
    code = main(
        ["validate", str(result.onnx_path), "--input-spec", str(_spec_file(tmp_path, input_ids={"high": 100_000}))]
    )
    _one_line_error(capsys, code, "input_ids.high is 100000, but the model's vocab_size is 128")


def test_an_input_spec_within_the_models_tables_is_accepted(model_dirs, tmp_path):
    from modelexport.export import export_model
    from modelexport.inputs import load_input_spec

    spec = load_input_spec(
        _spec_file(tmp_path, input_ids={"high": 128, "shape": [1, 64]}, token_type_ids={"high": 2, "shape": [1, 64]})
    )
    result = export_model(str(model_dirs["tiny-bert"]), tmp_path / "model.onnx", strategy="htp", input_spec=spec)
    assert result.stats.coverage == 1.0


def test_an_input_spec_past_the_vocabulary_fails_the_pipelines_inputs_stage(prefect_harness, model_dirs, tmp_path):
    from flows import run_fleet_flow

    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        f"models: [{{id: {model_dirs['tiny-bert']}, name: bert, profile: {{enabled: false}},"
        " input_spec: {input_ids: {shape: [2, 16], dtype: int64, high: 100000}}}]\n"
    )
    (outcome,) = run_fleet_flow(str(fleet), str(tmp_path / "out"), track=False).models
    assert (outcome.status, outcome.failed_stage, outcome.exit_code) == ("failed", "inputs", 2)
    assert outcome.reason == (
        "input spec: input_ids.high is 100000, but the model's vocab_size is 128 (config.json):"
        " set input_ids.high to at most 128"
    )
    assert not (tmp_path / "out" / "bert").exists() or list((tmp_path / "out" / "bert").iterdir()) == []
