"""What ``dm21`` shows on a terminal: run in a real pseudo-terminal (python's pty module).

On a terminal dm21 prints its log lines without rich's file:line column and
without wrapping them itself, under a live status line that shows the elapsed
time and the current DM21 phase.  NO_COLOR (https://no-color.org) removes
colour only: the live display and the tables stay.
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from dm21cli.cli import common

#: rich's log-path column ("common.py:99") or any other file:line
FILE_LINE = re.compile(r"\b\w+\.py:\d+")
SGR = re.compile(r"\x1b\[([0-9;]*)m")
HIDE_CURSOR = "\x1b[?25l"  # a live display (rich's Live) starts


def colour_codes(text: str) -> list[str]:
    """The SGR sequences in text that set a colour (30-49, 90-107; 38/48 extended);
    bold (1), dim (2), italic (3) and reset (0) are not colour."""
    return [params for params in SGR.findall(text)
            if any(p and (30 <= int(p) <= 49 or 90 <= int(p) <= 107) for p in params.split(";"))]


def run_in_pty(args, env: dict, cwd: Path, columns: int = 60, timeout_s: float = 300):
    """Run args with stdin, stdout and stderr on a new pseudo-terminal of the given
    width; returns (exit status, everything written to the terminal)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                            close_fds=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the terminal's other side is closed
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
        status = proc.wait(timeout=30)
    finally:
        os.close(master)
    return status, b"".join(chunks).decode("utf-8", "replace")


def terminal_env(checkpoints, no_color: bool) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES", "TTY_COMPATIBLE",
                        "TTY_INTERACTIVE", "DM21_TRACEBACK")}
    env.update(TERM="xterm-256color", OMP_NUM_THREADS="1", PYSCF_MAX_MEMORY="2000",
               DM21_CHECKPOINTS=str(checkpoints))
    if no_color:
        env["NO_COLOR"] = "1"
    return env


def dm21_in_pty(args, checkpoints, cwd: Path, no_color: bool, columns: int = 60):
    return run_in_pty([sys.executable, "-m", "dm21cli", *map(str, args)],
                      terminal_env(checkpoints, no_color), cwd, columns=columns)


@pytest.mark.parametrize("no_color", [False, True], ids=["colour", "NO_COLOR"])
def test_run_on_a_terminal(tmp_path, checkpoints_dir, no_color):
    """A DM21 run: log lines whole and without file:line, the DM21 phases, the live
    display and the summary table, with NO_COLOR too; colour only without it."""
    (tmp_path / "h2.yaml").write_text("molecule:\n  xyz: |\n    H 0 0 0\n    H 0 0 0.74\n"
                                      "basis: def2-svp\nscf:\n  grid_level: 1\n")
    status, out = dm21_in_pty(["run", "h2.yaml"], checkpoints_dir, tmp_path, no_color=no_color)
    assert status == 0, out[-3000:]
    assert not FILE_LINE.search(out), FILE_LINE.search(out).group()
    # the first line (about 170 characters on a 60-column terminal) is printed whole
    assert re.search(r"\[dm21 +\d+\.\ds\](\x1b\[0m)? dm21cli [^\r\n]*; 1 threads "
                     r"\(OMP_NUM_THREADS\), 2000 MB \(PYSCF_MAX_MEMORY\); the job needs at least "
                     r"[\d,]+ MB[^\r\n]*\)\r\n", out), out[:2000]
    assert "DM21 evaluation 1: computing the exchange integrals" in out
    assert HIDE_CURSOR in out  # the live status line ran
    assert "┏" in out and "total energy" in out  # the summary table
    assert bool(colour_codes(out)) is not no_color


def test_tables_keep_colour_unless_no_color(tmp_path, checkpoints_dir):
    # (wide enough for the table's paths: a narrower terminal gets plain columns, see
    # test_a_narrow_terminal_keeps_every_value)
    args = ["weights", "list", "--checkpoints", checkpoints_dir]
    status, coloured = dm21_in_pty(args, checkpoints_dir, tmp_path, no_color=False, columns=250)
    assert status == 0, coloured
    assert "┏" in coloured and colour_codes(coloured)
    status, plain = dm21_in_pty(args, checkpoints_dir, tmp_path, no_color=True, columns=250)
    assert status == 0, plain
    assert "┏" in plain and colour_codes(plain) == []
    assert SGR.sub("", plain).split() == SGR.sub("", coloured).split()


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_rich_output_needs_a_terminal_not_the_absence_of_no_color(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("NO_COLOR", "1")
    assert common.use_rich(_Terminal())
    monkeypatch.delenv("NO_COLOR")
    assert common.use_rich(_Terminal())
    assert not common.use_rich(io.StringIO())
    monkeypatch.setenv("TERM", "dumb")
    assert not common.use_rich(_Terminal())


def test_status_line_ticks_and_shows_the_phase(monkeypatch):
    from rich.console import Console

    clock = [100.0]
    monkeypatch.setattr(common.time, "perf_counter", lambda: clock[0])
    reporter = common.Reporter()  # stderr is captured: plain lines; the status line is rendered below
    line = common._StatusLine(reporter)

    def shown() -> str:
        console = Console(file=io.StringIO(), width=200, color_system=None)
        console.print(line)
        return console.file.getvalue().strip()

    reporter("warm start: b3lyp SCF")
    clock[0] += 35.4
    assert shown() == "0:35  warm start: b3lyp SCF"
    reporter.status("DM21 evaluation 1: exchange integrals, block 3 of 9")
    clock[0] += 30
    assert shown() == "1:05  DM21 evaluation 1: exchange integrals, block 3 of 9"
    reporter.status(None)
    assert shown() == "1:05  warm start: b3lyp SCF"
    reporter("  frozen-XC evaluation 1: E = -1.0 Ha")
    clock[0] += 3600
    assert shown() == "1:01:05  frozen-XC evaluation 1: E = -1.0 Ha"


def test_plain_lines_keep_their_format(capsys, monkeypatch):
    monkeypatch.setattr(common.time, "perf_counter", lambda: 5.0)
    reporter = common.Reporter()
    assert not reporter.rich  # stderr is captured, not a terminal
    with reporter.live("dm21 run x.yaml"):
        reporter.status("DM21 evaluation 1: network, block 1 of 2")  # terminal only: prints nothing
        reporter("SCF attempt 1/4: diis")
    assert capsys.readouterr().err == "[dm21     0.0s] SCF attempt 1/4: diis\n"


H2_B3LYP = ("molecule:\n  xyz: |\n    H 0 0 0\n    H 0 0 0.74\nbasis: sto-3g\nfunctional: b3lyp\n"
            "scf: {grid_level: 1}\noutputs: {molden: false}\n")


@pytest.mark.parametrize("command", ["run", "scan", "weights", "info"])
def test_a_narrow_terminal_keeps_every_value(tmp_path, checkpoints_dir, command):
    """COLUMNS=10 (issue 22): the result table of `dm21 run` was squeezed into 10 columns
    and lost every value, the energy included (so were those of `dm21 weights list` and
    `dm21 info`); now a table that does not fit is printed as plain text, which the
    terminal wraps.  The scan's table is plain text and keeps its energy column."""
    (tmp_path / "h2.yaml").write_text(H2_B3LYP + ("scan: {distances: '0.7,0.8'}\n"
                                                  if command == "scan" else ""))
    env = terminal_env(checkpoints_dir, no_color=True)
    env["COLUMNS"] = "10"
    args = {"run": ["run", "h2.yaml"], "scan": ["scan", "h2.yaml"], "weights": ["weights", "list"],
            "info": ["info"]}[command]
    status, out = run_in_pty([sys.executable, "-m", "dm21cli", *args], env, tmp_path)
    assert status == 0, out[-3000:]
    text = SGR.sub("", out)
    expected = {"run": [r"Total energy +-1\.16\d+ +-31\.\d+"],
                "scan": [r"functional +d/A +E/Ha +dE/mHa", r"b3lyp +0\.700 +-1\.16\d+ ",
                         r"b3lyp +0\.800 +-1\.16\d+ "],
                "weights": [rf"DM21 +yes +\S.* +{re.escape(str(checkpoints_dir))}/DM21\r\n"],
                "info": [r"dm21cli +\d+\.\d+", r"pyscf +\d+\.\d+"]}[command]
    for pattern in expected:
        assert re.search(pattern, text), (pattern, text[-3000:])


def test_a_table_that_fits_stays_a_table(tmp_path, checkpoints_dir):
    (tmp_path / "h2.yaml").write_text(H2_B3LYP)
    status, out = run_in_pty([sys.executable, "-m", "dm21cli", "run", "h2.yaml"],
                             terminal_env(checkpoints_dir, no_color=True), tmp_path, columns=60)
    assert status == 0, out[-3000:]
    assert "┏" in out and re.search(r"│ total energy +│ -1\.16\d+ │ Ha +│", out), out[-3000:]
