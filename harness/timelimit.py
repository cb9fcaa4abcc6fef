"""A time limit on a piece of work run in the main thread: SIGALRM (``signal.setitimer``)
raises ``TimeLimitExceeded`` in it when the time is up. Used for each benchmark item
(``harness.bench.Session.measure``) and each check (``harness.checking.runner``).

A hang in native code that never returns to the interpreter is not interrupted (Python runs
signal handlers between bytecodes); the check runner's parent deadline covers that case. Off
the main thread, or where there is no ``setitimer``, the work runs without a limit."""

from __future__ import annotations

import contextlib
import signal
import threading


class TimeLimitExceeded(BaseException):
    """The work ran past its time limit. A BaseException, so an implementation's own
    ``except Exception`` cannot swallow it."""

    def __init__(self, seconds: float, what: str = "the work"):
        super().__init__(f"{what} ran past its time limit of {seconds:g} s")
        self.seconds = seconds


@contextlib.contextmanager
def time_limit(seconds: float | None, what: str = "the work"):
    """Raise ``TimeLimitExceeded`` in this thread after ``seconds`` (None: no limit). Nested
    limits are not supported: the previous SIGALRM handler is put back on exit."""
    if seconds is None or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum, frame):
        raise TimeLimitExceeded(seconds, what)

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
