"""``dm21 opt``: geometry optimisation with geomeTRIC, run as a user runs it (subprocesses).

* DM21 water (STO-3G, grid level 1) from near its minimum: converges with the
  criteria shown; every step's energy and gradient norm on stderr; trajectory.xyz
  holds every step, final.xyz the last; result.json the history; the final
  gradient is below the criteria.  The energy and gradient recorded at a step are
  those of a fresh single point at that geometry (`dm21 run --gradient`): no
  exchange integral of another geometry is used (a stale cache is off by 1e-2 Ha).
  Tolerances: both SCFs stop at an orbital gradient of 1e-5 from different starting
  densities, so energies agree to 2e-7 Ha (second order; mixed precision's noise is
  1e-8) and gradients to 5e-6 Ha/bohr (first order; 1.1e-6 measured on water).
  Only the first step has the B3LYP warm start: the others start from the previous
  step's density.
* B3LYP (fast) for the rules around it: constraints (geomeTRIC's freeze/set) hold
  within geomeTRIC's constraint tolerance (1e-2 Angstrom/degree); maxiter reached ->
  exit 4, not a success; --restart continues from the last geometry and refuses a
  converged directory; SIGTERM mid-run -> exit 130 with the steps so far, then
  --restart finishes it; ``job.task: opt`` under ``dm21 run``; bad constraints exit 2
  naming file, line and field.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from test_cli_run import _env, _show, dm21, leftovers, write_job

from dm21cli.core.units import BOHR_ANGSTROM
from dm21cli.io.outputs.qcschema import fields

#: DM21/STO-3G water (grid level 1) a little away from its minimum (r 1.027 A, 96.7 deg)
NEAR_MIN = ("O 0.0 0.0 0.1814", "H 0.0 0.785 -0.51", "H 0.0 -0.785 -0.51")
#: water well away from any minimum (asymmetric)
DISTORTED = ("O 0.0 0.0 0.0", "H 0.0 0.9 -0.55", "H 0.0 -0.75 -0.35")


def _xyz_frames(path) -> list[tuple[str, np.ndarray]]:
    lines = path.read_text().splitlines()
    frames, k = [], 0
    while k < len(lines):
        n = int(lines[k])
        atoms = [line.split() for line in lines[k + 2:k + 2 + n]]
        frames.append((lines[k + 1], np.array([[float(x) for x in a[1:]] for a in atoms])))
        k += 2 + n
    return frames


def _angle_deg(x, i, j, k) -> float:
    a, b = x[i] - x[j], x[k] - x[j]
    return float(np.degrees(np.arccos(a @ b / np.linalg.norm(a) / np.linalg.norm(b))))


def test_dm21_steps_use_fresh_integrals_and_the_previous_density(tmp_path, checkpoints_dir):
    """Two DM21 steps (maxiter 1: not converged, exit 4), the second against a fresh
    single point at its geometry."""
    write_job(tmp_path, "w", atoms=NEAR_MIN, basis="sto-3g", extra="""\
        scf:
          grid_level: 1
        outputs: {molden: false}
        """)
    env = _env(checkpoints_dir)
    proc = dm21(["opt", "w.yaml", "--maxiter", "1"], tmp_path, env)
    assert proc.returncode == 4, _show(proc)
    out = tmp_path / "outputs" / "w"
    result = fields(json.loads((out / "result.json").read_text()))
    history = result["optimization"]["history"]
    assert len(history) == 2 and result["success"] is False
    for h in history:  # every step's energy and gradient norm on stderr
        assert f"step {h['step']}: E = {h['energy_hartree']:.10f} Ha" in proc.stderr
        assert f"gradient norm {h['gradient_norm_hartree_per_bohr']:.2e}" in proc.stderr
    # each step from the previous step's density: one warm start, in the first step
    log = (out / "dm21.log").read_text()
    assert log.count("warm start: b3lyp SCF") == 1
    assert log.index("warm start: b3lyp SCF") < log.index("step 1: E =")

    # the second step's energy and gradient are a fresh single point's at its geometry
    step = history[1]
    assert step["geometry_bohr"] != history[0]["geometry_bohr"]
    atoms = [f"{s} {float(x)!r} {float(y)!r} {float(z)!r}" for s, (x, y, z)
             in zip(result["molecule"]["symbols"], np.array(step["geometry_bohr"]) * BOHR_ANGSTROM)]
    write_job(tmp_path, "sp", atoms=atoms, basis="sto-3g",
              extra="scf:\n  grid_level: 1\noutputs: {molden: false}\n")
    single = dm21(["run", "sp.yaml", "--gradient", "--json"], tmp_path, env)
    assert single.returncode == 0, _show(single)
    sp = fields(json.loads(single.stdout))
    assert sp["return_energy"] == pytest.approx(step["energy_hartree"], abs=2e-7)
    g = np.array(sp["properties"]["gradient_hartree_per_bohr"])
    assert np.abs(g).max() == pytest.approx(step["gradient_max_hartree_per_bohr"], abs=5e-6)
    assert np.linalg.norm(g) == pytest.approx(step["gradient_norm_hartree_per_bohr"], abs=5e-6)


@pytest.mark.slow
def test_dm21_water_converges(tmp_path, checkpoints_dir):
    """The whole DM21 optimisation from near the minimum (slow: 3 to 5 DM21 steps)."""
    write_job(tmp_path, "w", atoms=NEAR_MIN, basis="sto-3g", extra="""\
        scf:
          grid_level: 1
        outputs: {molden: true}
        """)
    proc = dm21(["opt", "w.yaml", "--json"], tmp_path, _env(checkpoints_dir))
    assert proc.returncode == 0, _show(proc)
    out = tmp_path / "outputs" / "w"
    result = fields(json.loads(proc.stdout))
    assert result == fields(json.loads((out / "result.json").read_text()))
    opt = result["optimization"]
    assert result["success"] and result["converged"] and opt["converged"]
    assert result["input"]["job"]["task"] == "opt"
    assert opt["criteria"] == {"convergence_set": "GAU", "convergence_energy": 1e-6,
                               "convergence_grms": 3e-4, "convergence_gmax": 4.5e-4,
                               "convergence_drms": 1.2e-3, "convergence_dmax": 1.8e-3}
    assert "converged when every criterion holds (convergence_set GAU)" in proc.stderr
    history = opt["history"]
    assert 2 <= len(history) == opt["steps"] <= 8, len(history)
    assert [h["step"] for h in history] == list(range(1, len(history) + 1))
    last = history[-1]
    assert last["geometric"]["criteria_met"] == ["energy", "grms", "gmax", "drms", "dmax"]
    assert result["properties"]["gradient_max_hartree_per_bohr"] < 4.5e-4
    assert result["return_energy"] == last["energy_hartree"]
    assert history[-1]["energy_hartree"] < history[0]["energy_hartree"]
    _check_files(out, result)


def _check_files(out, result) -> None:
    """Every step in trajectory.xyz, the last geometry in final.xyz and result.json."""
    history = result["optimization"]["history"]
    assert set(result["files"]) >= {"trajectory", "final", "chkfile"}
    frames = _xyz_frames(out / "trajectory.xyz")
    assert len(frames) == len(history)
    for (comment, coords), h in zip(frames, history):
        assert comment.startswith(f"step {h['step']}  E = {h['energy_hartree']:.10f} Ha")
        np.testing.assert_allclose(coords, np.array(h["geometry_bohr"]) * BOHR_ANGSTROM, atol=1e-9)
    (final_comment, final), = _xyz_frames(out / "final.xyz")
    assert final_comment.startswith("optimised geometry" if result["converged"] else "last (NOT")
    np.testing.assert_allclose(final, np.array(result["molecule"]["geometry_bohr"]) * BOHR_ANGSTROM,
                               atol=1e-9)
    np.testing.assert_allclose(final, frames[-1][1], atol=1e-9)
    assert "Geometry optimisation (geomeTRIC)" in (out / "summary.txt").read_text()
    assert leftovers(out) == []


def test_constraints_hold_and_run_follows_task_opt(tmp_path):
    write_job(tmp_path, "c", atoms=("O 0.0 0.0 0.1173", "H 0.0 0.7572 -0.4692",
                                    "H 0.0 -0.7572 -0.4692"),
              basis="sto-3g", functional="b3lyp", extra="""\
        scf:
          grid_level: 1
        opt:
          constraints:
            freeze:
              - xyz 1
            set:
              - angle 2 1 3 100
        """)
    text = (tmp_path / "c.yaml").read_text().replace("  name: c\n", "  name: c\n  task: opt\n")
    (tmp_path / "c.yaml").write_text(text)
    proc = dm21(["run", "c.yaml"], tmp_path, _env(None))  # task: opt: dm21 run optimises
    assert proc.returncode == 0, _show(proc)
    result = fields(json.loads((tmp_path / "outputs" / "c" / "result.json").read_text()))
    opt = result["optimization"]
    assert opt["converged"] and opt["constraints_text"] == ["freeze xyz 1", "set angle 2 1 3 100"]
    x = np.array(result["molecule"]["geometry_bohr"]) * BOHR_ANGSTROM
    x0 = np.array(opt["initial_geometry_bohr"]) * BOHR_ANGSTROM
    assert _angle_deg(x0, 1, 0, 2) == pytest.approx(104.48, abs=0.01)
    assert _angle_deg(x, 1, 0, 2) == pytest.approx(100.0, abs=1e-2)  # geomeTRIC's cmax
    np.testing.assert_allclose(x[0], x0[0], atol=1e-2)
    assert "constraint: set angle 2 1 3 100" in proc.stderr
    assert "converged when every criterion holds (convergence_set GAU)" in proc.stderr
    assert opt["criteria"]["convergence_gmax"] == 4.5e-4
    assert opt["history"][-1]["geometric"]["criteria_met"] == ["energy", "grms", "gmax", "drms", "dmax"]
    _check_files(tmp_path / "outputs" / "c", result)


def test_maxiter_is_not_a_success_and_restart_continues(tmp_path):
    write_job(tmp_path, "m", atoms=DISTORTED, basis="sto-3g", functional="b3lyp",
              extra="scf:\n  grid_level: 1\n")
    env = _env(None)
    proc = dm21(["opt", "m.yaml", "--maxiter", "2"], tmp_path, env)
    assert proc.returncode == 4, _show(proc)
    assert "did not converge" in proc.stderr.strip().splitlines()[-1]
    out = tmp_path / "outputs" / "m"
    first = fields(json.loads((out / "result.json").read_text()))
    assert first["success"] is False and first["status"] == "not-converged"
    assert "maxiter" in first["error"]["error_message"]
    assert first["optimization"]["maxiter"] == 2 and not first["optimization"]["converged"]
    done = first["optimization"]["history"]
    assert len(_xyz_frames(out / "trajectory.xyz")) == len(done)
    assert "NOT converged" in (out / "final.xyz").read_text().splitlines()[1]

    again = dm21(["opt", "m.yaml", "--restart"], tmp_path, env)
    assert again.returncode == 0, _show(again)
    assert (f"restart from the last geometry of outputs/m (step {len(done)}), density from its "
            f"scf.chk") in again.stderr
    result = fields(json.loads((out / "result.json").read_text()))
    history = result["optimization"]["history"]
    assert history[:len(done)] == done  # the first run's steps, kept
    assert {h["run"] for h in history[len(done):]} == {2}
    assert history[len(done)]["geometry_bohr"] == done[-1]["geometry_bohr"]
    assert result["optimization"]["restarted_from"] == f"step {len(done)} of outputs/m"
    assert result["converged"] and len(_xyz_frames(out / "trajectory.xyz")) == len(history)
    assert leftovers(out) == [] and leftovers(tmp_path / "outputs") == []

    refused = dm21(["opt", "m.yaml", "--restart"], tmp_path, env)  # nothing left to do
    assert refused.returncode == 5, _show(refused)
    assert "converged optimisation" in refused.stderr
    both = dm21(["opt", "m.yaml", "--restart", "--overwrite"], tmp_path, env)
    assert both.returncode == 2, _show(both)
    other = dm21(["opt", "m.yaml", "--restart", "--basis", "6-31g"], tmp_path, env)
    assert other.returncode == 5 and "another input" in other.stderr, _show(other)
    plain = dm21(["opt", "m.yaml"], tmp_path, env)  # as dm21 run: results are never replaced silently
    assert plain.returncode == 5, _show(plain)


def test_sigterm_keeps_the_steps_and_restart_finishes(tmp_path):
    write_job(tmp_path, "s", atoms=DISTORTED, basis="def2-svp", functional="b3lyp",
              extra="scf:\n  grid_level: 3\n")
    out = tmp_path / "outputs" / "s"
    with open(tmp_path / "stderr.txt", "w") as se:
        proc = subprocess.Popen([sys.executable, "-m", "dm21cli", "opt", "s.yaml"], cwd=tmp_path,
                                env=_env(None), stdout=subprocess.DEVNULL, stderr=se)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                log = out / "dm21.log"
                if log.is_file() and "step 2: E =" in log.read_text():
                    break
                time.sleep(0.05)
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr = (tmp_path / "stderr.txt").read_text()
    assert rc == 130, stderr
    assert "--restart" in stderr.strip().splitlines()[-1], stderr
    result = fields(json.loads((out / "result.json").read_text()))
    assert result["status"] == "interrupted" and result["success"] is False
    steps = result["optimization"]["history"]
    assert len(steps) >= 2 and all(h.get("gradient_norm_hartree_per_bohr") for h in steps)
    assert result["files"]["trajectory"] == "trajectory.xyz"
    assert len(_xyz_frames(out / "trajectory.xyz")) == len(steps)
    assert not (out / ".running").exists() and leftovers(out) == []

    again = dm21(["opt", "s.yaml", "--restart"], tmp_path, _env(None))
    assert again.returncode == 0, _show(again)
    result = fields(json.loads((out / "result.json").read_text()))
    assert result["converged"] and result["optimization"]["history"][:len(steps)] == steps
    assert result["optimization"]["history"][len(steps)]["geometry_bohr"] == steps[-1]["geometry_bohr"]


@pytest.mark.parametrize("case", ["keyword", "words", "atom", "angle", "coordsys", "maxiter"])
def test_bad_opt_input_exits_2_naming_file_line_and_field(tmp_path, case):
    lines = {"keyword": ("freeze: [bond 1 2]", 12, "opt.constraints.freeze[0]", "unknown freeze constraint"),
             "words": ("set: [distance 1 2]", 12, "opt.constraints.set[0]", "takes 2 atom numbers and a target"),
             "atom": ("freeze: [xyz 1-4]", 12, "opt.constraints.freeze[0]", "atom 4 does not exist"),
             "angle": ("set:\n      - angle 2 1 3 180", 13, "opt.constraints.set[0]", "between 0 and 180"),
             "coordsys": ("freeze: [xyz 1]\n  coordsys: cart", 13, "opt.coordsys", "delocalised internal"),
             "maxiter": (None, None, "--maxiter", "must be an integer >= 1")}
    text, line, field, needle = lines[case]
    extra = "" if text is None else f"opt:\n  constraints:\n    {text}\n"
    write_job(tmp_path, "bad", atoms=DISTORTED, basis="sto-3g", functional="b3lyp", extra=extra)
    args = ["opt", "bad.yaml"] + (["--maxiter", "0"] if case == "maxiter" else [])
    proc = dm21(args, tmp_path, _env(None))
    assert proc.returncode == 2, _show(proc)
    (message,) = proc.stderr.strip().splitlines()
    where = f"bad.yaml:{line}: {field}: " if line else f"{field}: "
    assert message.startswith(f"dm21: error: {where}") and needle in message, message
    assert not (tmp_path / "outputs").exists()
