"""Termination signals on the command line: SIGTERM and SIGHUP end a command the way Ctrl-C does.

Python's default for SIGTERM kills the process at once, which would leave a temporary output file behind. Raised as
an exception instead, the signal unwinds the command: ``barkkit.files.atomic_output`` removes its temporary file, and
the command line prints one line and exits with the shell's status for the signal (128 + its number).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["Terminated", "signals_unwind"]

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Terminated(BaseException):
    """A termination signal arrived. A BaseException, like KeyboardInterrupt, so that ``except Exception`` in
    library code does not swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum: int, _frame: FrameType | None) -> None:
    raise Terminated(signum)


@contextmanager
def signals_unwind() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise ``Terminated``; the previous handlers come back after it.

    Only a signal left at its default is taken over, and only the main thread can set handlers: elsewhere (a
    command run from a worker thread) nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # a signal the caller ignores (nohup ignores SIGHUP) or handles itself stays as it is
    previous = {signum: signal.signal(signum, _raise) for signum in SIGNALS if signal.getsignal(signum) is signal.SIG_DFL}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
