"""The few named errors of modelexport; the CLI maps each to an exit code and a one-line message.

Every message says what was wrong and what to do about it, in one line.
"""


class ModelExportError(Exception):
    """Base class: anything modelexport raises on purpose."""

    exit_code = 1


class BadInputError(ModelExportError):
    """The user gave something unusable: a path, a spec, a config, an output location. Exit 2."""

    exit_code = 2


class TransientError(ModelExportError):
    """A fault of the world that may heal on retry: network, 5xx, timeouts."""

    exit_code = 1


class ExportFailedError(ModelExportError):
    """Every strategy failed to turn the model into a tagged ONNX file."""

    exit_code = 1


class ValidationFailedError(ModelExportError):
    """The ONNX model does not compute what the PyTorch model computes."""

    exit_code = 1


class ResourceLimitError(ModelExportError):
    """The model would need more memory than the worker was given (``max_memory_gb``): refused before it starts."""

    exit_code = 1


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an error's message (libraries put pages of advice below it), else its type."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def one_line(exc: BaseException) -> str:
    """How an error is reported in one line: our own errors say what to do in their message; any other error is
    ``Type: first line``."""
    return str(exc) if isinstance(exc, ModelExportError) else typed_line(exc)


def typed_line(exc: BaseException) -> str:
    """``Type: first line`` of any error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"
