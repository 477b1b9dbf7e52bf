"""Child processes that must not outlive the process that started them, however it ends.

Prefect's ephemeral API server is a uvicorn process that Prefect stops at exit (``atexit``). A process killed with
SIGKILL runs no exit handler, so the server was left running, reparented to init, until killed by hand. And being
in our process group, a Ctrl-C in the terminal stopped it at once, before the flow could record its end.

So the server is started in a session of its own (the terminal's Ctrl-C reaches only us) and watched by a lifeline:
a small process that holds the read end of a pipe from us. When we end, in any way, the pipe closes; the lifeline
then stops every process it was told of (SIGTERM, SIGKILL after a grace period) and exits. The processes are named
by pid and start time, so a pid the system reused is left alone.

Run as ``python -m flows.lifeline`` by :func:`watch`; not meant to be started by hand.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

GRACE_S = 5  # how long a watched process may take to stop after SIGTERM
_POPEN = subprocess.Popen  # the lifeline itself is started untied, also from within tied_children()

_lifeline: subprocess.Popen | None = None
_lock = threading.Lock()


def watch(pid: int) -> None:
    """Stop process `pid` when this process ends."""
    global _lifeline
    import psutil

    with _lock:
        if _lifeline is None or _lifeline.poll() is not None or _lifeline.owner != os.getpid():
            _lifeline = _POPEN(
                [sys.executable, "-m", "flows.lifeline"],
                stdin=subprocess.PIPE,
                cwd=Path(__file__).parents[1],
                start_new_session=True,
            )
            _lifeline.owner = os.getpid()
        _lifeline.stdin.write(f"{pid} {psutil.Process(pid).create_time()}\n".encode())
        _lifeline.stdin.flush()


@contextlib.contextmanager
def tied_children() -> Iterator[None]:
    """Processes started in the block (by any library) get a session of their own and are watched: they neither
    take the terminal's Ctrl-C nor outlive us. Meant for a short block that starts a server, nothing else."""

    class Tied(_POPEN):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("start_new_session", True)
            super().__init__(*args, **kwargs)
            watch(self.pid)

    subprocess.Popen = Tied
    try:
        yield
    finally:
        subprocess.Popen = _POPEN


def _stop(processes: dict[int, float]) -> None:
    import psutil

    alive = []
    for pid, started in processes.items():
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            if abs(process.create_time() - started) < 0.01:
                process.terminate()
                alive.append(process)
    _, still = psutil.wait_procs(alive, timeout=GRACE_S)
    for process in still:
        with contextlib.suppress(psutil.Error):
            process.kill()


def main() -> None:
    """Read `pid start_time` lines until the pipe closes, then stop those processes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the process we watch over, not for us
    processes: dict[int, float] = {}
    for line in sys.stdin.buffer:
        pid, started = line.split()
        processes[int(pid)] = float(started)
    _stop(processes)


if __name__ == "__main__":
    main()
