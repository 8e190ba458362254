"""Every exit status is one of README's table (issue 22, section 4): a sweep of the cases
that once ended with another one, or with the right one and a message that did not say why.

Each row of `CASES` runs ``dm21`` once in a fresh working directory and checks its exit
status and its error line: the last line of stderr, the only one that starts with
``dm21:``, matched by a regular expression; no traceback.  Cases that need an SCF run
H2 with B3LYP/STO-3G on grid level 1 (a second each).  To add a case, add a row: its
arguments (a `bytes` argument for a name that is not valid UTF-8), the files it needs
(`files`, or `setup` for folders, links and FIFOs), what stdout is (`stdout`), the
environment it adds (`env`; ``{tmp}`` is the working directory), Python code to run in
the child before dm21 starts (`patch`, to make something happen at a chosen moment), and
`check` for what must (not) be on disk afterwards.

Before issue 22: a 300-character ``-o`` and ``-o /proc/out`` ended with exit 1 (an
OSError nobody classified), ``-o`` naming a file with 5, scan.definition.json holding
``[]`` with 1 (AttributeError), stdout on /dev/full with 6 and "internal error
(OSError)", ``--json`` into a closed pipe with 1 and no message, a SIGTERM while the
process exited with 143 (or 0 and a traceback), a non-UTF-8 ``-o`` with 7 after the
SCF and no result.json; ``--overwrite`` emptied the working directory, the home folder
and folders dm21 never wrote; scan.log was appended to through a symbolic link, and a
FIFO in its place hung the scan.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable

import pytest
from dm21proc import dm21_env, show

H2_JOB = """\
molecule:
  xyz: |
    H 0 0 0
    H 0 0 0.74
basis: sto-3g
functional: b3lyp
scf: {grid_level: 1}
outputs: {molden: false}
"""
H2_SCAN = H2_JOB + "scan: {distances: '0.7,0.8'}\n"
#: the H2 energy of H2_JOB (B3LYP/STO-3G, grid level 1), Ha
H2_ENERGY_PATTERN = r"-1\.16\d+"
#: an output folder of dm21 (what --overwrite may replace, unless it is protected)
DM21_MARKER = {".dm21-output": '{"creator": "dm21cli", "kind": "run"}\n'}


@dataclasses.dataclass
class Case:
    """One row of the sweep: what to run, and the status and error line it must end with."""

    id: str
    args: list
    status: int
    #: regular expression the last stderr line (the error line) must match
    line: str
    files: dict = dataclasses.field(default_factory=lambda: {"h2.yaml": H2_JOB})
    #: more preparation of the working directory (folders, links, FIFOs)
    setup: Callable[[Path], None] | None = None
    #: "pipe" (captured), "full" (/dev/full) or "closed" (a pipe whose reader is gone)
    stdout: str = "pipe"
    env: dict = dataclasses.field(default_factory=dict)
    #: Python code run in the child process before dm21's entry point
    patch: str = ""
    #: more checks on the working directory after the run: check(cwd, process)
    check: Callable[[Path, subprocess.CompletedProcess], None] | None = None


# ----------------------------------------------------------------------------
# checks and set-ups the rows share
# ----------------------------------------------------------------------------
def nothing_created(cwd: Path, proc) -> None:
    """No output folder (and nothing else) appeared in the working directory."""
    assert sorted(p.name for p in cwd.iterdir()) == ["h2.yaml"], sorted(cwd.iterdir())


def finished_result(folder: str) -> Callable[[Path, subprocess.CompletedProcess], None]:
    """The run finished: folder/result.json holds its converged result."""
    def check(cwd: Path, proc) -> None:
        result = json.loads((cwd / folder / "result.json").read_text())
        assert result["success"] is True and result["extras"]["dm21cli"]["status"] == "success"
    return check


def unchanged(folder: str, names: list[str]) -> Callable[[Path, subprocess.CompletedProcess], None]:
    """folder holds exactly `names` still (nothing replaced, nothing added)."""
    def check(cwd: Path, proc) -> None:
        assert sorted(p.name for p in (cwd / folder).iterdir()) == sorted(names)
    return check


def folder_with(folder: str, files: dict) -> Callable[[Path], None]:
    def setup(cwd: Path) -> None:
        (cwd / folder).mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (cwd / folder / name).write_text(text)
    return setup


def scan_log_is(kind: str) -> Callable[[Path], None]:
    """outputs/h2s/ exists, with a symbolic link, a FIFO or a folder named scan.log."""
    def setup(cwd: Path) -> None:
        scan_dir = cwd / "outputs" / "h2s"
        scan_dir.mkdir(parents=True)
        log = scan_dir / "scan.log"
        if kind == "symlink":
            log.symlink_to(cwd / "elsewhere.log")
        elif kind == "fifo":
            os.mkfifo(log)
        else:
            log.mkdir()
    return setup


def scan_log_untouched(cwd: Path, proc) -> None:
    """Nothing was written through the link, no point was computed."""
    assert not (cwd / "elsewhere.log").exists()
    assert not (cwd / "outputs" / "h2s" / "b3lyp").exists()


def non_utf8_result(cwd: Path, proc) -> None:
    """The result is in the folder of that name, and result.json gives the name back."""
    folder = os.fsencode(cwd) + b"/out\xff"
    result = json.loads(Path(os.fsdecode(folder + b"/result.json")).read_text(encoding="utf-8"))
    assert result["success"] is True
    recorded = result["extras"]["dm21cli"]["input"]["job"]["output_dir"]
    assert os.fsencode(recorded) == b"out\xff"


#: a SIGTERM while the process exits, after the result is written and printed
SIGTERM_AT_EXIT = """
import atexit, os, signal
atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))
"""

ERROR_TAIL = "choose another output directory with -o"

CASES = [
    Case("output-name-too-long", ["run", "h2.yaml", "-o", "a" * 300], 8,
         rf"^dm21: error: creating a{{300}} failed: File name too long; {ERROR_TAIL}$",
         check=nothing_created),
    Case("output-name-too-long-below-new-folders", ["run", "h2.yaml", "-o", "x/y/" + "a" * 300], 8,
         rf"^dm21: error: creating x/y/a{{300}} failed: File name too long; {ERROR_TAIL}$",
         check=nothing_created),
    Case("output-in-proc", ["run", "h2.yaml", "-o", "/proc/out"], 8,
         rf"^dm21: error: creating /proc/out failed: No such file or directory; {ERROR_TAIL}$",
         check=nothing_created),
    Case("output-is-a-file", ["run", "h2.yaml", "-o", "h2.yaml"], 8,
         rf"^dm21: error: output path h2\.yaml exists and is not a directory; {ERROR_TAIL}$",
         check=nothing_created),
    Case("scan-output-is-a-file", ["scan", "h2s.yaml", "-o", "h2s.yaml"], 8,
         rf"^dm21: error: output path h2s\.yaml exists and is not a directory; {ERROR_TAIL}$",
         files={"h2s.yaml": H2_SCAN}),
    Case("scan-definition-not-an-object", ["scan", "h2s.yaml"], 5,
         r"^dm21: error: scan directory outputs/h2s holds a scan\.definition\.json that is not "
         r"a scan definition; use --overwrite to replace it \(points with unchanged inputs are "
         r"kept\), or -o for another directory$",
         files={"h2s.yaml": H2_SCAN}, setup=folder_with("outputs/h2s", {"scan.definition.json": "[]\n"}),
         check=unchanged("outputs/h2s", ["scan.definition.json"])),
    Case("stdout-on-dev-full", ["run", "h2.yaml"], 6,
         r"^dm21: error: writing stdout failed: No space left on device \(stdout goes to a full "
         r"disk or device\); the results are in outputs/h2/result\.json$",
         stdout="full", check=finished_result("outputs/h2")),
    Case("validate-stdout-on-dev-full", ["validate", "h2.yaml"], 6,
         r"^dm21: error: writing stdout failed: No space left on device \(stdout goes to a full "
         r"disk or device\)$", stdout="full"),
    Case("json-into-a-closed-pipe", ["run", "h2.yaml", "--json"], 8,
         r"^dm21: error: writing stdout failed: Broken pipe \(the program reading the output "
         r"ended before it was all written\); the results are in outputs/h2/result\.json$",
         stdout="closed", check=finished_result("outputs/h2")),
    Case("scan-table-into-a-closed-pipe", ["scan", "h2s.yaml"], 8,
         r"^dm21: error: writing stdout failed: Broken pipe \(.*\); the results are in "
         r"outputs/h2s/scan\.csv$", files={"h2s.yaml": H2_SCAN}, stdout="closed"),
    Case("sigterm-while-exiting", ["run", "h2.yaml"], 130,
         r"^dm21: error: interrupted by SIGTERM$", patch=SIGTERM_AT_EXIT,
         check=finished_result("outputs/h2")),
    Case("output-not-utf8", ["run", "h2.yaml", "-o", b"out\xff"], 0,
         rf"\] converged: E = {H2_ENERGY_PATTERN} Ha; results in out\\udcff$",
         check=non_utf8_result),
    Case("overwrite-working-directory", ["run", "h2.yaml", "-o", ".", "--overwrite"], 5,
         rf"^dm21: error: --overwrite never replaces \.: it is the working directory; {ERROR_TAIL}$",
         files={"h2.yaml": H2_JOB, **DM21_MARKER}, check=unchanged(".", ["h2.yaml", ".dm21-output"])),
    Case("overwrite-above-the-working-directory", ["run", "h2.yaml", "-o", "..", "--overwrite"], 5,
         r"^dm21: error: --overwrite never replaces \.\.: it is a folder above the working "
         rf"directory; {ERROR_TAIL}$"),
    Case("overwrite-root", ["run", "h2.yaml", "-o", "/", "--overwrite"], 5,
         rf"^dm21: error: --overwrite never replaces /: it is the root folder; {ERROR_TAIL}$"),
    Case("overwrite-home", ["run", "h2.yaml", "-o", "home", "--overwrite"], 5,
         rf"^dm21: error: --overwrite never replaces home: it is the home folder; {ERROR_TAIL}$",
         env={"HOME": "{tmp}/home"}, setup=folder_with("home", {"notes.txt": "mine\n", **DM21_MARKER}),
         check=unchanged("home", ["notes.txt", ".dm21-output"])),
    Case("overwrite-input-folder", ["run", "in/h2.yaml", "-o", "in", "--overwrite"], 5,
         r"^dm21: error: --overwrite never replaces in: it is the folder of the input file "
         rf"\S+/in/h2\.yaml; {ERROR_TAIL}$",
         files={}, setup=folder_with("in", {"h2.yaml": H2_JOB, **DM21_MARKER}),
         check=unchanged("in", ["h2.yaml", ".dm21-output"])),
    Case("overwrite-foreign-folder", ["run", "h2.yaml", "-o", "mine", "--overwrite"], 5,
         r"^dm21: error: output directory mine holds files that dm21 did not write \(no "
         r"\.dm21-output marker\): --overwrite replaces only dm21's own output directories, and "
         r"this one is left as it is; choose another with -o$",
         setup=folder_with("mine", {"notes.txt": "mine\n"}), check=unchanged("mine", ["notes.txt"])),
    Case("scan-overwrite-foreign-folder", ["scan", "h2s.yaml", "-o", "mine", "--overwrite"], 5,
         r"^dm21: error: output directory mine holds files that dm21 did not write: --overwrite "
         r"uses only dm21's own output directories, and this one is left as it is; choose "
         r"another with -o$",
         files={"h2s.yaml": H2_SCAN}, setup=folder_with("mine", {"notes.txt": "mine\n"}),
         check=unchanged("mine", ["notes.txt"])),
    # cases of issue 22 that other parts fixed (input, constraints): exit 2 with the field,
    # or exit 0 where the input means nothing wrong
    Case("coordinate-beyond-a-float", ["run", "big.json"], 2,
         r"^dm21: error: big\.json:1: molecule\.geometry\[5\]: coordinate 1000+\.\.\. is too "
         r"large \(limit 188973 bohr = 100000 Angstrom\)$",
         files={"big.json": json.dumps({
             "schema_name": "qcschema_input", "schema_version": 1, "driver": "energy",
             "molecule": {"symbols": ["H", "H"], "geometry": [0, 0, 0, 0, 0, 10**400]},
             "model": {"method": "b3lyp", "basis": "sto-3g"}})},
         check=lambda cwd, proc: not (cwd / "outputs").exists() or pytest.fail("outputs/")),
    Case("pyscf-max-memory-not-a-number", ["run", "h2.yaml"], 2,
         r"^dm21: error: PYSCF_MAX_MEMORY: expected a whole number of MB .*, got 'lots' .*$",
         env={"PYSCF_MAX_MEMORY": "lots"}, check=nothing_created),
    Case("comment-only-constraint-line", ["validate", "w.yaml"], 0,
         r"^w\.yaml: memory: the job needs at least \d+ MB",
         files={"w.yaml": H2_JOB.replace("H 0 0 0\n", "O 0 0 0\n    H 0 0.76 0.59\n")
                + "opt:\n  constraints:\n    freeze: ['# only a comment', distance 1 2]\n"}),
    *[Case(f"scan-log-is-a-{kind}", ["scan", "h2s.yaml"], 8,
           rf"^dm21: error: writing outputs/h2s/scan\.log failed: it is a {name}, not a regular "
           r"file \(dm21 writes only regular files: never through a link, into a FIFO or over a "
           rf"folder\); remove it or {ERROR_TAIL}$",
           files={"h2s.yaml": H2_SCAN}, setup=scan_log_is(kind), check=scan_log_untouched)
      for kind, name in (("symlink", "symbolic link"), ("fifo", "FIFO"), ("folder", "directory"))],
]


def run_case(case: Case, cwd: Path) -> subprocess.CompletedProcess:
    """Run the case's dm21 command in cwd, stdout as the case says; stderr captured."""
    env = dm21_env()
    env.pop("DM21_CHECKPOINTS", None)  # (B3LYP: no weights needed)
    env.update({k: v.format(tmp=cwd) for k, v in case.env.items()})
    if case.patch:
        argv = [os.fsdecode(a) for a in case.args]
        code = textwrap.dedent(case.patch) + textwrap.dedent(f"""
            import sys
            sys.argv = ["dm21", *{argv!r}]
            from dm21cli.__main__ import main
            main()
            """)
        command = [sys.executable, "-c", code]
    else:
        command = [sys.executable, "-m", "dm21cli", *case.args]
    with CaseStdout(case.stdout) as stdout:
        return subprocess.run(command, cwd=cwd, env=env, stdout=stdout, stderr=subprocess.PIPE,
                              text=True, errors="backslashreplace", timeout=120)


class CaseStdout:
    """The stdout of a case's process: captured, /dev/full, or a pipe nobody reads."""

    def __init__(self, kind: str):
        self.kind = kind
        self.fds: list[int] = []

    def __enter__(self):
        if self.kind == "full":
            fd = os.open("/dev/full", os.O_WRONLY)
            self.fds.append(fd)
            return fd
        if self.kind == "closed":
            read_end, write_end = os.pipe()
            os.close(read_end)  # the reader is gone before dm21 writes anything
            self.fds.append(write_end)
            return write_end
        return subprocess.PIPE

    def __exit__(self, *exc):
        for fd in self.fds:
            os.close(fd)
        return False


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_exit_status_and_error_line(tmp_path, case):
    for name, text in case.files.items():
        (tmp_path / name).write_text(text)
    if case.setup is not None:
        case.setup(tmp_path)
    proc = run_case(case, tmp_path)
    assert proc.returncode == case.status, show(proc)
    # (a success that says nothing on stderr, as dm21 validate: its last line on stdout)
    lines = proc.stderr.strip().splitlines() or (proc.stdout.strip().splitlines()
                                                 if case.status == 0 else [])
    assert lines and re.search(case.line, lines[-1]), show(proc)
    errors = [line for line in lines if line.startswith("dm21:")]
    assert errors == ([] if case.status == 0 else [lines[-1]]), show(proc)
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, show(proc)
    assert case.status in README_STATUSES, f"exit {case.status} is not in README's table"
    if case.check is not None:
        case.check(tmp_path, proc)


def readme_statuses() -> set[int]:
    """The statuses of README's exit-code table."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    table = text.split("## Exit codes", 1)[1].split("\n\n", 2)[1]
    return {int(m) for m in re.findall(r"^\| (\d+) \|", table, re.M)}


README_STATUSES = readme_statuses()


def test_the_table_is_read_from_readme():
    assert README_STATUSES == {0, 1, 2, 3, 4, 5, 6, 7, 8, 130}


# ----------------------------------------------------------------------------
# a SIGTERM after the final "converged" line, from outside
# ----------------------------------------------------------------------------
#: what makes the end of the process slow: module teardown (a slow finalizer, as freeing
#: NumPy's and PySCF's modules is), or a slow atexit function
SLOW_EXITS = {
    "slow-teardown": """
        import time
        class Slow:
            def __del__(self):
                time.sleep(1.0)
        slow = Slow()
        """,
    "slow-atexit": """
        import atexit, time
        atexit.register(time.sleep, 1.0)
        """,
}


@pytest.mark.parametrize("slow", sorted(SLOW_EXITS))
def test_sigterm_after_the_final_line_is_130_or_comes_too_late(tmp_path, slow):
    """SIGTERM 0.3 s after the final "converged" line, while the process ends slowly.
    Before: 143 (the interpreter's finalization had given SIGTERM its default action
    back) with a slow teardown, 0 and a traceback ("Exception ignored in atexit
    callback") with a slow atexit function.  Now the process ends without the
    finalization (`interrupts.exit_process`): a teardown cannot make it slow, so it has
    ended (0) before the signal; a signal while the atexit functions run is 130, with
    its one line.  The finished result stays in both."""
    (tmp_path / "h2.yaml").write_text(H2_JOB)
    code = textwrap.dedent(SLOW_EXITS[slow]) + textwrap.dedent("""
        import sys
        sys.argv = ["dm21", "run", "h2.yaml"]
        from dm21cli.__main__ import main
        main()
        """)
    env = dm21_env()
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "] converged:" in line:
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stderr.read()
    status = proc.wait(timeout=60)
    stderr = "".join(lines) + rest
    # (a teardown cannot delay the end now: the process has normally ended before the signal;
    # on a very busy machine the signal may still come first, which is 130)
    expected = (130,) if slow == "slow-atexit" else (0, 130)
    assert status in expected, f"exit {status}\n{stderr}"
    if status == 130:
        assert rest.strip().splitlines() == ["dm21: error: interrupted by SIGTERM"], stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    finished_result("outputs/h2")(tmp_path, None)


# ----------------------------------------------------------------------------
# the guard on stdout, in process
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("target, status, reason", [
    ("closed-pipe", 8, r"Broken pipe \(the program reading the output ended before it was all "
                       r"written\)"),
    ("/dev/full", 6, r"No space left on device \(stdout goes to a full disk or device\)")])
def test_stdout_guard_names_stdout_and_stays_failed(target, status, reason):
    """A failed write to stdout was an unclassified OSError (exit 1, or silence when it
    came at exit); the guard makes it the error that says so, and raises it again at the
    next write, so that a caller that swallowed it (click probes its streams) cannot lose it."""
    from dm21cli.cli.common import StdoutGuard

    if target == "closed-pipe":
        read_end, fd = os.pipe()
        os.close(read_end)
    else:
        fd = os.open(target, os.O_WRONLY)
    stream = os.fdopen(fd, "w")
    guard = StdoutGuard(stream)
    with pytest.raises(Exception, match=rf"^writing stdout failed: {reason}$") as info:
        guard.write("x" * 100_000)
        guard.flush()
    assert info.value.exit_status == status and info.value.stdout is True
    with pytest.raises(type(info.value)):
        guard.write("more")
    stream.close()  # (descriptor 1 of the guard now goes to /dev/null: no second failure)
