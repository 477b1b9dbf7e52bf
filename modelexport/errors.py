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
