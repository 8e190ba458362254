"""``dm21 scan``: distance parsing, geometry, the scan section, serial scans, resume, physics.

The mechanics run B3LYP or HF on H2 with STO-3G/6-31G and grid level 1; the physics test
runs DM21 on stretched H2+.  What the scan computes and writes is checked in this process
(`dm21lib`: the library calls of the command); the command's own part (exit statuses, its
output, signals, worker processes, the job array, Dask) in subprocesses, as a user runs it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dm21lib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dm21cli.core.errors import ExitStatus, InputError
from dm21cli.io.inputs.load import load_job
from dm21cli.io.inputs.scan_model import MAX_POINTS, parse_distances
from dm21cli.jobs.scan.records import ScanReport
from dm21cli.jobs.scan.plan import (
    displaced_coords,
    equilibrium_estimate_angstrom,
    plan_scan,
    walk_order,
)
from dm21proc import dm21, file_says, signal_when
from dm21proc import dm21_env as _env
from dm21proc import show as _show
from dm21proc import write as _write

REPO_ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
H2_FAST = textwrap.dedent("""
    molecule:
      xyz: |
        H 0.0 0.0 0.0
        H 0.0 0.0 0.74
    basis: sto-3g
    functional: b3lyp
    scf:
      grid_level: 1
    outputs:
      molden: false
    scan:
      distances: {distances}
    """)


def _rows(scan_dir: Path) -> list[dict]:
    with open(scan_dir / "scan.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _result_mtimes(scan_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(scan_dir)): p.stat().st_mtime_ns for p in scan_dir.glob("*/point-*/result.json")}


# ----------------------------------------------------------------------------
# distances
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("2:10:0.5", [2 + 0.5 * k for k in range(17)]),
    ("2:3:0.3", [2.0, 2.3, 2.6, 2.9]),
    ("10:2:-4", [2.0, 6.0, 10.0]),
    ("1.5:1.5:0.1", [1.5]),
    ("2.0,2.36,3,5", [2.0, 2.36, 3.0, 5.0]),
    ("5, 2.0 ,3", [2.0, 3.0, 5.0]),
    ("1e0,2d0", [1.0, 2.0]),
    (2.5, [2.5]),
    ([3, "2.5", 1.0], [1.0, 2.5, 3.0]),
])
def test_parse_distances(text, expected):
    assert parse_distances(text) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("text, message", [
    ("2:10:0", "must not be zero"),
    ("2:10:-0.5", "goes away from the stop"),
    ("10:2:0.5", "goes away from the stop"),
    ("-1:2:0.5", "must be positive"),
    ("0,1,2", "must be positive"),
    ("1:1000:0.1", "at most 200"),
    ("1:2", "three numbers"),
    ("1:2:x", "step: expected a number"),
    ("", "comma-separated"),
    ("1,,2", "comma-separated"),
    ("1,abc", "distance 'abc'"),
    ("1,1.0004", "closer than"),
    ([], "empty"),
    (True, "expected distances"),
    ("nan,1", "finite"),
])
def test_parse_distances_errors(text, message):
    with pytest.raises(ValueError, match=message):
        parse_distances(text)


@settings(max_examples=300, deadline=None)
@given(start=st.floats(0.1, 20), step=st.floats(0.01, 5), n=st.integers(1, MAX_POINTS))
def test_parse_range_property(start, step, n):
    stop = start + (n - 1) * step
    points = parse_distances(f"{start!r}:{stop!r}:{step!r}")
    assert len(points) == n
    assert points == sorted(points) and points[0] == pytest.approx(start)
    assert points[-1] <= stop + 1e-6
    assert all(b - a == pytest.approx(step, rel=1e-6, abs=1e-8) for a, b in zip(points, points[1:]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0.0005, 120, allow_nan=False), min_size=2, max_size=30))
def test_point_directory_names_are_unique_for_accepted_distances(raw):
    """Distances parse_distances accepts (at least 0.001 A apart) never share a directory name."""
    from dm21cli.jobs.scan.plan import point_dirname

    try:
        distances = parse_distances(raw)
    except ValueError:
        return
    names = [point_dirname(d) for d in distances]
    assert len(set(names)) == len(names), names
    assert names == sorted(names) or max(distances) >= 100  # ls lists them in distance order


def test_point_directory_names():
    from dm21cli.jobs.scan.plan import point_dirname

    assert [point_dirname(d) for d in (0.74, 2.36, 10, 0.0012, 123.4567)] == [
        "point-00.740A", "point-02.360A", "point-10.000A", "point-00.001A", "point-123.457A"]


# ----------------------------------------------------------------------------
# geometry and order
# ----------------------------------------------------------------------------
def test_displaced_diatomic():
    coords = np.array([[0.0, 0.0, 0.0], [0.3, 0.4, 0.0]])
    new = displaced_coords(coords, (0, 1), [1], 2.5)
    assert np.allclose(new[0], 0) and np.linalg.norm(new[1] - new[0]) == pytest.approx(2.5)
    assert np.allclose(np.cross(new[1], coords[1]), 0)  # along the same line


def test_displaced_fragment_moves_rigidly():
    rng = np.random.default_rng(1)
    coords = rng.normal(size=(6, 3)) * 2
    moving = [1, 3, 4]
    new = displaced_coords(coords, (0, 3), moving, 7.0)
    assert np.linalg.norm(new[3] - new[0]) == pytest.approx(7.0)
    fixed = [0, 2, 5]
    assert np.allclose(new[fixed], coords[fixed])
    shift = new[moving] - coords[moving]
    assert np.allclose(shift, shift[0])  # rigid translation
    axis = (coords[3] - coords[0]) / np.linalg.norm(coords[3] - coords[0])
    assert np.allclose(np.cross(shift[0], axis), 0)


def test_equilibrium_estimate_and_walk_order():
    assert equilibrium_estimate_angstrom("H", "H") == pytest.approx(0.62, abs=0.01)
    assert equilibrium_estimate_angstrom("Na", "Cl") == pytest.approx(2.68, abs=0.05)
    distances = [1.0, 2.0, 2.5, 3.0, 5.0]
    order = walk_order(distances, 2.4)
    assert order[0] == (2, None)
    assert sorted(k for k, _ in order) == list(range(5))
    seen = set()
    for k, neighbour in order:
        assert neighbour is None or (neighbour in seen and abs(neighbour - k) == 1)
        seen.add(k)
    assert walk_order([1.0, 2.0], 100.0)[0] == (1, None)


def test_report_decides_exit_status():
    def rec(status, converged):
        return {"status": status, "converged": converged, "reused": False}

    assert ScanReport([rec("success", True)] * 3).exit_status == ExitStatus.SUCCESS
    report = ScanReport([rec("success", True), rec("not-converged", False)])
    assert report.exit_status == ExitStatus.NOT_CONVERGED
    assert report.summary_line() == "2 points: 1 converged, 1 not converged"
    assert ScanReport([rec("failed", False), rec("not-converged", False)]).exit_status == ExitStatus.COMPUTE_ERROR


# ----------------------------------------------------------------------------
# the scan section
# ----------------------------------------------------------------------------
WATER = textwrap.dedent("""\
    molecule:
      xyz: |
        O 0.0 0.0 0.117
        H 0.0 0.757 -0.469
        H 0.0 -0.757 -0.469
    functional: b3lyp
    basis: sto-3g
    scan:
    """) + "{scan}\n"


@pytest.mark.parametrize("scan, line, message", [
    ("  atoms: [1, 1]\n  distances: 1,2", 9, "scan.atoms: the two atoms of the pair must differ"),
    ("  atoms: [1, 5]\n  distances: 1,2", 9, "scan.atoms[1]: atom 5 does not exist"),
    ("  atoms: [1, 2, 3]", 9, "scan.atoms: expected two atom numbers"),
    ("  atoms: [0, 2]", 9, "scan.atoms[0]: atom numbers start at 1"),
    ("  fragment: [1, 2]", 9, "scan.fragment[0]: the moving fragment must not contain atom 1"),
    ("  atoms: [1, 3]\n  fragment: [2]", 10, "scan.fragment: the moving fragment must contain atom 3"),
    ("  distances: 3:1:0.5", 9, "scan.distances: the step 0.5"),
    ("  distnces: 1,2", 9, "unknown key 'distnces' (did you mean 'distances'?)"),
    ("  functionals: [b3lyp, b3lpy]", 9, "scan.functionals[1]: unknown functional 'b3lpy'"),
    ("  broken_symmetry: 1", 9, "scan.broken_symmetry: expected true or false"),
    ("  reference_charges: [0]", 9, "scan.reference_charges: expected a list of two values"),
])
def test_scan_section_errors(tmp_path, scan, line, message):
    path = _write(tmp_path, "w.yaml", WATER.format(scan=scan))
    with pytest.raises(InputError) as info:
        load_job(path)
    assert str(info.value).startswith(f"{path}:{line}: ") and message in str(info.value), str(info.value)


def test_scan_plan_polyatomic(tmp_path):
    path = _write(tmp_path, "w.yaml", WATER.format(scan="  atoms: [1, 2]\n  distances: 1,1.5,3"))
    spec = load_job(path)
    plan = plan_scan(spec, output_dir=str(tmp_path / "out"))
    assert plan.moving == [1] and plan.pair == (0, 1)
    assert [p.distance_angstrom for p in plan.points["b3lyp"]] == [1.0, 1.5, 3.0]
    assert plan.order[0] == (0, None)  # 1.0 is nearest to r(O) + r(H) = 0.97
    assert len({p.hash for p in plan.all_points()}) == 3
    # the plan is deterministic: the same input gives the same hashes
    again = plan_scan(load_job(path), output_dir=str(tmp_path / "out"))
    assert again.definition_hash == plan.definition_hash
    assert [p.hash for p in again.all_points()] == [p.hash for p in plan.all_points()]


def test_scan_errors_before_computing(tmp_path):
    path = _write(tmp_path, "w.yaml", WATER.format(scan="  fragment: [2, 3]\n  atoms: [1, 2]"))
    spec = load_job(path)
    with pytest.raises(InputError, match=r"w.yaml:8: scan.distances: no distances to scan"):
        plan_scan(spec)
    # moving both H atoms to 0.05 A from O puts them too close to O
    spec = load_job(path, {"distance": "0.05,1"})
    with pytest.raises(InputError, match=r"--distance: b3lyp at 0.05 Angstrom: atoms 1 \(O\) and 2 \(H\)"):
        plan_scan(spec)
    with pytest.raises(InputError, match=r"--distance: the step"):
        load_job(path, {"distance": "2:1:1"})
    with pytest.raises(InputError, match=r"--functional: unknown functional 'nope'"):
        plan_scan(load_job(path, {"distance": "1"}), functionals=["b3lyp", "nope"])
    # `dm21 run` ignores the scan section
    assert load_job(path).scan.fragment == [2, 3]
    path = _write(tmp_path, "r.yaml", WATER.format(
        scan="  distances: 1\n  reference_atoms: true\n  reference_multiplicities: [2, 1]"))
    with pytest.raises(InputError, match=r"r.yaml:11: scan.reference_multiplicities: b3lyp, moving "
                                         r"fragment: multiplicity 1 does not fit 1 electrons"):
        plan_scan(load_job(path))


def test_distance_ranges_and_values_beyond_meaning_are_refused_before_planning(tmp_path):
    """Issue 22 asks that every range be checked before anything is allocated.  Distance
    scans were already (kept here as a guard; these pass without the issue's changes): a
    range is counted, not listed, against the 200 points, and a distance that puts an atom
    beyond the coordinate limit is refused while the points are planned, naming the option."""
    path = _write(tmp_path, "h2.yaml", H2_FAST.format(distances="0.74"))
    for text in ("0.5:1e308:1e300", "0:1e308:1e-308"):
        with pytest.raises(InputError, match=r"--distance: .* at most 200 are allowed"):
            load_job(path, {"distance": text})
    with pytest.raises(InputError, match=r"--distance: b3lyp at 1e\+300 Angstrom: atom 2 \(H\): z "
                                         r"coordinate '1e\+300' is too large \(limit 100000 Angstrom\)"):
        plan_scan(load_job(path, {"distance": "1,1e300"}), output_dir=str(tmp_path / "out"))


def test_single_atom_reference_fragments_are_their_ground_states(tmp_path):
    """Issue 22: a lone atom whose multiplicity the input does not give is its ground
    state in every command, the separated atoms of a scan too: O2's O atoms are triplets
    (before: singlets, "the lowest for their electron count"); a fragment of several atoms
    keeps the lowest, and given ones are kept."""
    path = _write(tmp_path, "o2.yaml", """
        molecule:
          xyz: |
            O 0 0 0
            O 0 0 1.21
          multiplicity: 3
        basis: sto-3g
        functional: b3lyp
        scan:
          distances: 1.21,3
          reference_atoms: true
        """)
    plan = plan_scan(load_job(path), output_dir=str(tmp_path / "o2"))
    refs = plan.references["b3lyp"]
    assert [(r.role, r.nelectron, r.multiplicity) for r in refs] == [("fixed", 8, 3), ("moving", 8, 3)]
    assert all(r.data["molecule"]["multiplicity"] == 3 for r in refs)
    # H2O+ with both H atoms moving: the fixed O+ is its ground state 4S (2p3; before: 2),
    # the moving H2 (two atoms) the lowest, a singlet
    plan = plan_scan(load_job(_write(tmp_path, "w.yaml", WATER.format(
        scan="  distances: 1\n  reference_atoms: true\n  fragment: [2, 3]")),
        {"charge": 1, "multiplicity": 2}), output_dir=str(tmp_path / "w"))
    assert [(r.role, r.nelectron, r.multiplicity) for r in plan.references["b3lyp"]] == \
        [("fixed", 7, 4), ("moving", 2, 1)]


def test_scan_help_imports_no_heavy_modules():
    code = ("import sys\nfrom dm21cli.cli.main import main\ntry:\n    main(['scan', '--help'])\n"
            "except SystemExit:\n    pass\n"
            "print('HEAVY', sorted({m.split('.')[0] for m in sys.modules} & "
            "{'pyscf', 'tensorflow', 'matplotlib'}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "Usage: dm21 scan" in proc.stdout and "HEAVY []" in proc.stdout, _show(proc)


# ----------------------------------------------------------------------------
# serial scans
# ----------------------------------------------------------------------------
def test_scan_serial_outputs_and_resume(tmp_path):
    _write(tmp_path, "h2.yaml", H2_FAST.format(distances="0.5:2.0:0.5"))
    proc = dm21(["scan", "h2.yaml"], tmp_path)  # the command: exit 0, the table, the counts
    assert proc.returncode == 0, _show(proc)
    scan_dir = tmp_path / "outputs" / "h2"
    assert "4 points: 4 converged" in proc.stderr
    # terminal table, plain text off a terminal
    assert proc.stdout.splitlines()[0].split()[:3] == ["functional", "d/A", "E/Ha"]
    rows = _rows(scan_dir)
    assert [float(r["distance_angstrom"]) for r in rows] == [0.5, 1.0, 1.5, 2.0]
    assert all(r["converged"] == "True" and r["status"] == "success" for r in rows)
    # start nearest the covalent-radius estimate (0.62 A), walk outward from the neighbour
    assert [r["guess"] for r in rows] == ["default", "point at 0.500 A", "point at 1.000 A",
                                         "point at 1.500 A"]
    energies = [float(r["energy_hartree"]) for r in rows]
    assert energies[1] == min(energies)
    for r in rows:
        assert abs(float(r["charge_moving_fragment"]) + float(r["charge_fixed_fragment"])) < 1e-8
        assert float(r["homo_lumo_gap_hartree"]) > 0 and float(r["wall_time_s"]) > 0
        assert int(r["scf_attempts"]) >= 1 and r["nuclear_repulsion_energy_hartree"]
    doc = json.loads((scan_dir / "scan.json").read_text())
    assert doc["counts"]["converged"] == 4 and len(doc["points"]) == 4
    assert (scan_dir / "scan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    point = scan_dir / "b3lyp" / "point-01.500A"
    assert (point / "result.json").is_file() and (point / "scan-point.json").is_file()
    assert not list(point.glob("*.cube")) and not (point / "orbitals.molden").exists()
    assert json.loads((point / "result.json").read_text())["molecule"]["geometry"][5] == \
        pytest.approx(1.5 / 0.529177210903, rel=1e-9)

    # resume: nothing recomputed (in this process from here, but for the refusal's exit status)
    before = _result_mtimes(scan_dir)
    done = dm21lib.scan("h2.yaml", tmp_path)
    assert done.exit_status == ExitStatus.SUCCESS, done.progress.text
    assert done.document["counts"]["read_from_disk"] == 4
    assert _result_mtimes(scan_dir) == before
    assert "(4 read from disk)" in done.summary

    # an unfinished point (as a killed run leaves it) is recomputed, alone
    result = point / "result.json"
    data = json.loads(result.read_text())
    data["extras"]["dm21cli"]["status"] = "interrupted"
    result.write_text(json.dumps(data))
    before = _result_mtimes(scan_dir)
    done = dm21lib.scan("h2.yaml", tmp_path)
    assert done.exit_status == ExitStatus.SUCCESS, done.progress.text
    after = _result_mtimes(scan_dir)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"b3lyp/point-01.500A/result.json"}
    assert "(3 read from disk)" in done.summary

    # a changed definition is refused (exit 5) ...
    _write(tmp_path, "h2.yaml", H2_FAST.format(distances="0.5:2.5:0.5"))
    before = _result_mtimes(scan_dir)
    proc = dm21(["scan", "h2.yaml"], tmp_path)
    assert proc.returncode == ExitStatus.OUTPUT_EXISTS, _show(proc)
    assert "holds a scan of a different input" in proc.stderr and len(proc.stderr.splitlines()) == 1
    # ... unless --overwrite: points with unchanged inputs are still reused
    done = dm21lib.scan("h2.yaml", tmp_path, overwrite=True)
    assert done.exit_status == ExitStatus.SUCCESS, done.progress.text
    assert "5 points: 5 converged (4 read from disk)" in done.summary
    assert {k: v for k, v in _result_mtimes(scan_dir).items() if k in before} == before


def _point_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("point"))


def test_scan_points_named_by_distance_are_reused_whatever_the_other_distances(tmp_path):
    """Issue 10: a point is found again by its distance, not by its index in the sorted list."""
    _write(tmp_path, "h2.yaml", H2_FAST.format(distances="1"))
    scan_dir, folder = tmp_path / "sc", tmp_path / "sc" / "b3lyp"

    def scan(distances, **options):
        done = dm21lib.scan("h2.yaml", tmp_path, distance=distances, output_dir="sc", **options)
        assert done.exit_status == ExitStatus.SUCCESS, done.progress.text
        return done

    scan("0.6,0.8")
    assert _point_names(folder) == ["point-00.600A", "point-00.800A"]
    computed = _result_mtimes(scan_dir)
    # a new shortest distance shifts every index; the two points are still read from disk
    done = scan("0.5,0.6,0.8", overwrite=True)
    assert "3 points: 3 converged (2 read from disk)" in done.summary
    assert {k: v for k, v in _result_mtimes(scan_dir).items() if k in computed} == computed
    assert _point_names(folder) == ["point-00.500A", "point-00.600A", "point-00.800A"]  # no orphans
    rows = _rows(scan_dir)
    assert [(r["index"], r["distance_angstrom"]) for r in rows] == [("0", "0.5"), ("1", "0.6"), ("2", "0.8")]
    # neighbours are named by distance, so a reused point's guess stays true
    assert [r["guess"] for r in rows] == ["point at 0.600 A", "default", "point at 0.600 A"]
    assert [r["reused"] for r in rows] == ["False", "True", "True"]
    computed = _result_mtimes(scan_dir)

    # a distance left out: its directory stays on disk, but not in the curve
    done = scan("0.5,0.8", overwrite=True)
    assert "2 points: 2 converged (2 read from disk)" in done.summary
    assert [r["distance_angstrom"] for r in _rows(scan_dir)] == ["0.5", "0.8"]
    doc = json.loads((scan_dir / "scan.json").read_text())
    assert [p["distance_angstrom"] for p in doc["points"]] == [0.5, 0.8]
    assert doc["counts"]["points"] == 2 and doc["distances_angstrom"] == [0.5, 0.8]
    assert (folder / "point-00.600A" / "result.json").is_file()
    # ... and when it comes back it is read from disk; --point I is still the sorted index
    done = scan("0.5,0.6,0.8", overwrite=True, point=1)
    row = done.table.splitlines()[1]
    assert row.split()[1] == "0.600" and "(disk)" in row
    done = scan("0.5,0.6,0.8", collect=True)
    assert "3 points: 3 converged (3 read from disk)" in done.summary
    assert _result_mtimes(scan_dir) == computed

    # a point directory of the index-named layout (dm21cli before issue 10) is not read: the
    # point is computed again under its new name and the old directory is left where it is
    (folder / "point-00.500A").rename(folder / "point-000_0.500A")
    done = scan("0.5,0.6,0.8")
    assert "3 points: 3 converged (2 read from disk)" in done.summary
    assert _point_names(folder) == sorted(["point-000_0.500A", "point-00.500A", "point-00.600A",
                                           "point-00.800A"])
    assert [r["directory"] for r in _rows(scan_dir)] == [
        str(Path("sc") / "b3lyp" / name) for name in ("point-00.500A", "point-00.600A", "point-00.800A")]


def test_scan_bad_range_is_exit_2_and_creates_nothing(tmp_path):
    _write(tmp_path, "h2.yaml", H2_FAST.format(distances="1,2"))
    for spec, message in (("2:10:0", "must not be zero"), ("0:1:0.5", "must be positive"),
                          ("1:500:0.5", "at most 200")):
        proc = dm21(["scan", "h2.yaml", "--distance", spec], tmp_path)
        assert proc.returncode == ExitStatus.INPUT_ERROR, _show(proc)
        assert proc.stderr.startswith("dm21: error: --distance: ") and message in proc.stderr
    assert not (tmp_path / "outputs").exists()


def test_scan_xyz_two_functionals_reference_atoms(tmp_path):
    _write(tmp_path, "h2.xyz", "2\nhydrogen\nH 0 0 0\nH 0 0 0.74\n")
    done = dm21lib.scan("h2.xyz", tmp_path, distance="0.74,3", basis="6-31g", grid_level=1,
                        functional="b3lyp,hf", reference_atoms=True, multiplicity=1)
    assert done.exit_status == ExitStatus.SUCCESS, done.progress.text
    doc = done.document
    assert doc["functionals"] == ["b3lyp", "hf"] and len(doc["points"]) == 4
    for name in ("b3lyp", "hf"):
        ref = doc["references"][name]
        assert ref["fixed"]["multiplicity"] == 2 and ref["moving"]["charge"] == 0
        assert ref["limit_energy_hartree"] == pytest.approx(ref["fixed"]["energy_hartree"] * 2, abs=1e-7)
    hf = [p for p in doc["points"] if p["functional"] == "hf"]
    # restricted HF at 3 A lies far above two H atoms (no broken symmetry asked)
    assert hf[1]["relative_energy_hartree"] > 0.1 and hf[0]["relative_energy_hartree"] < -0.1
    assert (tmp_path / "outputs" / "h2" / "hf" / "reference-moving" / "result.json").is_file()


def test_scan_broken_symmetry(tmp_path):
    text = H2_FAST.format(distances="0.74,1.5,4").replace("sto-3g", "6-31g") + \
        "  broken_symmetry: true\n  reference_atoms: true\n"
    _write(tmp_path, "h2.yaml", text)
    done = dm21lib.scan("h2.yaml", tmp_path)
    assert done.exit_status == ExitStatus.SUCCESS, done.progress.text
    doc = done.document
    near, mid, far = doc["points"]
    assert near["guess"] == "default" and near["s_squared"] == pytest.approx(0, abs=1e-6)
    # 1.5 A is beyond 1.5 x (0.31 + 0.31) A: the mixed guess starts there; 4 A continues from
    # it if it stayed broken, else mixes again (a symmetric density would stay symmetric)
    assert mid["guess"] == "broken-symmetry from point at 0.740 A"
    assert far["guess"] == ("point at 1.500 A" if mid["s_squared"] > 0.1
                            else "broken-symmetry from point at 1.500 A")
    assert far["s_squared"] == pytest.approx(1.0, abs=0.02)
    # unrestricted and broken: the curve reaches the two-atom limit
    assert far["relative_energy_hartree"] == pytest.approx(0, abs=2e-3)


def test_scan_not_converged_point_goes_on_exit_4(tmp_path):
    text = H2_FAST.format(distances="0.74,3").replace("sto-3g", "6-31g").replace(
        "grid_level: 1", "grid_level: 1\n  max_cycle: 2\n  max_attempts: 1\n  conv_tol: 1e-12")
    _write(tmp_path, "h2.yaml", text)
    proc = dm21(["scan", "h2.yaml"], tmp_path)
    assert proc.returncode == ExitStatus.NOT_CONVERGED, _show(proc)
    assert proc.stderr.splitlines()[-1].startswith("dm21: error: 2 points: ")
    assert "not converged" in proc.stderr.splitlines()[-1]
    rows = _rows(tmp_path / "outputs" / "h2")
    assert len(rows) == 2 and any(r["status"] == "not-converged" for r in rows)


# ----------------------------------------------------------------------------
# physics: H2+ dissociation, DM21 against the exact one-electron energy
# ----------------------------------------------------------------------------
def test_h2plus_dm21_stays_near_exact_b3lyp_does_not(tmp_path, checkpoints_dir):
    from pyscf import gto, scf

    _write(tmp_path, "h2plus.yaml", """
        molecule:
          xyz: |
            H 0.0 0.0 0.0
            H 0.0 0.0 1.06
          charge: 1
          multiplicity: 2
        basis: 6-31g
        scf:
          grid_level: 2
        outputs:
          molden: false
        scan:
          distances: 4,6
          functionals: [DM21, b3lyp]
        """)
    done = dm21lib.scan("h2plus.yaml", tmp_path, checkpoints=checkpoints_dir)
    assert done.exit_status == ExitStatus.SUCCESS, done.progress.text
    points = done.document["points"]
    for p in points:
        mol = gto.M(atom=f"H 0 0 0; H 0 0 {p['distance_angstrom']}", charge=1, spin=1,
                    basis="6-31g", verbose=0)
        exact = scf.UHF(mol).run(conv_tol=1e-10).e_tot  # one electron: UHF is exact in the basis
        error = p["energy_hartree"] - exact
        p["error"] = error
        assert p["converged"] and p["s_squared"] == pytest.approx(0.75, abs=1e-6)
        if p["functional"] == "DM21":
            assert abs(error) < 3e-3, p   # measured: -0.74 mHa (4 A), -0.63 mHa (6 A)
        else:
            assert error < -0.04, p       # measured: -61.8 mHa (4 A), -71.3 mHa (6 A)


@pytest.mark.parametrize("text, expected", [("2:10:1", 9), ("3:1:0.5", None), ("'2:4:1'", 3),
                                            ("[2, 2.5]", 2), ("2.0, 2.36, 3", 3)])
def test_yaml_ranges_are_not_base_60_numbers(tmp_path, text, expected):
    """YAML 1.1 reads 2:10:1 as the number 7801 (base 60); the scan keeps the text."""
    path = _write(tmp_path, "w.yaml", WATER.format(scan=f"  distances: {text}"))
    if expected is None:
        with pytest.raises(InputError, match=r"w.yaml:9: scan.distances: the step 0.5"):
            load_job(path)
    else:
        assert len(load_job(path).scan.distances) == expected


# ----------------------------------------------------------------------------
# parallel, job arrays, interruption
# ----------------------------------------------------------------------------
H2_WORK = H2_FAST.replace("sto-3g", "6-31g") + "  reference_atoms: true\n"


def _energies(scan_dir: Path) -> dict[tuple[str, str], float]:
    return {(r["functional"], r["distance_angstrom"]): float(r["energy_hartree"]) for r in _rows(scan_dir)}


def test_scan_workers_and_job_array_match_serial(tmp_path):
    _write(tmp_path, "h2.yaml", H2_WORK.format(distances="0.5,1,2,3"))
    serial = dm21lib.scan("h2.yaml", tmp_path, output_dir="serial")
    assert serial.exit_status == ExitStatus.SUCCESS, serial.progress.text
    parallel = dm21(["scan", "h2.yaml", "-o", "parallel", "--workers", "2"], tmp_path)
    assert parallel.returncode == 0, _show(parallel)
    assert "on 2 worker processes, 1 thread(s)" in parallel.stderr
    reference = _energies(tmp_path / "serial")
    for name, energy in _energies(tmp_path / "parallel").items():
        assert energy == pytest.approx(reference[name], abs=1e-8)
    assert {r["guess"] for r in _rows(tmp_path / "parallel")} == {"default"}

    # a job array: --collect before all points exist reports what is missing (exit 4)
    for index in (2, 0):
        proc = dm21(["scan", "h2.yaml", "-o", "array", "--point", index], tmp_path)
        assert proc.returncode == 0, _show(proc)
    assert not (tmp_path / "array" / "scan.csv").exists()
    proc = dm21(["scan", "h2.yaml", "-o", "array", "--collect"], tmp_path)
    assert proc.returncode == ExitStatus.NOT_CONVERGED, _show(proc)
    assert "4 points: 2 converged, 2 missing" in proc.stderr
    for index in (1, 3):
        assert dm21(["scan", "h2.yaml", "-o", "array", "--point", index], tmp_path).returncode == 0
    proc = dm21(["scan", "h2.yaml", "-o", "array", "--collect", "--json"], tmp_path)
    assert proc.returncode == 0, _show(proc)
    doc = json.loads(proc.stdout)
    assert doc["counts"]["converged"] == 4
    assert doc["references"]["b3lyp"]["limit_energy_hartree"] == pytest.approx(
        json.loads((tmp_path / "serial" / "scan.json").read_text())["references"]["b3lyp"]["limit_energy_hartree"],
        abs=1e-8)
    for name, energy in _energies(tmp_path / "array").items():
        assert energy == pytest.approx(reference[name], abs=1e-8)
    assert (tmp_path / "array" / "scan.png").is_file()

    for args, message in ((["--point", "4"], "--point: point 4 does not exist"),
                          (["--point", "1", "--workers", "2"], "--point: --point computes one point"),
                          (["--collect", "--point", "1"], "--collect: --collect computes nothing"),
                          (["--workers", "0"], "--workers: must be at least 1")):
        proc = dm21(["scan", "h2.yaml", "-o", "array", *args], tmp_path)
        assert proc.returncode == ExitStatus.INPUT_ERROR and message in proc.stderr, _show(proc)


def _wait_for(path: Path, text: str, proc, timeout: float = 120) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and text in path.read_text(encoding="utf-8"):
            return
        if proc.poll() is not None:
            raise AssertionError(f"dm21 ended early (exit {proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError(f"{text!r} did not appear in {path}")


def _terminate_dm21_h2_scan(tmp_path, checkpoints_dir, extra_args, waits):
    """Start a 3-point DM21 H2 scan, wait for each (path, text) in turn, send SIGTERM.

    Returns (exit status, stderr, scan directory)."""
    # time to interrupt a point after its log says "grid points": DM21/def2-TZVP on a level-3
    # grid takes 1 to 2 s there (measured; STO-3G on a level-1 grid took 0.25 s, so a point
    # could finish before the signal arrived)
    text = (H2_FAST.format(distances="0.74,1.5,2.5").replace("functional: b3lyp", "functional: DM21")
            .replace("basis: sto-3g", "basis: def2-tzvp").replace("grid_level: 1", "grid_level: 3"))
    _write(tmp_path, "h2.yaml", text)
    scan_dir = tmp_path / "outputs" / "h2"
    # (each text stays once written: all present = each seen in turn)
    conditions = [file_says(scan_dir / rel, expected) for rel, expected in waits]
    status, stderr = signal_when(["scan", "h2.yaml", *extra_args], tmp_path,
                                 lambda: all(holds() for holds in conditions),
                                 env=_env(checkpoints_dir), timeout_s=120)
    return status, stderr, scan_dir


def test_scan_sigterm_keeps_finished_points_and_resumes(tmp_path, checkpoints_dir):
    status, stderr, scan_dir = _terminate_dm21_h2_scan(tmp_path, checkpoints_dir, [], [
        ("scan.log", "[2/3] DM21 1.500 A: computing"),
        ("DM21/point-01.500A/dm21.log", "grid points")])
    assert status == ExitStatus.INTERRUPTED, stderr
    assert stderr.splitlines()[-1].startswith("dm21: error: interrupted by SIGTERM")
    first = scan_dir / "DM21" / "point-00.740A"
    second = scan_dir / "DM21" / "point-01.500A"
    assert json.loads((first / "result.json").read_text())["extras"]["dm21cli"]["status"] == "success"
    assert json.loads((second / "result.json").read_text())["extras"]["dm21cli"]["status"] == "interrupted"
    assert not (scan_dir / "DM21" / "point-02.500A").exists()
    assert [r["index"] for r in _rows(scan_dir)] == ["0"]  # the curve so far
    finished = (first / "result.json").stat().st_mtime_ns

    done = dm21lib.scan("h2.yaml", tmp_path, checkpoints=checkpoints_dir)  # (in this process)
    assert done.exit_status == ExitStatus.SUCCESS, done.progress.text
    assert (first / "result.json").stat().st_mtime_ns == finished
    log = (scan_dir / "scan.log").read_text()
    assert log.count("DM21 0.740 A: computing") == 1 and "DM21 0.740 A: read from disk" in log
    assert log.count("DM21 1.500 A: computing") == 2
    assert "3 points: 3 converged (1 read from disk)" in done.summary


def _worker_ends(proc, timeout: float = 60) -> list:
    """The replies of a worker process until its reply pipe ends (it exited); it is reaped."""
    replies = []
    while True:
        assert proc.results.poll(timeout), "the worker process did not end"
        reply = proc.receive()
        if reply is None:
            proc.reap()
            return replies
        replies.append(reply)


@pytest.mark.parametrize("when", ["idle", "starting", "no more points"])
def test_scan_worker_process_ends(when, capfd):
    """A worker process ends at once when signalled idle or while starting, or at the end of its
    tasks; a signal that arrives while it starts is held until its handler is in place."""
    import signal

    from dm21cli.jobs.scan.workers import _WorkerProcess

    # a worker keeps a SIGINT its scan ignores ignored (as nohup's children do); the tests may
    # run with SIGINT ignored (a background job of a non-interactive shell), so the scan here
    # handles it, as an interactive scan does
    saved = signal.signal(signal.SIGINT, signal.default_int_handler)
    proc = _WorkerProcess(1)
    try:
        proc.start()
        if when == "starting":
            proc.kill(signal.SIGINT)  # at once: Python has not even started
            assert _worker_ends(proc) == []
        else:
            assert proc.results.poll(60) and proc.receive() == ("ready", proc.pid)
            if when == "idle":
                proc.kill(signal.SIGTERM)
            else:
                proc.close_tasks()
            assert _worker_ends(proc) == []
    finally:
        signal.signal(signal.SIGINT, saved)
        proc.kill(signal.SIGKILL)
        proc.reap()
        proc.close()
    expected = {"idle": 128 + signal.SIGTERM, "starting": 128 + signal.SIGINT, "no more points": 0}
    assert proc.returncode == expected[when]
    assert proc.stopped_by_signal() == (when != "no more points")
    assert "Traceback" not in capfd.readouterr().err


def _dm21_h2(distances: str, functionals: str | None = None) -> str:
    """DM21/def2-TZVP H2 on a level-5 grid: several seconds of SCF after the log's 'grid points'."""
    text = (H2_FAST.format(distances=distances).replace("functional: b3lyp", "functional: DM21")
            .replace("basis: sto-3g", "basis: def2-tzvp").replace("grid_level: 1", "grid_level: 5"))
    return text + (f"  functionals: [{functionals}]\n" if functionals else "")


def _wait_for_glob(folder: Path, pattern: str, text: str, proc, timeout: float = 180) -> Path:
    """Wait until one file matching `pattern` under `folder` holds `text` (either point layout)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in folder.glob(pattern):
            if text in path.read_text(encoding="utf-8", errors="replace"):
                return path
        if proc.poll() is not None:
            raise AssertionError(f"dm21 ended early (exit {proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError(f"{text!r} did not appear in {folder}/{pattern}")


def _group_members(pgid: int) -> list[int]:
    """The processes of process group `pgid` that still run (zombies waiting for init do not)."""
    if not Path("/proc/self/stat").is_file():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, _ppid, pgrp = text[text.rindex(")") + 2:].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append(int(stat.parent.name))
    return members


def _signal_parallel_scan(tmp_path, checkpoints_dir, job: str, waits, how: str):
    """Run `dm21 scan h2.yaml --workers 2` in its own session; after each (glob, text) of `waits`
    has appeared, signal it: "term" SIGTERM to the main process, "term-twice" two of them 0.3 s
    apart, "int-group" SIGINT to the whole process group (Ctrl-C on a terminal), "kill" SIGKILL
    to the main process.

    Returns (exit status, stderr, scan directory, seconds from the signal to the exit).  Fails if
    the scan does not end within 60 s of the signal, or if any of its processes outlives it."""
    import signal
    import time

    _write(tmp_path, "h2.yaml", job)
    proc = subprocess.Popen([sys.executable, "-m", "dm21cli", "scan", "h2.yaml", "--workers", "2"],
                            cwd=tmp_path, env=_env(checkpoints_dir), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    scan_dir = tmp_path / "outputs" / "h2"
    try:
        for pattern, text in waits:
            _wait_for_glob(scan_dir, pattern, text, proc)
        t0 = time.monotonic()
        if how == "int-group":
            os.killpg(proc.pid, signal.SIGINT)
        elif how == "kill":
            proc.kill()
        else:
            proc.send_signal(signal.SIGTERM)
            if how == "term-twice":
                time.sleep(0.3)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"dm21 scan --workers 2 still runs 60 s after the signal ({how})") from None
        seconds = time.monotonic() - t0
        # no worker outlives the scan
        deadline = time.monotonic() + 10
        while _group_members(proc.pid):
            assert time.monotonic() < deadline, f"worker processes outlived dm21 scan: {_group_members(proc.pid)}"
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, stderr, scan_dir, seconds


def _statuses(scan_dir: Path) -> dict[str, str]:
    return {str(p.parent.relative_to(scan_dir)): json.loads(p.read_text())["extras"]["dm21cli"]["status"]
            for p in scan_dir.glob("*/point-*/result.json")}


def _assert_interrupted(code, stderr, scan_dir, seconds):
    assert code == ExitStatus.INTERRUPTED, stderr
    assert stderr.splitlines()[-1].startswith("dm21: error: interrupted"), stderr
    assert "Traceback" not in stderr, stderr
    assert seconds < 30, seconds
    assert not list(scan_dir.glob("*/point-*/.running"))      # no point left looking busy
    assert not list(scan_dir.glob("*/.point-*.old-*"))        # nothing half-overwritten
    assert "interrupted: finished points are kept" in (scan_dir / "scan.log").read_text()


@pytest.mark.parametrize("how", ["term", "int-group", "term-twice"])
def test_scan_workers_interrupted_while_both_busy(tmp_path, checkpoints_dir, how):
    code, stderr, scan_dir, seconds = _signal_parallel_scan(
        tmp_path, checkpoints_dir, _dm21_h2("0.74,0.8,0.9"),
        [("DM21/point-*0.740A/dm21.log", "grid points"), ("DM21/point-*0.800A/dm21.log", "grid points")],
        how)
    _assert_interrupted(code, stderr, scan_dir, seconds)
    statuses = _statuses(scan_dir)
    if how == "term-twice":  # the second signal may stop a worker before it writes its status
        assert set(statuses.values()) <= {"interrupted"}, statuses
    else:
        assert list(statuses.values()) == ["interrupted", "interrupted"], statuses  # 0.74 and 0.8 A
    assert not list(scan_dir.glob("DM21/point-*0.900A"))      # the queued point never started
    assert _rows(scan_dir) == []                               # the curve files exist, empty
    assert json.loads((scan_dir / "scan.json").read_text())["counts"]["finished"] == 0
    if how == "term":
        proc = dm21(["scan", "h2.yaml", "--workers", "2"], tmp_path, env=_env(checkpoints_dir))
        assert proc.returncode == 0, _show(proc)
        assert "3 points: 3 converged" in proc.stderr


def test_scan_workers_stop_when_the_scan_process_is_killed(tmp_path, checkpoints_dir):
    """SIGKILL to the main process: its workers notice, mark their points interrupted and end."""
    import signal

    code, stderr, scan_dir, seconds = _signal_parallel_scan(
        tmp_path, checkpoints_dir, _dm21_h2("0.74,0.8,0.9"),
        [("DM21/point-*0.740A/dm21.log", "grid points"), ("DM21/point-*0.800A/dm21.log", "grid points")],
        "kill")
    assert code == -signal.SIGKILL, stderr
    assert list(_statuses(scan_dir).values()) == ["interrupted", "interrupted"], _statuses(scan_dir)
    assert not list(scan_dir.glob("*/point-*/.running"))


@pytest.mark.parametrize("how", ["term", "int-group"])
def test_scan_workers_interrupted_with_one_worker_idle(tmp_path, checkpoints_dir, how):
    """HF finishes long before DM21: its worker waits idle when the signal comes (it hung)."""
    code, stderr, scan_dir, seconds = _signal_parallel_scan(
        tmp_path, checkpoints_dir, _dm21_h2("0.74", functionals="hf, DM21"),
        [("scan.log", "hf 0.740 A: success"), ("DM21/point-*/dm21.log", "grid points")], how)
    _assert_interrupted(code, stderr, scan_dir, seconds)
    statuses = {k.split("/")[0]: v for k, v in _statuses(scan_dir).items()}
    assert statuses == {"hf": "success", "DM21": "interrupted"}, statuses
    assert [(r["functional"], r["status"]) for r in _rows(scan_dir)] == [("hf", "success")]
    if how == "term":
        finished = {k: v for k, v in _result_mtimes(scan_dir).items() if k.startswith("hf/")}
        proc = dm21(["scan", "h2.yaml", "--workers", "2"], tmp_path, env=_env(checkpoints_dir))
        assert proc.returncode == 0, _show(proc)
        assert "2 points: 2 converged (1 read from disk)" in proc.stderr
        assert {k: v for k, v in _result_mtimes(scan_dir).items() if k.startswith("hf/")} == finished


@pytest.mark.parametrize("how", ["term", "int-group"])
def test_scan_workers_interrupted_at_start_up(tmp_path, checkpoints_dir, how):
    """The signal comes while the worker processes are still starting (importing)."""
    code, stderr, scan_dir, seconds = _signal_parallel_scan(
        tmp_path, checkpoints_dir, H2_FAST.format(distances="0.74,1.5,2.5,3.5"),
        [("scan.log", "points on 2 worker processes")], how)
    _assert_interrupted(code, stderr, scan_dir, seconds)
    # (a point that finished before the signal reached its worker is kept and in the curve)
    statuses = {k.split("/")[1]: v for k, v in _statuses(scan_dir).items()}
    assert set(statuses.values()) <= {"interrupted", "success"}, statuses
    assert sorted(Path(r["directory"]).name for r in _rows(scan_dir)) == \
        sorted(k for k, v in statuses.items() if v == "success")
    if how == "term":
        proc = dm21(["scan", "h2.yaml", "--workers", "2"], tmp_path)
        assert proc.returncode == 0, _show(proc)
        assert "4 points: 4 converged" in proc.stderr


def test_scan_dask_local_cluster_matches_serial(tmp_path):
    distributed = pytest.importorskip("distributed")

    _write(tmp_path, "h2.yaml", H2_WORK.format(distances="0.5,1,3"))
    serial = dm21lib.scan("h2.yaml", tmp_path, output_dir="serial")
    assert serial.exit_status == ExitStatus.SUCCESS, serial.progress.text
    # in-process workers (processes=False) need tcp named explicitly to listen on loopback
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        proc = dm21(["scan", "h2.yaml", "-o", "dask", "--dask", address, "--json"], tmp_path)
        assert proc.returncode == 0, _show(proc)
        assert "3 points on the Dask scheduler" in proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["counts"]["converged"] == 3
        # the worker wrote into the scan directory of the command, not its own cwd
        assert (tmp_path / "dask" / "b3lyp" / "point-03.000A" / "result.json").is_file()
        reference = _energies(tmp_path / "serial")
        for name, energy in _energies(tmp_path / "dask").items():
            assert energy == pytest.approx(reference[name], abs=1e-8)
        again = dm21(["scan", "h2.yaml", "-o", "dask", "--dask", address], tmp_path)
        assert again.returncode == 0 and "(3 read from disk)" in again.stderr, _show(again)
    proc = dm21(["scan", "h2.yaml", "-o", "dask2", "--dask", "tcp://127.0.0.1:9", "--workers", "2"],
                tmp_path)
    assert proc.returncode == ExitStatus.INPUT_ERROR and "--dask: --dask and --workers" in proc.stderr


# ----------------------------------------------------------------------------
# issue 22: a running scan holds its directory
# ----------------------------------------------------------------------------
#: run in the first scan's process: its first point waits for the file "go"
WAIT_FOR_GO = """
import time
from pathlib import Path
from dm21cli.jobs.scan import run as scan_run
_real = scan_run.serial_point
def serial_point(*args, **kwargs):
    while not Path("go").exists():
        time.sleep(0.05)
    return _real(*args, **kwargs)
scan_run.serial_point = serial_point
"""


def test_a_second_scan_into_the_folder_of_a_running_scan_is_refused(tmp_path):
    """`dm21 scan --overwrite` into the folder of a running scan used to run along with it
    (both computing the same points); now it is refused like `dm21 run`'s, exit 5, and so
    is a --point task.  The running scan is not disturbed and ends as usual."""
    _write(tmp_path, "h2.yaml", H2_FAST.format(distances="0.7,0.8"))
    code = WAIT_FOR_GO + textwrap.dedent("""
        import sys
        sys.argv = ["dm21", "scan", "h2.yaml"]
        from dm21cli.__main__ import main
        main()
        """)
    first = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    scan_dir = tmp_path / "outputs" / "h2"
    try:
        _wait_for(scan_dir / "scan.log", "scan of H2", first)
        for extra in (["--overwrite"], ["--point", "0"]):
            second = dm21(["scan", "h2.yaml", *extra], tmp_path)
            assert second.returncode == ExitStatus.OUTPUT_EXISTS, _show(second)
            assert second.stderr.strip() == (
                f"dm21: error: output directory outputs/h2 is in use by a running job (pid "
                f"{first.pid} on {os.uname().nodename}); wait for it, or remove "
                f"outputs/h2/.running if that process is not dm21"), _show(second)
        (tmp_path / "go").write_text("")
        _, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr
    assert "2 points: 2 converged" in stderr
    assert not (scan_dir / ".running").exists()
    assert (scan_dir / ".dm21-output").is_file()
