"""SIGTERM handled as Ctrl-C is: Slurm, docker and `timeout` stop a job with SIGTERM, whose default action kills
Python at once, so a run's interruption would go unrecorded and its lock owner would stay written. Under
`sigterm_raises()` a SIGTERM raises `Terminated` in the main thread instead; it is a BaseException (like
KeyboardInterrupt, it passes every `except Exception`), so the same `finally` blocks and `except INTERRUPTS` clauses
run for both. The command line exits 143 for SIGTERM and 130 for SIGINT (128 + the signal's number).
"""

from __future__ import annotations

import contextlib
import signal
import threading


class Terminated(BaseException):
    """A SIGTERM, raised in the main thread by the handler `sigterm_raises` installs."""


INTERRUPTS = (KeyboardInterrupt, Terminated)
EXIT_CODES = {"SIGINT": 128 + signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}


def signal_name(exc: BaseException) -> str:
    """SIGTERM for a Terminated, SIGINT for a KeyboardInterrupt."""
    return "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"


def _raise_terminated(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not break the clean-up of the first
    raise Terminated()


@contextlib.contextmanager
def sigterm_raises():
    """While inside: a SIGTERM raises Terminated (only the main thread can set a handler; elsewhere nothing
    changes). The previous handler comes back on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
