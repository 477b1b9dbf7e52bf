"""Export strategies. Each registers itself in STRATEGIES; import a module here to make it selectable."""

from . import dynamo, fx, htp, usage  # noqa: F401  (registers)
from .base import STRATEGIES, Capture, Strategy, register

__all__ = ["STRATEGIES", "Capture", "Strategy", "register"]
