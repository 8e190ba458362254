"""``dm21 scan --relax``: relaxed distance scans (B3LYP water, STO-3G, grid level 1: fast).

At each distance of O-H1 everything else is optimised (geomeTRIC, the distance frozen):
the distance stays what the scan says (1e-6 A), the other bond and the angle change from
point to point, and the relaxed energy lies below the rigid scan's at every distance
(it minimises over more coordinates from the same start).  The same resume rules as
rigid scans (finished points read from disk), --workers giving the serial energies (to
geomeTRIC's energy criterion 1e-6 Ha: the points start from other densities), and
SIGTERM with both workers busy in their optimisations ending the scan within seconds.
The serial scans run in this process (`dm21lib`: the library calls of ``dm21 scan``), the
refusal, the workers and the signal through the command line, in subprocesses.
"""

from __future__ import annotations

import json

import dm21lib
import numpy as np
import pytest
from dm21proc import dm21
from dm21proc import show as _show
from dm21proc import write as _write
from test_scan import _assert_interrupted, _rows, _signal_parallel_scan, _statuses

from dm21cli.core.errors import ExitStatus
from dm21cli.core.units import BOHR_ANGSTROM
from dm21cli.io.outputs.qcschema import fields

WATER = """\
molecule:
  xyz: |
    O 0.0 0.0 0.1173
    H 0.0 0.7572 -0.4692
    H 0.0 -0.7572 -0.4692
basis: sto-3g
functional: {functional}
scf:
  grid_level: 1
outputs:
  molden: false
scan:
  distances: {distances}
"""


def _geometry(scan_dir, functional: str, distance: float) -> np.ndarray:
    result = fields(json.loads((scan_dir / functional / f"point-{distance:06.3f}A" / "result.json").read_text()))
    return np.array(result["molecule"]["geometry_bohr"]) * BOHR_ANGSTROM


def test_relaxed_scan_holds_the_distance_relaxes_the_rest_and_resumes(tmp_path):
    _write(tmp_path, "w.yaml", WATER.format(functional="b3lyp", distances="0.9,1.0,1.2"))
    rigid = dm21lib.scan("w.yaml", tmp_path, output_dir="rigid")
    assert rigid.exit_status == ExitStatus.SUCCESS, rigid.progress.text
    relaxed = dm21lib.scan("w.yaml", tmp_path, output_dir="relaxed", relax=True)
    assert relaxed.exit_status == ExitStatus.SUCCESS, relaxed.progress.text
    assert "3 points: 3 converged" in relaxed.summary
    scan_dir = tmp_path / "relaxed"
    rows = _rows(scan_dir)
    assert all(r["status"] == "success" and int(r["opt_steps"]) >= 2 for r in rows)
    assert "opt_steps" not in _rows(tmp_path / "rigid")[0]
    assert json.loads((scan_dir / "scan.json").read_text())["relax"] is True
    rigid_energy = {float(r["distance_angstrom"]): float(r["energy_hartree"])
                    for r in _rows(tmp_path / "rigid")}
    others, angles = [], []
    for r in rows:
        d = float(r["distance_angstrom"])
        x = _geometry(scan_dir, "b3lyp", d)
        a, b = x[1] - x[0], x[2] - x[0]
        assert np.linalg.norm(a) == pytest.approx(d, abs=1e-6)  # the scanned distance, frozen
        others.append(np.linalg.norm(b))
        angles.append(np.degrees(np.arccos(a @ b / np.linalg.norm(a) / np.linalg.norm(b))))
        assert float(r["energy_hartree"]) < rigid_energy[d] - 1e-4  # relaxing lowers it
        point = fields(json.loads((scan_dir / "b3lyp" / f"point-{d:06.3f}A" / "result.json").read_text()))
        assert point["optimization"]["constraints"]["freeze"] == ["distance 1 2"]
        assert point["optimization"]["converged"]
    assert np.ptp(others) > 1e-3 and np.ptp(angles) > 0.5  # the rest relaxed, differently
    assert all(abs(o - 0.9578) > 1e-3 for o in others)

    again = dm21lib.scan("w.yaml", tmp_path, output_dir="relaxed", relax=True)
    assert again.exit_status == ExitStatus.SUCCESS, again.progress.text
    assert "(3 read from disk)" in again.summary
    # the rigid scan's directory holds another definition: refused without --overwrite
    refused = dm21(["scan", "w.yaml", "-o", "rigid", "--relax"], tmp_path)
    assert refused.returncode == ExitStatus.OUTPUT_EXISTS, _show(refused)

    parallel = dm21(["scan", "w.yaml", "-o", "parallel", "--relax", "--workers", "2"], tmp_path)
    assert parallel.returncode == 0, _show(parallel)
    serial = {float(r["distance_angstrom"]): float(r["energy_hartree"]) for r in rows}
    for r in _rows(tmp_path / "parallel"):
        assert float(r["energy_hartree"]) == pytest.approx(serial[float(r["distance_angstrom"])],
                                                           abs=1e-6)


@pytest.mark.parametrize("case", ["diatomic", "electrons", "constraint", "transition"])
def test_relax_errors_exit_2_before_computing(tmp_path, case):
    """constraint: the job's opt.constraints.set drives the scanned distance (issue 22: the
    points reported energies at distances they never computed); transition: a relaxed scan's
    points are minimisations, not transition-state searches."""
    if case == "transition":
        _write(tmp_path, "w.yaml", WATER.format(functional="b3lyp", distances="0.9,1.0")
               + "  atoms: [1, 2]\nopt:\n  transition: true\n")
        args, needle = ["scan", "w.yaml", "--relax"], (
            "w.yaml:16: opt.transition: a relaxed scan's points are minimisations with the "
            "distance held")
    elif case == "constraint":
        _write(tmp_path, "w.yaml", WATER.format(functional="b3lyp", distances="0.9,1.0")
               + "  atoms: [1, 2]\nopt:\n  constraints:\n    set: [distance 2 1 1.5]\n")
        args, needle = ["scan", "w.yaml", "--relax"], (
            "w.yaml:17: opt.constraints.set[0]: distance 2 1 is the relaxed scan's own distance "
            "(scan.atoms on line 14), which the scan holds at each of its distances: remove this "
            "constraint")
    elif case == "diatomic":
        _write(tmp_path, "w.yaml", "molecule:\n  xyz: |\n    H 0 0 0\n    H 0 0 0.74\nbasis: sto-3g\n"
                                   "functional: b3lyp\nscan:\n  distances: 0.7,0.8\n  relax: true\n")
        args, needle = ["scan", "w.yaml"], "w.yaml:9: scan.relax: a relaxed scan needs at least three atoms"
    else:
        _write(tmp_path, "w.yaml", WATER.format(functional="b3lyp", distances="null"))
        args, needle = ["scan", "w.yaml", "--electrons", "9,10", "--relax"], \
            "--relax: relax is for distance scans"
    proc = dm21(args, tmp_path)
    assert proc.returncode == 2, _show(proc)
    (line,) = proc.stderr.strip().splitlines()
    assert needle in line, line
    assert not (tmp_path / "outputs").exists()


def test_relaxed_scan_workers_interrupted_while_both_busy(tmp_path, checkpoints_dir):
    # the walk starts nearest the covalent-radius estimate (0.97 A): 1.1 and 1.2 A first
    job = WATER.format(functional="DM21", distances="1.1,1.2,1.3") + "  relax: true\n"
    code, stderr, scan_dir, seconds = _signal_parallel_scan(
        tmp_path, checkpoints_dir, job.replace("sto-3g", "def2-svp"),
        [("DM21/point-*1.100A/dm21.log", "step 1: geometry"),
         ("DM21/point-*1.200A/dm21.log", "step 1: geometry")], "term")
    _assert_interrupted(code, stderr, scan_dir, seconds)
    statuses = _statuses(scan_dir)
    assert list(statuses.values()) == ["interrupted", "interrupted"], statuses  # 1.1 and 1.2 A
    assert not list(scan_dir.glob("DM21/point-*1.300A"))  # the queued point never started
    for point in scan_dir.glob("DM21/point-*/result.json"):
        assert fields(json.loads(point.read_text()))["optimization"]  # its steps so far, recorded


def _relaxed_plan(tmp_path, extra: str = "", distances: str = "0.9,1.0", out: str = "scan"):
    from dm21cli.io.inputs.load import load_job
    from dm21cli.jobs.scan import plan_scan

    _write(tmp_path, "w.yaml", WATER.format(functional="b3lyp", distances=distances)
           + "  relax: true\n" + extra)
    return plan_scan(load_job(tmp_path / "w.yaml", {"output_dir": str(tmp_path / out)}))


@pytest.mark.parametrize("constraint", ["set: [distance 2 1 1.5]", "freeze: [distance 1 2]"])
def test_a_constraint_on_the_scanned_distance_is_refused(tmp_path, constraint):
    """The relaxed scan holds its pair's distance itself (freeze distance i j at each point):
    a job constraint on the same distance, in either atom order, is refused naming both
    lines, also when scan.atoms is the default pair (located at the scan section)."""
    from dm21cli.core.errors import InputError

    with pytest.raises(InputError) as info:
        _relaxed_plan(tmp_path, f"opt:\n  constraints:\n    {constraint}\n")
    first = info.value.problems[0]
    assert (first.line, first.field) == (17, f"opt.constraints.{constraint[:constraint.index(':')]}[0]")
    assert "is the relaxed scan's own distance (scan.atoms on line 12)" in first.message, first.message


def test_interrupted_relaxed_scan_names_the_scans_own_resume_command(tmp_path, monkeypatch):
    """An interruption inside a relaxed point's optimisation ended with 'continue with
    dm21 opt FILE --restart' (the point's, which cannot continue a scan); it names the scan's
    own way: the same dm21 scan command.  A point that reaches opt.maxiter names no dm21 opt
    command either (rerunning the scan reads it from disk)."""
    from dm21cli.jobs import opt as opt_module
    from dm21cli.jobs.scan import run_scan

    plan = _relaxed_plan(tmp_path, "opt:\n  maxiter: 1\n", distances="1.0")
    run_scan(plan, plot=False)
    point = fields(json.loads((tmp_path / "scan" / "b3lyp" / "point-01.000A" / "result.json").read_text()))
    assert point["optimization"]["message"] == "geometry not converged in 1 steps (opt.maxiter); raise maxiter"

    def interrupted(self, coords):
        raise KeyboardInterrupt

    monkeypatch.setattr(opt_module._Optimisation, "energy_gradient", interrupted)
    plan = _relaxed_plan(tmp_path, distances="0.9", out="stopped")
    with pytest.raises(KeyboardInterrupt) as info:
        run_scan(plan, plot=False)
    message = str(info.value)
    assert message.endswith("; finished points are kept: run the same dm21 scan command again to "
                            f"continue (in {tmp_path / 'stopped'})"), message
    assert "dm21 opt" not in message
