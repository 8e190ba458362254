"""Running `dm21` as a subprocess in tests: environment, call, failure text, job files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable


def dm21_env(checkpoints=None) -> dict:
    """The environment of a `dm21` subprocess: no traceback variable, 2 threads, no colour."""
    env = dict(os.environ)
    env.pop("DM21_TRACEBACK", None)
    env["OMP_NUM_THREADS"] = "2"
    env["NO_COLOR"] = "1"
    if checkpoints is not None:
        env["DM21_CHECKPOINTS"] = str(checkpoints)
    return env


def dm21(args, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m dm21cli ARGS` in cwd, output captured."""
    return subprocess.run([sys.executable, "-m", "dm21cli", *map(str, args)], cwd=cwd,
                          env=env or dm21_env(), capture_output=True, text=True, timeout=timeout)


def show(proc) -> str:
    """A finished process's status and the ends of its output, for assertion messages."""
    return (f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n"
            f"{proc.stderr[-3000:]}")


def write(folder: Path, name: str, text: str) -> Path:
    """folder/name with the dedented text."""
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def file_says(path: Path, text: str) -> Callable[[], bool]:
    """A condition for `signal_when`: the file exists and holds text."""
    return lambda: path.is_file() and text in path.read_text(encoding="utf-8")


def signal_when(args, cwd: Path, ready: Callable[[], bool], env: dict | None = None,
                signum: int = signal.SIGTERM, timeout_s: float = 300,
                then_wait_s: float = 0.0) -> tuple[int, str]:
    """Run ``dm21 ARGS`` in cwd and send it `signum` once ready() holds (checked every
    0.05 s) and then_wait_s more seconds have passed: (its exit status, its stderr, also
    left in cwd/stderr.txt).  Fails if the process ends before the signal, or if ready()
    does not hold within timeout_s."""
    stderr_path = Path(cwd) / "stderr.txt"
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "dm21cli", *map(str, args)], cwd=cwd,
                                env=env or dm21_env(), stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + timeout_s
            while proc.poll() is None and not ready():
                assert time.monotonic() < deadline, \
                    f"dm21 {' '.join(map(str, args))}: not ready for a signal in {timeout_s} s"
                time.sleep(0.05)
            time.sleep(then_wait_s)
            assert proc.poll() is None, (f"dm21 ended (exit {proc.returncode}) before it could be "
                                         f"signalled:\n{stderr_path.read_text()}")
            proc.send_signal(signum)
            status = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return status, stderr_path.read_text()
