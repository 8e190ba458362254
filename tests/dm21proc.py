"""Running `dm21` as a subprocess in tests: environment, call, failure text, job files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


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
