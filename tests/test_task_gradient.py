"""``dm21 run --gradient`` and ``job: {task: gradient}``: real runs, the gradient's numbers
through the command's library calls in this process (`dm21lib`), its exit statuses through
the command line.

* DM21 water (STO-3G, grid level 1, D3(BJ)): result.json's gradient is the library's
  (`dm21cli.jobs.gradient.nuclear_gradient` on the same job, converged again from the
  run's scf.chk in float64 to an orbital gradient of 1e-7).  The run stops at the
  gradient tasks' orbital-gradient threshold 1e-5, where the gradient is off by about
  1e-6 Ha/bohr (docs/tutorials/optimisation.md, "Nuclear gradients"); tolerance 5e-6 Ha/bohr.
* An SCF that does not converge reports no gradient and is no success (exit 4).
* A bad ``job.task`` exits 2 naming file, line and field, before any output exists.
"""

from __future__ import annotations

import json

import dm21lib
import numpy as np
import pytest
from test_cli_run import _env, _show, dm21, write_job

from dm21cli.io.outputs.qcschema import fields

WATER = ("O 0.0 0.0 0.1173", "H 0.0 0.7572 -0.4692", "H 0.0 -0.7572 -0.4692")


def test_run_gradient_equals_the_library_gradient(tmp_path, checkpoints_dir):
    job = write_job(tmp_path, "wg", atoms=WATER, basis="sto-3g", extra="""\
        dispersion: d3bj
        scf:
          grid_level: 1
        outputs: {molden: false}
        """)
    done = dm21lib.run("wg.yaml", tmp_path, gradient=True, checkpoints=checkpoints_dir)
    assert done.converged, done.progress.text
    result = fields(done.result)
    out = tmp_path / "outputs" / "wg"
    assert result == fields(json.loads((out / "result.json").read_text()))
    assert result["success"] and result["converged"] and result["driver"] == "gradient"
    assert result["input"]["job"]["task"] == "gradient"
    assert result["input"]["scf"]["conv_tol_grad"] == 1e-5  # the gradient tasks' default
    props = result["properties"]
    g_run = np.array(props["gradient_hartree_per_bohr"])
    assert g_run.shape == (3, 3)
    assert props["gradient_max_hartree_per_bohr"] == pytest.approx(np.abs(g_run).max(), abs=1e-15)
    assert props["gradient_rms_hartree_per_bohr"] == pytest.approx(
        np.sqrt(np.mean(g_run ** 2)), abs=1e-15)
    assert np.abs(np.array(props["dispersion_gradient_hartree_per_bohr"])).max() > 1e-7  # D3 is in

    # the library, from the run's own density, converged tighter in float64
    from dm21cli.io.inputs.load import load_job
    from dm21cli.jobs.build import build_grids, build_molecule, build_scf, load_network
    from dm21cli.jobs.gradient import nuclear_gradient
    from dm21cli.scf.escalation import run_with_escalation
    from dm21cli.scf.guess import guess_from_chkfile

    spec = load_job(job, {"task": "gradient"})
    spec.scf.precision = "float64"
    mol = build_molecule(spec)
    mf = build_scf(mol, spec, build_grids(mol, spec), load_network(spec, checkpoints_dir))
    mf.conv_tol, mf.conv_tol_grad = 1e-11, 1e-7
    converged, _ = run_with_escalation(mf, guess_from_chkfile(mf, str(out / "scf.chk")),
                                       max_attempts=2)
    assert converged
    g_lib = nuclear_gradient(mf, spec)["gradient_hartree_per_bohr"]
    assert np.abs(g_lib).max() > 1e-2  # water at this geometry is far from its STO-3G minimum
    print("max |run - library| (Ha/bohr):", np.abs(g_run - g_lib).max())
    np.testing.assert_allclose(g_run, g_lib, atol=5e-6)

    summary = (out / "summary.txt").read_text()
    assert "Nuclear gradient dE/dR (Hartree/bohr)" in summary
    assert f"{props['gradient_max_hartree_per_bohr']:.3e}" in summary
    assert "nuclear gradient: max" in done.progress.text


def test_unconverged_scf_reports_no_gradient(tmp_path, checkpoints_dir):
    write_job(tmp_path, "nc", functional="b3lyp", extra="""\
        scf:
          grid_level: 1
          max_cycle: 2
          max_attempts: 1
          conv_tol: 1e-12
        outputs: {molden: false}
        """)
    text = (tmp_path / "nc.yaml").read_text()
    (tmp_path / "nc.yaml").write_text(text.replace("  name: nc\n", "  name: nc\n  task: gradient\n"))
    proc = dm21(["run", "nc.yaml"], tmp_path, _env(checkpoints_dir))
    assert proc.returncode == 4, _show(proc)
    result = fields(json.loads((tmp_path / "outputs" / "nc" / "result.json").read_text()))
    assert result["driver"] == "gradient" and result["input"]["job"]["task"] == "gradient"
    assert result["success"] is False and result["status"] == "not-converged"
    assert "gradient_hartree_per_bohr" not in result["properties"]
    summary = (tmp_path / "outputs" / "nc" / "summary.txt").read_text()
    assert "the SCF did not converge" in summary


def test_bad_task_exits_2_with_file_line_and_field(tmp_path, checkpoints_dir):
    (tmp_path / "bad.yaml").write_text("job:\n  name: bad\n  task: frequencies\n"
                                       "molecule:\n  xyz: |\n    H 0 0 0\n    H 0 0 0.74\n")
    proc = dm21(["run", "bad.yaml"], tmp_path, _env(checkpoints_dir))
    assert proc.returncode == 2, _show(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dm21: error: bad.yaml:3: job.task: "), lines
    assert "energy, gradient" in lines[0] and "'frequencies'" in lines[0], lines[0]
    assert not (tmp_path / "outputs").exists()
