"""The reaction path down from a transition state: ``dm21 opt --irc`` and ``--ts --irc``
(geomeTRIC's IRC from dm21's Hessian), and the path's assembly (`dm21cli.jobs.irc`).

Issue 23 section 5: "An intrinsic reaction coordinate from the transition state, if
geomeTRIC's IRC fits, in both directions to the two minima."  Ammonia's inversion is the
test case: its two minima are mirror images, so the two legs must end at the same energy,
and each end must be the minimum ``dm21 opt`` finds (B3LYP/STO-3G, grid level 1: seconds).
"""

from __future__ import annotations

import json
import textwrap

import dm21lib
import numpy as np
import pytest
from dm21proc import dm21, dm21_env, show, write
from test_freq import PLANAR_NH3, WATER_STO

from dm21cli.jobs.irc import (
    aligned,
    mass_weighted_distance,
    path_csv,
    path_points,
    path_xyz,
)
from dm21cli.vib.masses import default_masses_amu


def _path_rows(folder):
    lines = (folder / "irc.csv").read_text().splitlines()
    assert lines[0] == "leg,step,s_amu_half_bohr,energy_hartree,relative_kcal_mol"
    return [dict(zip(lines[0].split(","), row.split(","))) for row in lines[1:]]


def test_ts_then_irc_walks_down_both_sides_to_the_two_minima(tmp_path):
    """``dm21 opt --ts --irc``: the saddle point, its frequencies (one imaginary mode), then
    the path from there in irc/, started from freq/'s Hessian (read, not recomputed). Both
    legs reach their minima: mirror images at the same energy (to 1e-5 Ha: the criteria's
    noise), each the minimum ``dm21 opt`` finds (to 1e-4 Ha: GAU's gradient criterion on the
    soft umbrella mode leaves about that; measured 2.5e-5), the energy falling along each leg
    away from the transition state."""
    write(tmp_path, "nh3.yaml", textwrap.dedent(PLANAR_NH3))
    env = dm21_env()
    proc = dm21(["opt", "nh3.yaml", "--ts", "--irc", "-o", "ts", "--json"], tmp_path, env=env)
    assert proc.returncode == 0, show(proc)
    document = json.loads(proc.stdout)  # the last result printed: the path's
    record = document["extras"]["dm21cli"]["optimization"]
    assert document["success"] and record["irc"]["legs"]["forward"]["converged"]
    assert record["irc"]["legs"]["backward"]["converged"]
    folder = tmp_path / "ts" / "irc"
    assert json.loads((folder / "result.json").read_text())["success"]
    ts_freq = json.loads((tmp_path / "ts" / "freq" / "result.json").read_text())
    assert ts_freq["extras"]["dm21cli"]["vibrations"]["n_imaginary"] == 1
    log = (folder / "dm21.log").read_text()
    assert log.count("read from disk") == 25  # (the reference and 24 displaced gradients)
    assert record["hessians"][0]["folder"].endswith("freq")

    path = record["irc"]["path"]
    rows = _path_rows(folder)
    assert [int(r["step"]) for r in rows] == [p["step"] for p in path]
    s = np.array([p["s_amu_half_bohr"] for p in path])
    energy = np.array([p["energy_hartree"] for p in path])
    legs = [p["leg"] for p in path]
    top = legs.index("ts")
    assert legs.count("ts") == 1 and set(legs[:top]) == {"backward"} and set(legs[top + 1:]) == {"forward"}
    assert s[top] == 0 and np.all(np.diff(s) > 0)
    assert energy[top] == pytest.approx(record["irc"]["ts_energy_hartree"])
    assert np.all(np.diff(energy[top:]) < 1e-6) and np.all(np.diff(energy[:top + 1]) > -1e-6)
    frames = (folder / "irc.xyz").read_text().splitlines()
    assert len(frames) == len(path) * 6 and frames[1].startswith("backward step")

    ends = record["irc"]["legs"]
    e_forward, e_backward = ends["forward"]["end_energy_hartree"], ends["backward"]["end_energy_hartree"]
    assert abs(e_forward - e_backward) < 1e-5
    assert ends["forward"]["barrier_kcal_mol"] > 1
    # mirror images: N on opposite sides of the H3 plane
    sides = []
    for leg in ("forward", "backward"):
        xyz = np.asarray(ends[leg]["end_geometry_bohr"]).reshape(-1, 3)
        normal = np.cross(xyz[2] - xyz[1], xyz[3] - xyz[1])
        sides.append(float((xyz[0] - xyz[1:].mean(axis=0)) @ normal / np.linalg.norm(normal)))
    assert sides[0] * sides[1] < 0 and abs(abs(sides[0]) - abs(sides[1])) < 1e-2

    minimum = dm21lib.opt("nh3.yaml", tmp_path, output_dir="min")  # (in this process)
    assert minimum.converged, minimum.progress.text
    e_min = minimum.result["properties"]["return_energy"]
    assert abs(e_forward - e_min) < 1e-4 and abs(e_backward - e_min) < 1e-4
    summary = (folder / "summary.txt").read_text()
    assert "Reaction path (IRC, geomeTRIC)" in summary and "Forward leg" in summary


def test_irc_from_a_geometry_that_is_no_transition_state_stops_with_the_reason(tmp_path):
    """Water's (near-)minimum has no imaginary mode: the path is refused after its Hessian
    (exit 7, naming what the Hessian shows), before any step; the Hessian stays."""
    write(tmp_path, "w.yaml", WATER_STO + "job: {task: irc}\n")
    proc = dm21(["opt", "w.yaml", "-o", "w"], tmp_path, env=dm21_env())
    assert proc.returncode == 7, show(proc)
    assert "a reaction path starts at a transition state, and the starting geometry is not a " \
           "transition state: 0 imaginary modes" in proc.stderr
    assert json.loads((tmp_path / "w" / "start-hessian" / "result.json").read_text())["success"]


@pytest.mark.parametrize("extra, args, needle", [
    ("", ["--irc", "--freq"], "--freq: a reaction path ends at two minima"),
    ("opt:\n  constraints:\n    freeze: [distance 1 2]\n", ["--irc"],
     "opt.constraints: a reaction path (opt.irc) follows every coordinate: it takes no constraints"),
    ("opt:\n  irc: true\nscan:\n  distances: 1.0,1.1\n  atoms: [1, 2]\n", ["--relax"],
     "opt.irc: a relaxed scan's points are minimisations"),
])
def test_irc_input_errors_exit_2_before_anything_is_computed(tmp_path, extra, args, needle):
    write(tmp_path, "nh3.yaml", textwrap.dedent(PLANAR_NH3) + extra)
    command = "scan" if "--relax" in args else "opt"
    proc = dm21([command, "nh3.yaml", *args], tmp_path)
    assert proc.returncode == 2, show(proc)
    (line,) = proc.stderr.strip().splitlines()
    assert needle in line, line
    assert not (tmp_path / "outputs").exists()


# ------------------------------------------------------------------ the path's assembly
def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_alignment_takes_out_overall_rotation_and_translation():
    rng = np.random.default_rng(7)
    coords = rng.normal(size=(4, 3))
    masses = default_masses_amu(["N", "H", "H", "H"])
    moved = coords @ _rotation(0.7).T + np.array([1.0, -2.0, 0.5])
    assert np.allclose(aligned(moved, coords, masses), coords, atol=1e-12)
    assert mass_weighted_distance(coords, moved, masses) < 1e-12
    bent = coords.copy()
    bent[1, 2] += 0.1  # one H moved by 0.1 bohr: sqrt(m_H) 0.1 apart at most
    assert 0 < mass_weighted_distance(coords, bent, masses) <= np.sqrt(masses[1]) * 0.1 + 1e-12


def test_path_orders_the_accepted_points_backward_ts_forward():
    """Rejected points are left out; s is 0 at the TS, negative along the backward leg."""
    symbols = ["H", "H"]

    def entry(step, leg, z, energy, accepted=True):
        return {"step": step, "leg": leg, "accepted": accepted, "energy_hartree": energy,
                "geometry_bohr": [[0.0, 0.0, 0.0], [0.0, 0.0, z]]}

    history = [entry(1, "ts", 2.0, -1.0), entry(2, "forward", 2.2, -1.1),
               entry(3, "forward", 2.6, -1.05, accepted=False), entry(4, "forward", 2.4, -1.2),
               entry(5, "backward", 1.8, -1.1), entry(6, "backward", 1.6, -1.3)]
    points = path_points(history, symbols)
    assert [p["step"] for p in points] == [6, 5, 1, 2, 4]
    s = [p["s_amu_half_bohr"] for p in points]
    mu = np.sqrt(default_masses_amu(symbols)[0] / 2)  # relative motion of two equal masses
    assert s == pytest.approx([-0.4 * mu, -0.2 * mu, 0.0, 0.2 * mu, 0.4 * mu])
    assert points[0]["relative_kcal_mol"] == pytest.approx(-0.3 * 627.5094740631)
    assert path_csv(points).count("\n") == 6
    assert path_xyz(points, symbols, "h2").count("\n") == 5 * 4


#: the B3LYP/STO-3G (grid level 1) saddle point of ammonia's inversion, from dm21 opt --ts
TS_NH3 = """\
molecule:
  xyz: |
    N     -0.0000644551    -0.0000086833     0.0177669427
    H      1.0221298574     0.0000081486     0.0250714375
    H     -0.5111658108     0.8853151050     0.0140037033
    H     -0.5111960484    -0.8853161158     0.0140100433
basis: sto-3g
functional: b3lyp
scf: {grid_level: 1}
outputs: {molden: false}
"""


def test_a_path_out_of_steps_is_no_success_and_restart_walks_it_again_keeping_the_hessian(tmp_path):
    """``--maxiter 3``: neither leg reaches its minimum: exit 4, the message says so and how to
    go on; ``--restart`` walks the path again from the transition state with the Hessian the
    first run computed (its 25 gradients read from disk), and both legs arrive."""
    write(tmp_path, "ts.yaml", TS_NH3)
    env = dm21_env()
    proc = dm21(["opt", "ts.yaml", "--irc", "-o", "p", "--maxiter", "3"], tmp_path, env=env)
    assert proc.returncode == 4, show(proc)
    assert "the forward leg did NOT reach its minimum (3 points)" in proc.stderr
    assert "--irc --restart -o p' (the Hessian at the transition state is kept)" in proc.stderr
    first = json.loads((tmp_path / "p" / "result.json").read_text())
    assert first["success"] is False and not first["extras"]["dm21cli"]["optimization"]["irc"]["legs"]["forward"]["converged"]
    again = dm21lib.opt("ts.yaml", tmp_path, irc=True, output_dir="p", restart=True)  # (in this process)
    assert again.converged, again.progress.text
    assert (tmp_path / "p" / "dm21.log").read_text().count("read from disk") == 25
    legs = json.loads((tmp_path / "p" / "result.json").read_text())["extras"]["dm21cli"]["optimization"]["irc"]["legs"]
    assert legs["forward"]["converged"] and legs["backward"]["converged"]
    assert abs(legs["forward"]["end_energy_hartree"] - legs["backward"]["end_energy_hartree"]) < 1e-5
