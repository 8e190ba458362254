"""``dm21 scan --angle`` and ``--dihedral``: angle and dihedral scans, rigid and relaxed.

The geometry (rigid rotation, the moving fragment, the grammar of the values, point names)
is checked without computing; the scans run B3LYP or HF with STO-3G (grid level 1) on
water's angle and on HOOH's dihedral, in this process through the library calls of
``dm21 scan`` (`dm21lib`), and as a user runs them, in a subprocess, for what is the command
line's (exit statuses, the job array, worker processes, Dask).  Angles and
dihedrals are measured here with formulas of the test's own (`_angle`, `_dihedral`), not
with dm21cli's.
"""

from __future__ import annotations

import json
import math

import dm21lib
import numpy as np
import pytest
from dm21proc import dm21
from dm21proc import show as _show
from dm21proc import write as _write
from hypothesis import given, settings
from hypothesis import strategies as st
from test_scan import _rows

from dm21cli.core.errors import ExitStatus, InputError
from dm21cli.core.units import BOHR_ANGSTROM
from dm21cli.io.inputs.load import load_job
from dm21cli.io.inputs.scan_model import ANGLES, DIHEDRALS, parse_values
from dm21cli.io.outputs.qcschema import fields
from dm21cli.jobs.scan.geometry import rotated_coords
from dm21cli.jobs.scan.plan import degree_dirname, plan_scan

JOB = """\
molecule:
  xyz: |
{xyz}
basis: sto-3g
functional: {functional}
scf:
  grid_level: 1
outputs:
  molden: false
scan:
{scan}
"""


def _scan_line(natm: int) -> int:
    """The line of the scan section's first key in a `JOB` of a molecule of `natm` atoms."""
    return 10 + natm


#: water as in inputs/water.yaml: r(OH) 0.9578 A, HOH 104.48 degrees
WATER = """\
    O 0.0 0.0 0.1173
    H 0.0 0.7572 -0.4692
    H 0.0 -0.7572 -0.4692"""
#: HOOH: r(OO) 1.45 A, r(OH) 0.97 A, HOO 100 degrees, dihedral H-O-O-H 115 degrees
HOOH = """\
    H   0.513263   0.893439  -0.805661
    O   0.000000   0.725000   0.000000
    O   0.000000  -0.725000   0.000000
    H   0.513263  -0.893439   0.805661"""
#: acetylene: every dihedral is undefined
ACETYLENE = """\
    H 0 0 -1.66
    C 0 0 -0.60
    C 0 0 0.60
    H 0 0 1.66"""
#: three carbons in a ring with two H atoms: the C1-C2 bond is in the ring
RING = """\
    C 0 0 0
    C 1.51 0 0
    C 0.755 1.308 0
    H -0.55 -0.55 0.75
    H 2.06 -0.55 0.75"""


def _job(tmp_path, xyz: str, scan: str, functional: str = "b3lyp", name: str = "w.yaml"):
    return _write(tmp_path, name, JOB.format(xyz=xyz, functional=functional, scan=scan))


def _angle(x, i, j, k) -> float:
    u, v = x[i] - x[j], x[k] - x[j]
    return math.degrees(math.acos(u @ v / np.linalg.norm(u) / np.linalg.norm(v)))


def _dihedral(x, i, j, k, l) -> float:
    """IUPAC's dihedral, in (-180, 180]: the angle between the planes, signed by the
    direction of turn seen along J->K."""
    b = x[k] - x[j]
    b = b / np.linalg.norm(b)
    v = (x[i] - x[j]) - ((x[i] - x[j]) @ b) * b  # I and L projected onto the plane normal to J-K
    w = (x[l] - x[k]) - ((x[l] - x[k]) @ b) * b
    return math.degrees(math.atan2(np.cross(v, w) @ b, v @ w))


def _same_dihedral(a: float, b: float, tol: float) -> bool:
    return abs((a - b + 180) % 360 - 180) < tol


def _geometry(point_dir) -> np.ndarray:
    result = fields(json.loads((point_dir / "result.json").read_text()))
    return np.array(result["molecule"]["geometry_bohr"]) * BOHR_ANGSTROM


def _distances(x) -> np.ndarray:
    return np.linalg.norm(x[:, None] - x[None, :], axis=-1)


# ----------------------------------------------------------------------------
# values and names
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("grammar, text, expected", [
    (ANGLES, "90:120:10", [90, 100, 110, 120]),
    (ANGLES, "104.5", [104.5]),
    (ANGLES, "179.9,0.1", [0.1, 179.9]),
    (DIHEDRALS, "-180:180:60", [0, 60, 120, 180, 240, 300]),  # -180 and 180: one point
    (DIHEDRALS, "0:360:90", [0, 90, 180, 270]),  # 0 and 360: one point
    (DIHEDRALS, "-60,60", [60, 300]),
    (DIHEDRALS, "-0.5", [359.5]),
])
def test_parse_angles_and_dihedrals(grammar, text, expected):
    assert parse_values(text, grammar) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("grammar, text, message", [
    (ANGLES, "0,90", "angles must lie between 0 and 180 degrees (both excluded), got 0"),
    (ANGLES, "90:180:45", "got 180"),
    (ANGLES, "100,100.0005", "closer than 0.001 degrees"),
    (DIHEDRALS, "361", "dihedrals must lie between -180 and 360 degrees, got 361"),
    (DIHEDRALS, "-180.5", "got -180.5"),
    (DIHEDRALS, "10,370", "got 370"),
    (DIHEDRALS, "359.9996,0", "dihedrals 359.9996 and 0 are closer than 0.001 degrees (360 degrees on"),
    (DIHEDRALS, "-60.0004,300", ("dihedrals 299.9996 and 300 (in 0 to 360; given as -60.0004, 300) "
                                 "are closer than 0.001")),
])
def test_parse_angles_and_dihedrals_errors(grammar, text, message):
    with pytest.raises(ValueError) as info:
        parse_values(text, grammar)
    assert message in str(info.value), str(info.value)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(-180, 360, allow_nan=False), min_size=2, max_size=30))
def test_dihedral_point_names_are_unique_and_sort_by_value(raw):
    """Dihedrals (kept in [0, 360), at least 0.001 degrees apart) never share a directory
    name, and a listing of the names is in the order of the values: no sign to sort."""
    try:
        values = parse_values(raw, DIHEDRALS)
    except ValueError:
        return
    names = [degree_dirname(v) for v in values]
    assert len(set(names)) == len(names), names
    assert names == sorted(names)
    assert all(0 <= v < 360 for v in values)


def test_point_names():
    assert [degree_dirname(v) for v in (104.5, 0, 5.25, 359.9994)] == [
        "point-104.500deg", "point-000.000deg", "point-005.250deg", "point-359.999deg"]


# ----------------------------------------------------------------------------
# geometry
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_rigid_rotation_sets_the_coordinate_and_keeps_the_rest(seed):
    """The moving fragment turns as a whole: every distance inside it and inside the rest is
    what it was (1e-10 A), and the angle or dihedral is the one asked for (1e-8 degrees)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(8, 3)) * 1.5
    moving, fixed = [2, 3, 5, 7], [0, 1, 4, 6]
    for atoms, values, measure in (((0, 1, 2, 3), (-120.0, 0.0, 60.0, 180.0, 300.0), _dihedral),
                                   ((0, 1, 2), (1.0, 45.0, 104.5, 179.0), _angle)):
        for value in values:
            y = rotated_coords(x, atoms, moving, value % 360 if len(atoms) == 4 else value)
            got = measure(y, *atoms)
            assert _same_dihedral(got, value, 1e-8), (atoms, value, got)
            for part in (moving, fixed):
                assert np.abs(_distances(y[part]) - _distances(x[part])).max() < 1e-10
            assert np.array_equal(y[fixed], x[fixed])


def test_straight_angle_bends_in_a_fixed_plane():
    """Collinear I-J-K (an angle of 180 degrees at the start) has no plane: it still bends
    to each angle asked for, the same way for every value."""
    x = np.array([[-1.0, 0, 0], [0, 0, 0], [1.2, 0, 0]])
    bent = [rotated_coords(x, (0, 1, 2), [2], a) for a in (60.0, 120.0)]
    assert [_angle(y, 0, 1, 2) for y in bent] == pytest.approx([60, 120], abs=1e-9)
    normals = [np.cross(y[0] - y[1], y[2] - y[1]) for y in bent]
    assert abs(normals[0] @ normals[1]) == pytest.approx(np.linalg.norm(normals[0]) * np.linalg.norm(normals[1]))


def test_plan_default_fragment_walk_and_definition(tmp_path):
    """The atoms bonded to K once J-K is cut move (HOOH: O2 and its H; water's angle: the
    H); the walk starts at the value nearest the start geometry's, for a dihedral the
    short way round (350 degrees is 10 from 0)."""
    path = _job(tmp_path, HOOH, "  atoms: [1, 2, 3, 4]\n  dihedrals: 0:330:30")
    plan = plan_scan(load_job(path), output_dir=str(tmp_path / "out"))
    assert plan.moving == [2, 3] and plan.atoms == (0, 1, 2, 3)
    assert plan.start_degree == pytest.approx(115.0, abs=1e-4)
    assert plan.values[plan.order[0][0]] == 120 and plan.order[0][1] is None
    assert plan.definition["kind"] == "dihedral" and plan.definition["fragment"] == [3, 4]
    for pt in plan.points["b3lyp"]:
        assert pt.directory.name == degree_dirname(pt.value)
        xyz = np.array([[float(v) for v in line.split()[1:]] for line in
                        pt.data["molecule"]["xyz"].splitlines()])
        assert _same_dihedral(_dihedral(xyz, 0, 1, 2, 3), pt.value, 1e-8)
    # 350 degrees at the start: the walk starts at 0, not at 330
    x = load_job(path).molecule.coords_angstrom()
    _job(tmp_path, "\n".join(f"    {s} {a:.10f} {b:.10f} {c:.10f}" for s, (a, b, c) in
                             zip("HOOH", rotated_coords(x, (0, 1, 2, 3), [2, 3], 350.0))),
         "  atoms: [1, 2, 3, 4]\n  dihedrals: 0:330:30", name="h350.yaml")
    plan = plan_scan(load_job(tmp_path / "h350.yaml"), output_dir=str(tmp_path / "out2"))
    assert plan.values[plan.order[0][0]] == 0
    # water's angle H-O-H: the second H moves; the scan's own fragment is kept
    plan = plan_scan(load_job(_job(tmp_path, WATER, "  atoms: [2, 1, 3]\n  angles: 90,120")),
                     output_dir=str(tmp_path / "w"))
    assert plan.moving == [2] and plan.start_degree == pytest.approx(104.48, abs=0.01)
    path = _job(tmp_path, HOOH, "  atoms: [1, 2, 3, 4]\n  fragment: [4]\n  dihedrals: 90")
    assert plan_scan(load_job(path), output_dir=str(tmp_path / "f")).moving == [3]


def test_records_hold_the_value_measured_in_the_computed_geometry(tmp_path):
    """A point's angle_degree / dihedral_degree is measured in the geometry of its
    result.json (a relaxed point's optimised one), not copied from the value asked for; a
    dihedral as the representative nearest that value (359.9996 for 0 is -0.0004)."""
    from dm21cli.jobs.scan.plan import COORDINATES, ScanPoint
    from dm21cli.jobs.scan.records import make_record

    x = load_job(_job(tmp_path, HOOH, "  atoms: [1, 2, 3, 4]\n  dihedrals: 0")).molecule.coords_angstrom()

    def record(kind, atoms, value, geometry):
        point = ScanPoint("b3lyp", 0, value, tmp_path, {}, "h", COORDINATES[kind], atoms=atoms)
        result = {"status": "success", "converged": True, "return_energy": -1.0,
                  "molecule": {"geometry_bohr": None if geometry is None else
                               (np.asarray(geometry) / BOHR_ANGSTROM).tolist()}}
        return make_record(point, result, [2, 3], reused=False, guess="default")

    turned = rotated_coords(x, (0, 1, 2, 3), [2, 3], 359.9996)
    assert record("dihedral", (0, 1, 2, 3), 0.0, turned)["dihedral_degree"] == pytest.approx(-0.0004, abs=1e-7)
    assert record("dihedral", (0, 1, 2, 3), 115.0, x)["dihedral_degree"] == pytest.approx(115.0, abs=1e-4)
    bent = rotated_coords(x, (0, 1, 2), [2, 3], 97.25)
    assert record("angle", (0, 1, 2), 100.0, bent)["angle_degree"] == pytest.approx(97.25, abs=1e-8)
    assert record("angle", (0, 1, 2), 100.0, None)["angle_degree"] == 100.0  # no geometry: as asked


# ----------------------------------------------------------------------------
# bad input: exit 2 before anything is computed, one line naming file:line: field
# ----------------------------------------------------------------------------
SCAN = _scan_line(3)  # water's scan keys start here
SCAN4 = _scan_line(4)


@pytest.mark.parametrize("xyz, scan, args, needle", [
    (WATER, "  atoms: [2, 1, 5]\n  angles: 100", [],
     f"w.yaml:{SCAN}: scan.atoms[2]: atom 5 does not exist (the molecule has 3 atoms)"),
    (WATER, "  atoms: [2, 1, 2]\n  angles: 100", [],
     f"w.yaml:{SCAN}: scan.atoms[2]: atom 2 appears twice in scan.atoms"),
    (WATER, "  atoms: [2, 1, 3]\n  angles: 90,180", [],
     (f"w.yaml:{SCAN + 1}: scan.angles: angles must lie between 0 and 180 degrees (both "
      f"excluded), got 180")),
    (WATER, "  angles: 100", [],
     (f"w.yaml:{SCAN}: scan.angles: an angle scan needs its 3 atoms I J K (J the vertex) in "
      f"scan.atoms")),
    (WATER, "  atoms: [2, 1, 3]\n  fragment: [1, 3]\n  angles: 100", [],
     (f"w.yaml:{SCAN + 1}: scan.fragment[0]: the moving fragment must not contain atom 1 (J of "
      f"the angle 2-1-3)")),
    (WATER, "  atoms: [2, 1, 3]\n  angles: 100\n  reference_atoms: true", [],
     (f"w.yaml:{SCAN + 2}: scan.reference_atoms: reference_atoms is for distance scans, not with "
      f"scan.angles")),
    (WATER, "  distances: 1,2", ["--angle", "2", "1", "3", "100", "--distance", "1"],
     "--distance: --distance and --angle exclude each other (one kind of scan)"),
    (WATER, "  distances: 1,2", ["--angle", "2", "1", "4", "100"],
     "--angle: atom 4 does not exist (the molecule has 3 atoms)"),
    (WATER, "  distances: 1,2", ["--angle", "2", "1", "3", "100,178", "--relax"],
     ("--angle: a relaxed scan holds its angle in geomeTRIC, which cannot hold one below 10 or "
      "above 175 degrees (nearly linear): 178")),
    (HOOH, "  atoms: [1, 2, 3, 4]\n  dihedrals: 60", ["--dihedral", "1", "2", "3", "4", "-60",
                                                      "--electrons", "17,18"],
     "--dihedral: --dihedral and --electrons exclude each other (one kind of scan)"),
    (HOOH, ("  atoms: [1, 2, 3, 4]\n  dihedrals: 60\n  relax: true\nopt:\n  constraints:\n"
            "    freeze: [dihedral 4 3 2 1]"), [],
     (f"w.yaml:{SCAN4 + 5}: opt.constraints.freeze[0]: dihedral 4 3 2 1 is the relaxed scan's "
      f"own dihedral (scan.atoms on line {SCAN4}), which the scan holds at each of its "
      f"dihedrals: remove this constraint")),
    (ACETYLENE, "  atoms: [1, 2, 3, 4]\n  dihedrals: 0,90", [],
     (f"w.yaml:{SCAN4}: scan.atoms: the dihedral 1-2-3-4 is not defined: atoms 1-2-3 are "
      f"collinear (180.00 degrees")),
    (RING, "  atoms: [4, 1, 2, 5]\n  dihedrals: 0,90", [],
     (f"w.yaml:{_scan_line(5)}: scan.atoms: atom 2 reaches atom 1 through other atoms (the bond "
      f"1-2 is in a ring, or the two are not bonded): no side of it can be rotated alone; list "
      f"the atoms to move in scan.fragment")),
])
def test_bad_angle_and_dihedral_scans_exit_2_before_computing(tmp_path, xyz, scan, args, needle):
    _job(tmp_path, xyz, scan)
    proc = dm21(["scan", "w.yaml", *args], tmp_path)
    assert proc.returncode == ExitStatus.INPUT_ERROR == 2, _show(proc)
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("dm21: error: ") and needle in line, line
    assert not (tmp_path / "outputs").exists()


def test_ring_scan_runs_with_its_own_fragment(tmp_path):
    """The ring refused above scans once scan.fragment names the atom to turn."""
    path = _job(tmp_path, RING, "  atoms: [4, 1, 2, 5]\n  fragment: [5]\n  dihedrals: 0,90")
    plan = plan_scan(load_job(path), output_dir=str(tmp_path / "out"))
    assert plan.moving == [4]
    with pytest.raises(InputError, match="scan.atoms: atom 2 reaches atom 1"):
        plan_scan(load_job(_job(tmp_path, RING, "  atoms: [4, 1, 2, 5]\n  dihedrals: 0,90",
                                name="r.yaml")))


# ----------------------------------------------------------------------------
# scans
# ----------------------------------------------------------------------------
def test_rigid_water_angle_scan_outputs_resume_points_and_workers(tmp_path):
    _job(tmp_path, WATER, "  distances: 1")  # the option's kind replaces the file's
    done = dm21lib.scan("w.yaml", tmp_path, angle=("2", "1", "3", "90,104.5,120"), output_dir="sc")
    assert done.exit_status == ExitStatus.SUCCESS, done.progress.text
    assert "3 points: 3 converged" in done.summary
    assert done.table.splitlines()[0].split()[:3] == ["functional", "angle/deg", "E/Ha"]
    scan_dir = tmp_path / "sc"
    rows = _rows(scan_dir)
    assert "angle_degree" in rows[0] and "distance_angstrom" not in rows[0]
    assert [float(r["angle_degree"]) for r in rows] == pytest.approx([90, 104.5, 120], abs=1e-6)
    # the walk starts at 104.5 (the job's 104.48 degrees) and goes outward
    assert [r["guess"] for r in rows] == ["point at 104.500 deg", "default", "point at 104.500 deg"]
    assert sorted(p.name for p in (scan_dir / "b3lyp").iterdir()) == [
        "point-090.000deg", "point-104.500deg", "point-120.000deg"]
    start = load_job(tmp_path / "w.yaml").molecule.coords_angstrom()
    energies = []
    for r in rows:
        x = _geometry(scan_dir / "b3lyp" / degree_dirname(float(r["angle_degree"])))
        assert _angle(x, 1, 0, 2) == pytest.approx(float(r["angle_degree"]), abs=1e-6)
        for a, b in ((0, 1), (0, 2)):  # both O-H bonds as they were
            assert abs(np.linalg.norm(x[a] - x[b]) - np.linalg.norm(start[a] - start[b])) < 1e-10
        assert np.abs(x[:2] - start[:2]).max() < 1e-10  # O and the first H did not move
        energies.append(float(r["energy_hartree"]))
    assert energies[1] < min(energies[0], energies[2])
    assert [float(r["relative_energy_hartree"]) for r in rows][1] == 0.0
    doc = json.loads((scan_dir / "scan.json").read_text())
    assert (doc["kind"], doc["atoms"], doc["fragment"], doc["angles_degree"]) == \
        ("angle", [2, 1, 3], [3], [90, 104.5, 120])
    assert doc["start_degree"] == pytest.approx(104.48, abs=0.01)
    assert (scan_dir / "scan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    again = dm21lib.scan("w.yaml", tmp_path, angle=("2", "1", "3", "90,104.5,120"), output_dir="sc")
    assert again.exit_status == ExitStatus.SUCCESS and "(3 read from disk)" in again.summary, \
        again.progress.text
    # the command line: a job array (one point per task, then the curve from disk), workers
    for k in (0, 1):
        proc = dm21(["scan", "w.yaml", "--angle", "2", "1", "3", "90,120", "-o", "arr",
                     "--point", str(k)], tmp_path)
        assert proc.returncode == 0, _show(proc)
    proc = dm21(["scan", "w.yaml", "--angle", "2", "1", "3", "90,120", "-o", "arr", "--collect"],
                tmp_path)
    assert proc.returncode == 0 and "2 points: 2 converged (2 read from disk)" in proc.stderr, _show(proc)
    proc = dm21(["scan", "w.yaml", "--angle", "2", "1", "3", "90,120", "-o", "par", "--workers", "2"],
                tmp_path)
    assert proc.returncode == 0, _show(proc)
    serial = {r["angle_degree"]: float(r["energy_hartree"]) for r in rows}
    for source in ("arr", "par"):
        for r in _rows(tmp_path / source):
            assert float(r["energy_hartree"]) == pytest.approx(serial[r["angle_degree"]], abs=1e-7)


def test_rigid_hooh_dihedral_scan_is_symmetric(tmp_path):
    """HOOH turned about O-O (HF: no grid): -120 is kept as 240, the mirror image of 120,
    with the same energy; only the dihedral changes."""
    _job(tmp_path, HOOH, "  atoms: [1, 2, 3, 4]\n  dihedrals: 0,90", functional="hf")
    done = dm21lib.scan("w.yaml", tmp_path, dihedral=("1", "2", "3", "4", "-120,0,120,180"),
                        output_dir="sc")
    assert done.exit_status == ExitStatus.SUCCESS, done.progress.text
    scan_dir = tmp_path / "sc"
    rows = _rows(scan_dir)
    assert [float(r["dihedral_degree"]) for r in rows] == [0, 120, 180, 240]
    assert sorted(p.name for p in (scan_dir / "hf").iterdir()) == [
        "point-000.000deg", "point-120.000deg", "point-180.000deg", "point-240.000deg"]
    assert rows[1]["guess"] == "default"  # 120 is nearest the start's 115 degrees
    start = load_job(tmp_path / "w.yaml").molecule.coords_angstrom()
    energy = {}
    for r in rows:
        value = float(r["dihedral_degree"])
        x = _geometry(scan_dir / "hf" / degree_dirname(value))
        assert _same_dihedral(_dihedral(x, 0, 1, 2, 3), value, 1e-6)
        assert np.abs(_distances(x[[2, 3]]) - _distances(start[[2, 3]])).max() < 1e-10
        assert np.abs(_distances(x[:3]) - _distances(start[:3])).max() < 1e-10
        assert _angle(x, 1, 2, 3) == pytest.approx(_angle(start, 1, 2, 3), abs=1e-8)
        energy[value] = float(r["energy_hartree"])
    assert energy[120] == pytest.approx(energy[240], abs=1e-8)  # mirror images
    assert energy[0] > max(energy[120], energy[180]) + 0.01  # the cis barrier, the highest
    assert json.loads((scan_dir / "scan.json").read_text())["dihedrals_degree"] == [0, 120, 180, 240]


def test_relaxed_hooh_dihedral_scan_holds_the_dihedral(tmp_path):
    """Each point optimised with the dihedral frozen (geomeTRIC's 'dihedral 1 2 3 4'), from
    the rigidly turned geometry: the dihedral stays to 1e-3 degrees, the rest relaxes, and
    the energy lies below the rigid point's."""
    _job(tmp_path, HOOH, "  atoms: [1, 2, 3, 4]\n  dihedrals: 60,180")
    rigid = dm21lib.scan("w.yaml", tmp_path, output_dir="rigid")
    assert rigid.exit_status == ExitStatus.SUCCESS, rigid.progress.text
    relaxed = dm21lib.scan("w.yaml", tmp_path, output_dir="relaxed", relax=True)
    assert relaxed.exit_status == ExitStatus.SUCCESS, relaxed.progress.text
    rows = _rows(tmp_path / "relaxed")
    assert [float(r["dihedral_degree"]) for r in rows] == pytest.approx([60, 180], abs=1e-3)
    oo = []
    for r, rigid_row, value in zip(rows, _rows(tmp_path / "rigid"), (60.0, 180.0)):
        point = tmp_path / "relaxed" / "b3lyp" / degree_dirname(value)
        result = fields(json.loads((point / "result.json").read_text()))
        assert result["optimization"]["converged"] and int(r["opt_steps"]) >= 2
        assert result["optimization"]["constraints"]["freeze"] == ["dihedral 1 2 3 4"]
        x = _geometry(point)
        assert _same_dihedral(_dihedral(x, 0, 1, 2, 3), value, 1e-3)
        assert _same_dihedral(float(r["dihedral_degree"]), _dihedral(x, 0, 1, 2, 3), 1e-6)
        oo.append(np.linalg.norm(x[1] - x[2]))
        assert float(r["energy_hartree"]) < float(rigid_row["energy_hartree"]) - 1e-4
    assert all(abs(d - 1.45) > 1e-3 for d in oo) and abs(oo[0] - oo[1]) > 1e-3  # O-O relaxed


def test_angle_scan_on_dask_matches_serial(tmp_path):
    distributed = pytest.importorskip("distributed")

    _job(tmp_path, WATER, "  atoms: [2, 1, 3]\n  angles: 95,115", functional="hf")
    serial = dm21lib.scan("w.yaml", tmp_path, output_dir="serial")
    assert serial.exit_status == ExitStatus.SUCCESS, serial.progress.text
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        proc = dm21(["scan", "w.yaml", "-o", "dask", "--dask", cluster.scheduler_address], tmp_path)
        assert proc.returncode == 0 and "2 points: 2 converged" in proc.stderr, _show(proc)
    reference = [(r["angle_degree"], float(r["energy_hartree"])) for r in _rows(tmp_path / "serial")]
    got = [(r["angle_degree"], float(r["energy_hartree"])) for r in _rows(tmp_path / "dask")]
    assert [a for a, _ in got] == [a for a, _ in reference] == ["95.0", "115.0"]
    assert [e for _, e in got] == pytest.approx([e for _, e in reference], abs=1e-8)
