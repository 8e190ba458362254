"""result.json is the commit point of a run: nothing is lost, nothing claims more.

End-to-end through the command line, in subprocesses: signals at the moments a
user met them (after the warm start, while cube files are written, after the
results are complete, while the program starts), a full disk at every stage
of a run (a small tmpfs), and output locations that cannot be written.

Where a moment cannot be hit reliably with a signal from outside, the test
patches one library function in the child process so that it sends the
signal to its own process at that moment; the signal, its handler and
everything after it are the real ones.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_cli_run import _env, _show, leftovers, write_job

H2 = ("H 0.0 0.0 0.0", "H 0.0 0.0 0.74")


def run_patched(cwd: Path, env: dict, patch: str, argv: list[str]) -> subprocess.CompletedProcess:
    """``dm21 ARGV`` in a child process after running `patch` there (see the module docstring)."""
    code = "import os, signal, sys\n" + textwrap.dedent(patch) + textwrap.dedent(f"""
        sys.argv = ["dm21", *{argv!r}]
        from dm21cli.__main__ import main
        main()
        """)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


#: a KeyboardInterrupt lost as PySCF's temporary-file closer lost it: raised in a __del__
LOST_SIGNAL = """
class _Dropped:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)

def lose_a_signal():
    _Dropped()
"""


def load_chk(path: Path):
    from pyscf.scf import chkfile

    return chkfile.load_scf(str(path))


def warm_start_energy(log: Path) -> float:
    match = re.search(r"warm start converged: E = (-?[0-9.]+) Ha", log.read_text())
    assert match, "no converged warm start in dm21.log"
    return float(match.group(1))


def assert_consistent(out: Path) -> None:
    """What is in `out` agrees with itself: no debris, summary and files as result.json says."""
    assert leftovers(out) == [], leftovers(out)
    summary = (out / "summary.txt").read_text() if (out / "summary.txt").exists() else None
    if summary is not None:
        assert (out / "result.json").exists(), "summary.txt without result.json"
    if (out / "result.json").exists():
        result = json.loads((out / "result.json").read_text())
        for key, name in result["extras"]["dm21cli"]["files"].items():
            names = name.values() if isinstance(name, dict) else [name]
            for n in names:
                assert (out / n).is_file(), f"result.json lists {n}, which does not exist"
        if summary is not None:
            status = "SUCCESS" if result["success"] else "FAILED"
            assert re.search(rf"Status\s+{status}\n", summary), \
                (result["extras"]["dm21cli"]["status"], summary[:300])
    if (out / "scf.chk").exists():
        load_chk(out / "scf.chk")  # a complete PySCF chkfile


# ----------------------------------------------------------------------------
# signals
# ----------------------------------------------------------------------------
def test_a_signal_lost_after_the_warm_start_still_ends_the_run(tmp_path, checkpoints_dir):
    """The swallowed SIGTERM ('Exception ignored in _TemporaryFileCloser.__del__'):
    the run used to go on and exit 0.  Now it ends with 130, and scf.chk holds
    the warm start's state for a restart (there was no DM21 evaluation yet)."""
    write_job(tmp_path, "h2", basis="sto-3g", extra="scf: {grid_level: 1}\n")
    patch = LOST_SIGNAL + """
from dm21cli.jobs import point as point_module
_real = point_module.warm_start
def _warm_start(*args, **kwargs):
    result = _real(*args, **kwargs)
    lose_a_signal()
    return result
point_module.warm_start = _warm_start
"""
    proc = run_patched(tmp_path, _env(checkpoints_dir), patch, ["run", "h2.yaml"])
    assert proc.returncode == 130, _show(proc)
    assert "Exception ignored" in proc.stderr  # the signal's first KeyboardInterrupt was lost
    assert proc.stderr.strip().splitlines()[-1].startswith("dm21: error: interrupted by SIGTERM")
    out = tmp_path / "outputs" / "h2"
    result = json.loads((out / "result.json").read_text())["extras"]["dm21cli"]
    assert result["status"] == "interrupted" and not result["converged"]
    assert "DM21 evaluation" not in (out / "dm21.log").read_text()
    _, scf = load_chk(out / "scf.chk")
    assert scf["e_tot"] == pytest.approx(warm_start_energy(out / "dm21.log"), abs=1e-9)
    assert_consistent(out)


def test_a_signal_lost_during_a_scan_ends_the_scan(tmp_path, checkpoints_dir):
    """The same lost signal in a serial scan: it used to run to its end."""
    write_job(tmp_path, "h2", basis="sto-3g",
              extra="scf: {grid_level: 1}\nscan: {distances: '0.7,0.8,0.9'}\n")
    patch = LOST_SIGNAL + """
from dm21cli.jobs import point as point_module
_real = point_module.warm_start
def _warm_start(*args, **kwargs):
    result = _real(*args, **kwargs)
    lose_a_signal()
    return result
point_module.warm_start = _warm_start
"""
    proc = run_patched(tmp_path, _env(checkpoints_dir), patch, ["scan", "h2.yaml"])
    assert proc.returncode == 130, _show(proc)
    log = (tmp_path / "outputs" / "h2" / "scan.log").read_text()
    assert "interrupted" in log and "scan finished" not in log, log


def test_a_signal_while_cube_files_are_written_keeps_the_converged_result(tmp_path,
                                                                          checkpoints_dir):
    """result.json is committed before the cube files: a signal while they are
    written leaves it saying success (it used to be rewritten as interrupted,
    with summary.txt still saying SUCCESS); the cube being written is not left."""
    write_job(tmp_path, "h2", functional="b3lyp",
              extra="outputs: {cubes: [density, homo], cube_spacing: 0.3}\n")
    patch = """
from dm21cli.jobs import result
_real = result.write_cube
def write_cube(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    return _real(*args, **kwargs)
result.write_cube = write_cube
"""
    proc = run_patched(tmp_path, _env(None), patch, ["run", "h2.yaml"])
    assert proc.returncode == 130, _show(proc)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("dm21: error: interrupted by SIGTERM after the results were written")
    out = tmp_path / "outputs" / "h2"
    result = json.loads((out / "result.json").read_text())
    ours = result["extras"]["dm21cli"]
    assert ours["status"] == "success" and ours["converged"] and result["success"]
    assert result["return_result"] < -1.0
    assert "cubes" not in ours["files"] and not list(out.glob("*.cube"))
    assert (out / "orbitals.molden").is_file() and (out / "scf.chk").is_file()
    assert_consistent(out)


@pytest.mark.parametrize("lost", [False, True], ids=["signal", "lost-signal"])
def test_a_signal_after_the_results_are_complete_exits_130(tmp_path, lost):
    """It used to end with 143 (SIGTERM's default action), or 0 when lost."""
    write_job(tmp_path, "h2", functional="b3lyp")
    patch = (LOST_SIGNAL if lost else "") + f"""
from dm21cli.cli import common
def show_result(self, result):
    {"lose_a_signal()" if lost else "os.kill(os.getpid(), signal.SIGTERM)"}
common.Reporter.show_result = show_result
"""
    proc = run_patched(tmp_path, _env(None), patch, ["run", "h2.yaml"])
    assert proc.returncode == 130, _show(proc)
    assert proc.stderr.strip().splitlines()[-1] == "dm21: error: interrupted by SIGTERM"
    result = json.loads((tmp_path / "outputs" / "h2" / "result.json").read_text())
    assert result["extras"]["dm21cli"]["status"] == "success"
    assert_consistent(tmp_path / "outputs" / "h2")


@pytest.mark.parametrize("delay_s", [0.3, 0.8])
def test_a_signal_while_the_program_starts_exits_130(tmp_path, checkpoints_dir, delay_s):
    """Within its first second the program imports click, NumPy, PySCF: SIGTERM
    there used to end it with 143 (the handler was installed later)."""
    write_job(tmp_path, "h2", basis="sto-3g")
    proc = subprocess.Popen([sys.executable, "-m", "dm21cli", "run", "h2.yaml"], cwd=tmp_path,
                            env=_env(checkpoints_dir), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(delay_s)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, f"exit {proc.returncode}\n{stderr}"
    assert stderr.strip().splitlines()[-1].startswith("dm21: error: interrupted")
    out = tmp_path / "outputs" / "h2"
    if out.exists():
        assert_consistent(out)


# ----------------------------------------------------------------------------
# a full disk, an unwritable location
# ----------------------------------------------------------------------------
@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    """A tmpfs mounted at `path` (root only; skips the test elsewhere)."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


#: tmpfs sizes from "not even the log fits" to "everything fits": each run fails at
#: another stage (log, input copy, scf.chk, molden, result.json, cubes) or succeeds
DISK_SIZES = ["4k", "8k", "12k", "16k", "24k", "32k", "48k", "64k", "96k", "160k", "2m"]


def test_a_full_disk_at_any_stage_is_reported_and_leaves_nothing_false(tmp_path):
    """A small tmpfs as the output folder, at sizes that make every stage of a
    run hit the full disk.  Before: summary.txt saying SUCCESS without result.json
    (exit 7), a half-written scf.chk under its final name, a segmentation fault
    inside HDF5 (exit 139), `.running` left behind.  Now: exit 6 naming the file
    (0 when all fits), and whatever is on disk is complete and consistent."""
    write_job(tmp_path, "h2", functional="b3lyp",
              extra="outputs: {cubes: [density], cube_spacing: 0.25}\n")
    seen = set()
    for size in DISK_SIZES:
        with tmpfs(tmp_path / f"disk-{size}", f"size={size}") as disk:
            proc = subprocess.run([sys.executable, "-m", "dm21cli", "run", "h2.yaml",
                                   "-o", str(disk / "out")], cwd=tmp_path, env=_env(None),
                                  capture_output=True, text=True, timeout=300)
            out = disk / "out"
            assert proc.returncode in (0, 6), f"tmpfs {size}: {_show(proc)}"
            if proc.returncode == 6:
                last = proc.stderr.strip().splitlines()[-1]
                assert last.startswith("dm21: error: disk full while writing "), last
                seen.add(re.search(r"writing (\S+):", last).group(1).rsplit("/", 1)[-1])
            else:
                seen.add("nothing")
            if out.exists():  # (a disk too full for the directory's markers: no directory)
                assert_consistent(out)
    # the sizes did reach the stages they are meant to reach
    assert {"dm21.log", "density.cube", "nothing"} <= seen, seen


def test_a_read_only_output_location_is_exit_8(tmp_path):
    write_job(tmp_path, "h2", functional="b3lyp")
    with tmpfs(tmp_path / "ro", "ro,size=1m") as disk:
        proc = subprocess.run([sys.executable, "-m", "dm21cli", "run", "h2.yaml",
                               "-o", str(disk / "out")], cwd=tmp_path, env=_env(None),
                              capture_output=True, text=True, timeout=300)
    assert proc.returncode == 8, _show(proc)
    assert proc.stderr.strip() == (f"dm21: error: creating {disk / 'out'} failed: Read-only file "
                                   f"system; choose another output directory with -o")


def test_an_output_path_below_a_file_is_exit_8(tmp_path):
    write_job(tmp_path, "h2", functional="b3lyp")
    (tmp_path / "afile").write_text("x")
    proc = subprocess.run([sys.executable, "-m", "dm21cli", "run", "h2.yaml", "-o", "afile/out"],
                          cwd=tmp_path, env=_env(None), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 8, _show(proc)
    assert "afile is a file, not a directory" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "outputs").exists()


# ----------------------------------------------------------------------------
# a finished result that cannot be written (issue 22)
# ----------------------------------------------------------------------------
def test_a_finished_result_that_cannot_be_written_keeps_its_energy(tmp_path, monkeypatch):
    """Writing result.json of a finished run failed (a path that is not valid UTF-8 once,
    a full disk): the run said "calculation failed" (exit 7) and the energy was gone.
    Now the error names the energy, and the failure record, written when the disk lets
    it, is a FailedOperation that keeps it."""
    from dm21cli.core.errors import ResourceError, output_error
    from dm21cli.io.inputs.load import load_job
    from dm21cli.jobs import run as runner

    job = write_job(tmp_path, "h2", basis="sto-3g", functional="b3lyp",
                    extra="scf: {grid_level: 1}\noutputs: {molden: false}\n")
    spec = load_job(job, {"output_dir": str(tmp_path / "out")})
    real = runner.write_text_files_atomic
    attempts = []

    def full_at_the_first_commit(files):
        attempts.append([Path(path).name for path, _ in files])
        if len(attempts) == 1:
            raise output_error(OSError(28, "No space left on device"), files[0][0])
        return real(files)

    monkeypatch.setattr(runner, "write_text_files_atomic", full_at_the_first_commit)
    with pytest.raises(ResourceError) as info:
        runner.run_job(spec)
    message = str(info.value)
    assert re.fullmatch(r"disk full while writing \S+/out/result\.json: No space left on device; "
                        r"free some space or choose another output directory with -o; the SCF "
                        r"converged \(E = (-1\.16\d+) Ha\), but this result could not be saved",
                        message), message
    energy = float(re.search(r"E = (\S+) Ha", message).group(1))
    assert attempts == [["result.json", "summary.txt"]] * 2
    document = json.loads((tmp_path / "out" / "result.json").read_text())
    assert document["success"] is False and "input_data" in document  # a FailedOperation
    assert document["extras"]["dm21cli"]["status"] == "failed"
    assert document["error"]["error_type"] == "resource_error"
    assert document["extras"]["properties"]["return_energy"] == pytest.approx(energy, abs=1e-10)
    assert "could not be saved" in (tmp_path / "out" / "dm21.log").read_text()
    assert_consistent(tmp_path / "out")
