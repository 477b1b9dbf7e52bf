"""Versions of the libraries that shape an export: recorded in every sidecar and part of every cache key."""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version

LIBRARIES = ("modelexport", "torch", "onnx", "onnxruntime", "onnxscript", "transformers")


@cache
def library_versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found
