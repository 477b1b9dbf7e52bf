"""The packages keep to their layers: each imports only those below it (README, "Architecture"), so the core
installs and runs without the pipeline extra."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

# package -> the top-level names it must never import, however lazily
FORBIDDEN = {
    "modelexport": {"prefect", "prefect_dask", "mlflow", "distributed", "dask", "cli", "flows", "tasks", "tracking"},
    "tasks": {"mlflow", "cli", "flows", "tracking"},
    "tracking": {"prefect", "prefect_dask", "cli", "flows", "tasks"},
    "flows": {"cli"},
}


def imported_names(path: Path) -> set[str]:
    """The top-level package of every import in `path`, module-level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_no_layer_above_it(package):
    offending = {
        str(path.relative_to(REPO)): sorted(imported_names(path) & FORBIDDEN[package])
        for path in sorted((REPO / package).rglob("*.py"))
    }
    assert {file: names for file, names in offending.items() if names} == {}


def test_a_pipeline_command_without_the_extra_says_what_to_install(monkeypatch, capsys):
    import importlib.util

    from cli import main

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real_find_spec(name, *a)
    )
    assert main(["review"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "modelexport: error: `modelexport review` needs the pipeline extra (mlflow not installed): "
        "pip install 'modelexport[pipeline]'"
    )
