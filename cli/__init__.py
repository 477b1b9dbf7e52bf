"""The ``modelexport`` command line. Each sub-command lives in its own module here and imports heavy libraries
only when it runs, so ``--help`` and bad-input errors stay instant.

Exit codes: 0 success, 1 the work failed (export, validation, a failed model), 2 bad usage or bad input.
"""

from __future__ import annotations

import argparse
import contextvars
import importlib
import os
import signal
import sys
import threading

from modelexport.errors import BadInputError, ModelExportError, one_line
from modelexport.redaction import scrub

# Sub-command modules, in the order `--help` lists them. Each defines NAME, HELP, add_arguments(p), run(args).
COMMANDS = [
    "export",
    "inspect",
    "compare",
    "validate",
    "profile",
    "report",
    "import_graphml",
    "demo",
    "demo_models",
    "run",
    "run_fleet",
    "review",
    "serve",
]
# Commands of the orchestrated pipeline, and the packages of the `pipeline` extra that they need.
PIPELINE_COMMANDS = {
    "run": ("prefect", "mlflow"),
    "run-fleet": ("prefect", "mlflow"),
    "review": ("mlflow",),
    "serve": ("prefect",),
}


RECORDING_S = 4  # how long a Ctrl-C waits for the runs to be recorded as interrupted before exiting


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like every other bad input
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="modelexport",
        description="Export PyTorch / Hugging Face models to ONNX with every node tagged by the nn.Module that "
        "produced it; validate, profile and orchestrate fleets of exports.",
    )
    from modelexport import __version__

    parser.add_argument("--version", action="version", version=f"modelexport {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        module = importlib.import_module(f"{__name__}.{name.replace('-', '_')}_cmd")
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _require_pipeline(command: str) -> None:
    """A pipeline command where the pipeline extra is not installed says what to install, instead of an ImportError."""
    from importlib.util import find_spec

    missing = [name for name in PIPELINE_COMMANDS.get(command, ()) if find_spec(name) is None]
    if missing:
        raise BadInputError(
            f"`modelexport {command}` needs the pipeline extra ({', '.join(missing)} not installed): "
            "pip install 'modelexport[pipeline]'"
        )


def _interrupted(signum, frame) -> None:
    """Ctrl-C in a pipeline command: record the runs as interrupted, then exit without waiting for the stage."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not cut the recording short
    try:
        if "flows" in sys.modules:
            from flows.interruption import end_as_interrupted

            # In a thread of its own, in the flow's context (its API settings and client), for at most
            # RECORDING_S: the frame we interrupted may hold a lock the recording needs.
            recording = threading.Thread(target=contextvars.copy_context().run, args=(end_as_interrupted,), daemon=True)
            recording.start()
            recording.join(timeout=RECORDING_S)
    finally:
        print("modelexport: interrupted", file=sys.stderr)
        _abandon(130)


def _abandon(code: int) -> None:
    """Exit now, leaving the stage that is running in a worker thread (Python would wait for it at exit, a minute
    for a large export): what it writes is staged under temporary names and never completes. The flow has recorded
    its end; the Prefect server and the MLflow recorder end with us (they watch for it)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    debug = args.debug or bool(os.environ.get("MODELEXPORT_DEBUG"))
    try:
        _require_pipeline(args.command)
        if args.command in ("run", "run-fleet"):  # `serve` leaves its flow runs to Prefect's own Ctrl-C handling
            signal.signal(signal.SIGINT, _interrupted)
        return int(args._run(args) or 0)
    except ModelExportError as exc:
        if debug:
            raise
        print(f"modelexport: error: {scrub(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("modelexport: interrupted", file=sys.stderr)
        _abandon(130)
    except Exception as exc:
        if debug:
            raise
        print(f"modelexport: error: {scrub(one_line(exc))} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1
