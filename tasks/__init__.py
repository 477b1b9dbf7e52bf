"""Prefect tasks: one per pipeline stage, each a thin call into ``modelexport``.

Tasks take and return paths, ids and small values (never an ``nn.Module``). Their cache keys are content
(see ``policy``), their results are persisted so a later process hits the cache, and only transient faults
are retried.
"""

from .export import export_onnx
from .inputs import derive_inputs
from .policy import Produced
from .profile import profile_onnx
from .report import report_onnx
from .resolve import resolve_model
from .validate import validate_onnx

__all__ = ["Produced", "derive_inputs", "export_onnx", "profile_onnx", "report_onnx", "resolve_model", "validate_onnx"]
