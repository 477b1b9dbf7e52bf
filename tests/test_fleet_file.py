"""Fleet files: defaults merged into each model, paths relative to the file, every mistake reported at once."""

from __future__ import annotations

import json
import textwrap

import pytest

from modelexport.errors import BadInputError
from modelexport.fleet import load_fleet
from tests.conftest import run_cli


def write(path, text: str):
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_defaults_merge_and_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "models" / "a").mkdir(parents=True)
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "a.json").write_text(json.dumps({"x": {"shape": [2, 3], "dynamic_axes": {"0": "b"}}}))
    fleet = load_fleet(
        write(
            tmp_path / "fleet.yaml",
            """
        name: team
        defaults:
          opset: 17
          validate: {atol: 0.01}
          profile: {iterations: 5}
        models:
          - id: models/a
            input_spec: specs/a.json
            validate: {rtol: 0.5}
          - id: org/some-model
            revision: v2
            name: other
            opset: 18
            profile: {enabled: false}
        """,
        )
    )
    a, other = fleet.models
    assert fleet.name == "team"
    assert (a.name, a.id, a.opset) == ("a", str((tmp_path / "models" / "a").resolve()), 17)
    assert (a.validation.atol, a.validation.rtol, a.profiling.iterations) == (0.01, 0.5, 5)
    assert a.input_spec["x"]["shape"] == [2, 3]
    assert (other.id, other.revision, other.opset, other.profiling.enabled) == ("org/some-model", "v2", 18, False)
    assert other.validation.atol == 0.01 and other.profiling.iterations == 5  # untouched defaults still apply


def test_every_mistake_is_reported_at_once_with_its_location(tmp_path):
    path = write(
        tmp_path / "fleet.yaml",
        """
        defaults:
          opset: 99
          colour: blue
        models:
          - id: org/a
          - id: org/b
            opset: "eighteen"
            strategy: nonsense
          - id: org/c
            name: ../escape
            validate: {atol: -1}
        """,
    )
    with pytest.raises(BadInputError) as info:
        load_fleet(path)
    message = str(info.value)
    for expected in (
        "defaults.opset",
        "defaults.colour",
        "models[1].opset",
        "models[1].strategy: unknown strategy",
        "models[2].name",
        "models[2].validate.atol",
    ):
        assert expected in message, (expected, message)
    assert "\n" not in message


@pytest.mark.parametrize(
    "entries, expected",
    [
        ("[{id: org/a}, {id: other/a}]", "models[1].name: 'a' is also the name of models[0]"),
        ("[{id: org/a, name: a/b}]", "models[0].name"),
        ("[{id: org/a, name: ..}]", "models[0].name"),
        ("[]", "models: List should have at least 1 item"),
        ("[{id: org/a, input_spec: missing.json}]", "models[0].input_spec: input spec"),
        ("[{id: org/a, input_spec: {x: {shape: [0]}}}]", "models[0].input_spec"),
    ],
)
def test_names_must_be_unique_and_safe(tmp_path, entries, expected):
    with pytest.raises(BadInputError, match=expected.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        load_fleet(write(tmp_path / "fleet.yaml", f"models: {entries}\n"))


def test_cli_reports_a_broken_fleet_file_in_one_line_with_exit_2(tmp_path):
    bad_yaml = write(tmp_path / "bad.yaml", "models: [id: x\n")
    wrong = write(tmp_path / "wrong.yaml", "models: [{id: org/a, opset: 3}, {id: org/b, task: dancing}]\n")
    for path, expected in ((bad_yaml, ["not valid YAML at line"]), (wrong, ["models[0].opset", "models[1].task"])):
        result = run_cli("run-fleet", str(path), timeout=60)
        assert result.returncode == 2, result.stderr
        assert all(e in result.stderr for e in expected), result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    missing = run_cli("run-fleet", str(tmp_path / "nope.yaml"), timeout=60)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_dtype_and_stream_weights_are_settings_of_a_model(tmp_path):
    fleet = load_fleet(
        write(
            tmp_path / "fleet.yaml",
            """
        defaults: {dtype: float16}
        models:
          - {id: org/a, stream_weights: true}
          - {id: org/b, dtype: float32}
          - {id: org/c}
        """,
        )
    )
    a, b, c = fleet.models
    assert (a.dtype, a.stream_weights, b.dtype, b.stream_weights, c.dtype) == (
        "float16",
        True,
        "float32",
        False,
        "float16",
    )
    assert a.validation.atol is None  # the export's dtype decides (dtypes.TOLERANCES)
    with pytest.raises(BadInputError, match=r"models\[0\]\.dtype: Input should be 'float32', 'float16' or 'bfloat16'"):
        load_fleet(write(tmp_path / "bad.yaml", "models: [{id: org/a, dtype: float8}]\n"))
