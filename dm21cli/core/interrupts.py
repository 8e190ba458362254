"""SIGINT and SIGTERM as a KeyboardInterrupt that cannot be lost, and sections they wait for.

A batch system ends a job with SIGTERM, a user with Ctrl-C (SIGINT).  The
``dm21`` command turns both into ``KeyboardInterrupt`` (exit status 130).  A
handler that only raises is not enough: when the signal arrives while Python
runs a finalizer (``__del__``, e.g. of a temporary file PySCF dropped), the
exception is printed as "Exception ignored in ..." and lost, and the run goes
on as if nothing happened.  So the handler here also *records* the signal:

* `check()` raises again at a safe point if a recorded signal was not handled
  yet.  The runner calls it with every log line and the SCF in every cycle,
  so a lost interruption resurfaces within one SCF cycle.
* `deferred()` marks a section that must finish once begun (committing a
  result: ``result.json`` and the files it names).  A signal inside it is
  recorded and raised when the section ends.
* `acknowledge()` is called by the code that handles the interruption (it
  writes what was finished and re-raises), so that its own log lines do not
  raise a second time.
* `received()` tells the command line, at the very end, that the process was
  signalled even if every KeyboardInterrupt was lost: it exits 130 then.

Nothing here does anything until `install()` is called (by the ``dm21`` entry
point, first thing, and by scan worker processes), so library users keep
Python's own SIGINT behaviour.  Standard library only: this module is imported
before anything else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Iterator, NoReturn

__all__ = ["install", "check", "deferred", "acknowledge", "received", "message", "reset",
           "exit_process", "EXIT_STATUS"]

#: exit status of an interrupted command (README: 130, as a shell reports Ctrl-C)
EXIT_STATUS = 130

#: the signals handled (SIGTERM: batch time limits, kill; SIGINT: Ctrl-C).
SIGNALS = (signal.SIGINT, signal.SIGTERM)

_state = {
    "installed": False,
    "pending": None,  # a signal not yet handled by anybody (int) or None
    "received": None,  # the last signal received in this process, handled or not
    "depth": 0,  # nesting of deferred() sections
}


def message(signum: int | None = None) -> str:
    """'interrupted by SIGTERM' (or by the pending signal)."""
    signum = signum if signum is not None else (_state["pending"] or _state["received"])
    try:
        name = signal.Signals(signum).name
    except (ValueError, TypeError):
        name = f"signal {signum}"
    return f"interrupted by {name}"


def _handler(signum, frame) -> None:
    _state["received"] = signum
    _state["pending"] = signum
    if _state["depth"] == 0:
        raise KeyboardInterrupt(message(signum))


def install() -> bool:
    """Handle SIGINT and SIGTERM as described above (main thread only); returns whether it did."""
    if threading.current_thread() is not threading.main_thread():
        return False
    for sig in SIGNALS:
        signal.signal(sig, _handler)
    _state["installed"] = True
    return True


def reset() -> None:
    """Forget recorded signals (a new job in the same process, tests)."""
    _state["pending"] = None
    _state["received"] = None


def check() -> None:
    """Raise KeyboardInterrupt if a signal arrived and nobody has handled it yet.

    Does nothing inside a `deferred` section or when `install` was not called
    (then Python's own SIGINT handling applies).
    """
    if _state["pending"] is not None and _state["depth"] == 0:
        raise KeyboardInterrupt(message())


def acknowledge() -> None:
    """The current interruption is being handled: `check` stops raising for it."""
    _state["pending"] = None


def received() -> int | None:
    """The last signal this process received (handled or not), or None."""
    return _state["received"]


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A section that finishes once begun: SIGINT/SIGTERM inside it wait for its end.

    On leaving the outermost section normally, a signal that arrived inside
    it raises KeyboardInterrupt; if the section ends with an exception, that
    exception propagates and the signal stays pending (`check` raises it).
    """
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
    if _state["depth"] == 0 and _state["pending"] is not None:
        raise KeyboardInterrupt(message())


def exit_process(status: int, final: bool = False) -> NoReturn:
    """End the process with `status`, also 130 after a handled interruption.

    CPython kills its own process with SIGINT at exit (status -2, not 130)
    when a KeyboardInterrupt was raised inside code that an extension module
    ran through ``PyRun_String`` during an import, even if that
    KeyboardInterrupt was caught and handled afterwards: seen here in about
    one run in four for SIGTERM during start-up.  And the interpreter's
    finalization first gives SIGINT and SIGTERM back their default action and
    then takes 0.1-0.3 s (freeing NumPy's and PySCF's modules): a SIGTERM in
    that time killed a finished ``dm21 run`` with 143 instead of 130.

    So an interrupted command, and every command at its very end (`final`:
    the ``dm21`` entry point), runs the atexit functions, flushes its streams
    and leaves with ``os._exit``, never through the finalization.  A signal
    while it does so is recorded (as in `deferred`); the signals are then
    blocked, and one that arrived meanwhile makes the status 130, with the
    one line that says so.  Other statuses, when not `final`, go through
    ``sys.exit`` (library callers of the command line catch SystemExit).
    """
    if status != EXIT_STATUS and not final:
        sys.exit(status)
    import atexit

    _state["depth"] += 1  # from here on a signal is only recorded
    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    pending: set = set()
    if _state["installed"]:
        with contextlib.suppress(Exception):
            signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
            pending = signal.sigpending() & set(SIGNALS)
    signum = _state["received"] or (min(pending) if pending else None)
    if signum is not None and status != EXIT_STATUS:
        with contextlib.suppress(Exception):
            sys.stderr.write(f"dm21: error: {message(signum)}\n")
            sys.stderr.flush()
        status = EXIT_STATUS
    os._exit(status)
