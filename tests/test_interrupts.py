"""`dm21cli.core.interrupts`: a SIGINT/SIGTERM is never lost, and commits finish.

Each test runs in a subprocess: installing signal handlers in the pytest
process itself would change how pytest handles Ctrl-C.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60)


def test_a_signal_lost_in_a_finalizer_is_raised_at_the_next_check():
    # Python prints "Exception ignored in ... __del__" and goes on: the handler's
    # KeyboardInterrupt is gone, but check() raises it again.
    proc = run_python("""
        import os, signal
        from dm21cli.core import interrupts
        interrupts.install()

        class Dropped:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGTERM)

        Dropped()
        print("went on")
        try:
            interrupts.check()
        except KeyboardInterrupt as exc:
            print("raised:", exc)
        interrupts.acknowledge()
        interrupts.check()  # handled: no second raise
        print("received:", signal.Signals(interrupts.received()).name)
        """)
    assert proc.returncode == 0, proc.stderr
    assert "Exception ignored" in proc.stderr  # the loss the mechanism makes up for
    assert proc.stdout.splitlines() == ["went on", "raised: interrupted by SIGTERM",
                                        "received: SIGTERM"]


def test_deferred_sections_finish_and_raise_at_their_end():
    proc = run_python("""
        import os, signal
        from dm21cli.core import interrupts
        interrupts.install()
        done = []
        try:
            with interrupts.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                interrupts.check()  # no raise inside the section
                with interrupts.deferred():  # nested: only the outermost end raises
                    done.append("inner")
                done.append("outer")
        except KeyboardInterrupt as exc:
            print(done, exc)
        """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['inner', 'outer'] interrupted by SIGINT"


def test_a_section_that_fails_keeps_its_own_error_and_the_signal_pending():
    proc = run_python("""
        import os, signal
        from dm21cli.core import interrupts
        interrupts.install()
        try:
            with interrupts.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                raise ValueError("disk full")
        except ValueError as exc:
            print("error:", exc)
        try:
            interrupts.check()
        except KeyboardInterrupt as exc:
            print("then:", exc)
        """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["error: disk full", "then: interrupted by SIGTERM"]


def test_without_install_nothing_changes():
    proc = run_python("""
        import signal
        from dm21cli.core import interrupts
        interrupts.check()
        with interrupts.deferred():
            pass
        print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, interrupts.received())
        """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True None"


def test_a_signal_that_an_import_turns_into_another_error_is_still_exit_130():
    """A SIGTERM while an extension module initialises comes out of the import as
    "ImportError: initialization failed" (NumPy's, seen in CI 0.8 s after start): that is
    an interruption (exit 130), not an internal error (exit 1)."""
    proc = run_python("""
        import os, signal
        from dm21cli.core import resources

        def importing_numpy():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            except KeyboardInterrupt as exc:  # what a C extension's module init does with it
                raise ImportError("initialization failed") from exc

        resources.settle_blas_threads = importing_numpy
        from dm21cli.cli.main import main
        main(["info"])
        """)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "dm21: error: interrupted by SIGTERM"
