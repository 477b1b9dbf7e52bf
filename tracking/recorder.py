"""MLflow records written by a process of their own, beside the flow's computing.

A model's record (a few dozen SQLite transactions, its files, and the ONNX model with an input example that MLflow
writes as JSON and runs back) is pure Python. In the flow's process it waited on the GIL with the stages' own
Python, so a fleet paid for every record in full. The recorder writes them on the
other core while the next model computes; a fleet run waits for its records only at its end.

One recorder per flow process, started on first use and kept for the process's life, so a long-lived process (a
worker, a test session, the benchmarks) starts it once. It runs one call at a time in the order sent, each with the
caller's environment and working directory (tokens to scrub, ``MLFLOW_*`` settings, relative paths), and owns its
runs on behalf of the flow's process (``runs.OWNER_PID``): when that process dies, the recorder's input ends,
it exits, and the next fleet run reaps whatever it left RUNNING. It runs at a lower CPU priority (NICENESS), so on
a busy machine the stages go first and the records fill the gaps (a busy process on the other core leaves ONNX
Runtime's one-thread latency within its noise, so profiles stay comparable).

Run as ``python -m tracking.recorder PID`` by :class:`Recorder`; not meant to be started by hand.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import asdict
from pathlib import Path

# The recorder's CPU priority below its flow's: records can wait, the stages cannot (nor the latency that the
# profile stage measures, which a record written on the same core at the same priority would disturb).
NICENESS = 10


class RecorderError(RuntimeError):
    """The recorder process ended before answering (it crashed, or could not start)."""


class Recorder:
    """The parent side: :meth:`call` sends a call of one of :data:`CALLS` and returns its Future."""

    def __init__(self):
        self.parent_pid = os.getpid()
        # A session of its own: a Ctrl-C in the terminal is the flow's to handle (it may :meth:`interrupt` us).
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tracking.recorder", str(self.parent_pid)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=Path(__file__).parents[1],
            start_new_session=True,
        )
        self._lock = threading.Lock()
        self._pending: dict[int, Future] = {}
        self._ids = itertools.count()
        self._ended: str | None = None
        threading.Thread(target=self._read, name="mlflow-recorder", daemon=True).start()

    @property
    def alive(self) -> bool:
        return self._ended is None

    def call(self, function: str, *args, **kwargs) -> Future:
        """Arguments are plain values (str, dict, list, numbers): a flow loaded from a file by Prefect names its
        modules after the file (``model.pipeline``), and the recorder could not load such a class."""
        future: Future = Future()
        payload = pickle.dumps((function, args, kwargs, dict(os.environ), os.getcwd()))
        with self._lock:
            if self._ended is not None:
                future.set_exception(RecorderError(self._ended))
                return future
            call_id = next(self._ids)
            self._pending[call_id] = future
            try:
                pickle.dump((call_id, payload), self._proc.stdin)
                self._proc.stdin.flush()
            except OSError:  # it has ended; the reader fails every pending call
                pass
        return future

    def interrupt(self) -> None:
        """Cut the record being written short: its run ends FAILED, interrupted; later calls are answered."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._proc.pid, signal.SIGINT)

    def close(self) -> None:
        """End the recorder after the calls it has (it exits when its input closes)."""
        with contextlib.suppress(OSError):
            self._proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=30)

    def _read(self) -> None:
        try:
            while True:
                call_id, reply = pickle.load(self._proc.stdout)
                with self._lock:
                    future = self._pending.pop(call_id)
                try:
                    ok, value = pickle.loads(reply)
                except Exception as exc:  # a class this process cannot load
                    ok, value = False, RecorderError(f"unreadable reply of the MLflow recorder: {exc}")
                future.set_result(value) if ok else future.set_exception(value)
        except (EOFError, OSError, pickle.UnpicklingError):
            pass
        code = self._proc.wait()
        with self._lock:
            self._ended = (
                f"the MLflow recorder process ended (exit code {code}) before recording all runs: see its "
                f"error above; runs it left RUNNING are ended 'interrupted' by the next fleet run"
            )
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.set_exception(RecorderError(self._ended))


_recorder: Recorder | None = None
_starting = threading.Lock()


def recorder() -> Recorder:
    """This process's recorder, started on first use (again after it died, or in a forked child)."""
    global _recorder
    with _starting:
        if _recorder is None or not _recorder.alive or _recorder.parent_pid != os.getpid():
            _recorder = Recorder()
            atexit.register(_recorder.close)
        return _recorder


class FleetRecords:
    """A fleet run being recorded: :meth:`log` sends each model's outcome as it finishes."""

    def __init__(
        self,
        recorder_: Recorder,
        fleet: str,
        tracking_uri: str | None,
        params: dict | None,
        models: int = 0,
        tags: dict | None = None,
    ):
        self._recorder = recorder_
        self._tags = tags or {}
        self.key = f"{os.getpid()}-{next(_fleet_keys)}"  # the recorder's name for this fleet run
        self.started = recorder_.call(
            "start_fleet", self.key, fleet, tracking_uri=tracking_uri, params=params, tags=self._tags
        )
        # Not awaited: the recorder looks for the runs to cite while the flow resolves its models (a failure fails
        # the fleet run's end, as a record's does).
        self._logged: list[Future] = [recorder_.call("find_earlier_runs", self.key, models)] if models else []

    def log(self, outcome, output_dir: str | os.PathLike) -> Future:
        """Record a ``ModelOutcome`` nested under this fleet's run; its files are read from `output_dir`."""
        future = self._recorder.call("log_outcome", asdict(outcome), str(output_dir), fleet=self.key, tags=self._tags)
        self._logged.append(future)
        return future

    def end(self, failed: BaseException | None = None) -> None:
        """Wait for every record sent, then end the fleet run: FAILED with `failed` (the block's error) or the
        first record's error, which is raised."""
        from .runs import short_reason

        errors = [f.exception() for f in self._logged]
        error = failed or next((e for e in errors if e is not None), None)
        self._recorder.call("end_fleet", self.key, failed=short_reason(error) if error else None).result()
        if failed is None and error is not None:
            raise error


_fleet_keys = itertools.count()


@contextlib.contextmanager
def fleet_run(
    fleet: str,
    *,
    tracking_uri: str | None = None,
    params: dict | None = None,
    models: int = 0,
    tags: dict | None = None,
) -> Iterator[FleetRecords]:
    """``runs.fleet_run`` through the recorder: the fleet run exists in MLflow before the block runs (a process
    killed at any point leaves it, to be reaped as interrupted); it ends once every record sent has been written,
    FAILED if the block raised or a record failed (raised here). With the fleet's number of `models`, the runs its
    cached models will cite are looked up at once (``runs.find_earlier_runs``)."""
    records = FleetRecords(recorder(), fleet, tracking_uri, params, models, tags)
    records.started.result()
    _open.add(records)
    try:
        yield records
    except BaseException as exc:
        records.end(failed=exc)
        raise
    finally:
        _open.discard(records)
    records.end()


_open: set[FleetRecords] = set()  # the fleet runs being recorded now


def interrupt_records() -> None:
    """For a process about to exit at once: cut the record being written short (its run ends FAILED,
    interrupted) and end every fleet run still being recorded FAILED, interrupted."""
    if _recorder is None or not _recorder.alive:
        return
    _recorder.interrupt()
    for records in list(_open):
        records.end(failed=KeyboardInterrupt())
        _open.discard(records)


def log_outcome(
    outcome, output_dir: str | os.PathLike, *, tracking_uri: str | None = None, tags: dict | None = None
) -> None:
    """``runs.log_outcome`` of one model (not in a fleet) through the recorder; waits for it."""
    recorder().call("log_outcome", asdict(outcome), str(output_dir), tracking_uri=tracking_uri, tags=tags).result()


# --- the recorder process ---------------------------------------------------------------------------------------

_fleets: dict[str, object] = {}  # fleet key -> its runs.FleetRun
_children: dict[str, dict[str, bool]] = {}  # fleet key -> the model runs logged under it: name -> it finished


def _start_fleet(key: str, *args, **kwargs) -> None:
    from . import runs

    _fleets[key] = runs.start_fleet(*args, **kwargs)
    _children[key] = {}


def _end_fleet(key: str, **kwargs) -> None:
    """End the fleet run, counting the model runs this process logged under it (no search at the fleet's end)."""
    from . import runs

    runs.end_fleet(_fleets.pop(key), children=_children.pop(key), **kwargs)


def _find_earlier_runs(key: str, models: int) -> None:
    from . import runs

    runs.find_earlier_runs(_fleets[key], models)


def _log_outcome(outcome: dict, output_dir: str, fleet: str | None = None, **kwargs) -> str:
    from modelexport.outcome import ModelOutcome

    from . import runs

    finished = False  # a record that raised ended its run FAILED (or made none, and the fleet run fails with it)
    try:
        run = runs.log_outcome(ModelOutcome(**outcome), output_dir, fleet=_fleets[fleet] if fleet else None, **kwargs)
        finished = run.failure is None
        return run.run_id
    finally:
        if fleet:
            _children[fleet][outcome["name"]] = finished


CALLS = {
    "start_fleet": _start_fleet,
    "find_earlier_runs": _find_earlier_runs,
    "end_fleet": _end_fleet,
    "log_outcome": _log_outcome,
}


def _answer(call_id: int, ok: bool, value) -> bytes:
    """The reply, checked to load again: an exception whose class cannot be rebuilt travels as its text (in a
    RuntimeError: this module runs as ``__main__`` here, so its own classes would not load in the flow's)."""
    try:
        reply = pickle.dumps((ok, value))
        pickle.loads(reply)
    except Exception:
        reply = pickle.dumps((False, RuntimeError(f"{type(value).__name__}: {value}")))
    return pickle.dumps((call_id, reply))


_calling = False  # a call is running (an interrupt cuts it short; between calls it is ignored)


def _interrupt_call(signum, frame) -> None:
    if _calling:
        raise KeyboardInterrupt


def serve(parent_pid: int) -> None:
    """Answer calls from stdin until it closes. Replies go to what was stdout; stray prints go to stderr."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    signal.signal(signal.SIGINT, _interrupt_call)  # from Recorder.interrupt
    if hasattr(os, "nice"):
        os.nice(NICENESS)
    import mlflow  # noqa: F401  (ready before the first call: it is what takes long)

    from . import runs  # noqa: F401

    runs.OWNER_PID = parent_pid
    requests = sys.stdin.buffer
    while True:
        try:
            call_id, payload = pickle.load(requests)
        except EOFError:
            return
        global _calling
        try:
            function, args, kwargs, environ, cwd = pickle.loads(payload)
            os.environ.clear()
            os.environ.update(environ)
            os.chdir(cwd)
            _calling = True
            value, ok = CALLS[function](*args, **kwargs), True
        except (Exception, KeyboardInterrupt) as exc:
            value, ok = exc, False
        finally:
            _calling = False
        try:
            replies.write(_answer(call_id, ok, value))
            replies.flush()
        except BrokenPipeError:  # the flow's process has ended: nobody waits for the answer
            return


if __name__ == "__main__":
    serve(int(sys.argv[1]))
