"""Make a submodule's scope open however its ``forward`` is called, for the duration of one export.

Every exporter learns a module's scope from ``nn.Module.__call__``: the TorchScript tracer pushes it in
``_slow_forward`` (``htp``), forward hooks run there (``usage``), torch.fx's tracer patches ``__call__`` (``fx``).
Research code often bypasses it: a parent runs ``layer.forward(x)`` (SqueezeBERT's encoder does), stores
``self.step = self.layer.forward`` or builds ``functools.partial(layer.forward, ...)``. Those ops were the
caller's, so a whole encoder's layers could land on the encoder with full coverage and no warning.

`scope_direct_calls` gives every submodule an instance attribute ``forward`` that routes a *direct* call
through the module's ``__call__`` (so its scope opens as for ``layer(x)``) and runs the real forward when
``__call__`` itself calls it (so a module called normally is scoped once, exactly as before: the exported graph
and its node names do not change). A stored bound ``forward`` or a ``partial`` of one found in a module's
attributes is pointed at the wrapper too. ``super().forward(x)`` and ``Base.forward(self, x)`` inside a module's
own forward resolve on the class, not the instance, so they run in the module's own scope, as they should: they
are the same module. Everything is restored on exit, on error too.

Not seen: a module's forward called through its class by someone else (``Layer.forward(layer, x)``), and bound
methods kept outside the model's attributes before the export started.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import types
from collections.abc import Iterator

import torch
from torch import nn


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    """`code` and the code of every function nested in it (``_call_impl`` calls forward from an inner one)."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


# The frames of nn.Module.__call__ that call `self.forward`: a call from one of them is the module's own call.
_CALL_CODES = frozenset(c for f in (nn.Module._call_impl, nn.Module._slow_forward) for c in _codes(f.__code__))
_MISSING = object()
# True only while TorchDynamo traces bytecode (torch.export strict=True); torch.compiler.is_compiling() is True
# for the whole of a non-strict torch.export too, where the redirect is needed.
_dynamo_compiling = getattr(torch.compiler, "is_dynamo_compiling", lambda: False)


class _State:
    """What one `scope_direct_calls` changed, and which modules are being redirected or running now."""

    def __init__(self):
        self.redirecting: set[int] = set()  # ids of modules whose direct call is on its way through __call__
        self.running: list[nn.Module] = []  # modules whose real forward runs now, innermost last
        self.redirected = 0  # direct calls routed through __call__ (for tests and diagnostics)
        self.paths: dict[int, str] = {}  # id -> attribute path of every wrapped module
        self.ran: set[int] = set()  # ids of the modules whose forward ran, however it was called

    def ran_paths(self) -> frozenset[str] | None:
        """Attribute paths of the submodules whose forward ran; None where nothing was seen (the exporter traced
        the bytecode instead, torch.export strict=True)."""
        return frozenset(self.paths[key] for key in self.ran) if self.ran else None


def _wrapper(module: nn.Module, original, state: _State):
    """The instance ``forward`` of `module`: the real one when `__call__` (or the module itself) calls it; a
    direct call from elsewhere goes through `module(...)`."""

    @functools.wraps(original)
    def forward(*args, **kwargs):
        if _dynamo_compiling():  # torch.export(strict=True) traces the bytecode: leave it as it was
            return original(*args, **kwargs)
        key = id(module)
        own = (
            key in state.redirecting
            or sys._getframe(1).f_code in _CALL_CODES
            or (state.running and state.running[-1] is module)
        )
        if not own:
            state.redirecting.add(key)
            state.redirected += 1
            try:
                return module(*args, **kwargs)
            finally:
                state.redirecting.discard(key)
        state.redirecting.discard(key)
        state.ran.add(key)
        state.running.append(module)
        try:
            return original(*args, **kwargs)
        finally:
            state.running.pop()

    forward.__modelexport_direct_call__ = True
    return forward


def _is_forward_of(value, module: nn.Module) -> bool:
    """True for the bound method `module.forward` as the class defines it (a stored reference to it)."""
    return (
        isinstance(value, types.MethodType)
        and value.__self__ is module
        and value.__func__ is getattr(type(module), "forward", None)
    )


@contextlib.contextmanager
def scope_direct_calls(model: nn.Module) -> Iterator[_State]:
    """While inside, a direct ``forward`` call of any submodule of `model` opens that module's scope as a call
    through ``__call__`` would. The root itself is left as it is (its ops are the root's however it is called)."""
    state = _State()
    installed: list[tuple[nn.Module, object]] = []  # (module, its previous instance `forward` or _MISSING)
    rebound: list[tuple[nn.Module, str, object]] = []  # (holder, attribute, previous value)
    wrappers: dict[int, object] = {}
    try:
        for path, module in model.named_modules():
            if not path or isinstance(module, torch.jit.ScriptModule) or id(module) in wrappers:
                continue
            previous = module.__dict__.get("forward", _MISSING)
            if getattr(previous, "__modelexport_direct_call__", False):
                continue  # an enclosing export already wrapped it
            original = previous if previous is not _MISSING else types.MethodType(type(module).forward, module)
            wrapper = _wrapper(module, original, state)
            installed.append((module, previous))
            module.__dict__["forward"] = wrapper
            wrappers[id(module)] = wrapper
            state.paths[id(module)] = path
        modules = {id(m): m for m in model.modules()}
        for holder in modules.values():
            for name, value in list(holder.__dict__.items()):
                if name == "forward":
                    continue
                target = value.func if isinstance(value, functools.partial) else value
                owner = getattr(target, "__self__", None)
                if id(owner) not in wrappers or not _is_forward_of(target, owner):
                    continue
                new = wrappers[id(owner)]
                if isinstance(value, functools.partial):
                    new = functools.partial(new, *value.args, **value.keywords)
                rebound.append((holder, name, value))
                holder.__dict__[name] = new
        yield state
    finally:
        for holder, name, value in reversed(rebound):
            holder.__dict__[name] = value
        for module, previous in reversed(installed):
            if previous is _MISSING:
                module.__dict__.pop("forward", None)
            else:
                module.__dict__["forward"] = previous
