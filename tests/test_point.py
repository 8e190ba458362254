"""The one path every job takes at a geometry: `dm21cli.jobs.point.compute_point` (issue 23,
section 0).  `dm21 run`, `dm21 opt` and relaxed scans, the ASE calculator, QCEngine and the
Hessian's displaced geometries all call it; these tests call it directly, as a script would."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from pyscf import dft

from dm21cli.io.inputs.load import load_job
from dm21cli.jobs import point as point_module
from dm21cli.jobs.build import build_molecule, load_network
from dm21cli.jobs.point import Guess, compute_point

WATER = """\
    molecule:
      xyz: |
        O 0.0 0.0 0.1173
        H 0.0 0.7572 -0.4692
        H 0.0 -0.7572 -0.4692
    basis: {basis}
    functional: {functional}
    scf: {{grid_level: 1}}
    """


def _spec(tmp_path, functional="b3lyp", basis="sto-3g", text=WATER, **overrides):
    job = tmp_path / "job.yaml"
    job.write_text(textwrap.dedent(text.format(functional=functional, basis=basis)))
    return load_job(job, overrides)


def _point(spec, checkpoints=None, lines=None, mol=None, **kwargs):
    network = load_network(spec, checkpoints)
    mol = mol if mol is not None else build_molecule(spec, max_memory_mb=2000)
    log = (lines if lines is not None else []).append
    return compute_point(spec, mol, network=network, memory_mb=2000, log=log, **kwargs)


def test_a_pyscf_functional_point_is_pyscfs_own_energy(tmp_path):
    """B3LYP/STO-3G water through compute_point: PySCF's RKS on the same grid, to 1e-9 Ha;
    the gradient, asked for, is PySCF's own analytic gradient (1e-7 Ha/bohr: the grid
    response PySCF leaves out by default is not in ours either at this level) and is
    computed once."""
    spec = _spec(tmp_path)
    point = _point(spec, gradient=True)
    assert point.converged and point.failure is None and point.guess == "default"
    mol = build_molecule(spec, max_memory_mb=2000)
    mf = dft.RKS(mol, xc="b3lyp")
    mf.grids.level = 1
    mf.conv_tol = 1e-10
    assert point.energy_hartree == pytest.approx(mf.kernel(), abs=1e-8)
    grad = np.asarray(point.props["gradient_hartree_per_bohr"])
    g_pyscf = mf.nuc_grad_method()
    g_pyscf.grid_response = True
    np.testing.assert_allclose(grad, g_pyscf.kernel(), atol=1e-6)
    assert point.nuclear_gradient() is point.gradient  # kept, not computed again


def test_a_point_started_from_its_neighbour_needs_fewer_dm21_evaluations(tmp_path,
                                                                         checkpoints_dir):
    """DM21/STO-3G water: a geometry 0.01 A away started from the first point
    (`Guess.from_point`: the warm start from its carried orbitals plus the carried DM21 -
    warm start difference) reaches the energy a cold start reaches (1e-6 Ha, the SCF's
    own tolerance) in no more DM21 evaluations, and its warm start in fewer cycles."""
    spec = _spec(tmp_path, functional="DM21")
    first = _point(spec, checkpoints_dir)
    mol = build_molecule(spec, max_memory_mb=2000)
    coords = mol.atom_coords()
    coords[1, 1] += 0.01 / 0.529177210903
    moved = mol.set_geom_(coords, unit="Bohr", inplace=False)
    lines: list[str] = []
    warm = _point(spec, checkpoints_dir, lines=lines, mol=moved, guess=Guess.from_point(first))
    cold = _point(spec, checkpoints_dir, mol=moved)
    assert warm.guess == "warm start + previous difference" and cold.guess == "warm start"
    assert warm.converged and cold.converged
    assert warm.energy_hartree == pytest.approx(cold.energy_hartree, abs=1e-6)
    assert warm.props["dm21_evaluations"] <= cold.props["dm21_evaluations"]
    assert warm.warm["cycles"] < cold.warm["cycles"]
    assert any("previous geometry's DM21 - warm start" in line for line in lines)


def test_a_point_that_does_not_converge_says_so_and_has_no_gradient(tmp_path):
    spec = _spec(tmp_path)
    spec.scf.max_cycle, spec.scf.max_attempts = 1, 1
    lines: list[str] = []
    point = _point(spec, lines=lines, gradient=True)
    assert not point.converged and point.gradient is None
    assert point.failure.startswith("SCF not converged after 1 attempts")
    assert any(line.startswith("no nuclear gradient: SCF not converged") for line in lines)
    with pytest.raises(ValueError, match="no nuclear gradient"):
        point.nuclear_gradient()


H2 = """\
    molecule:
      xyz: |
        H 0 0 0
        H 0 0 4.0
    basis: {basis}
    functional: {functional}
    scf: {{grid_level: 1, small_rho_cutoff: 1.0e-4}}
    """


def test_a_grid_pruned_at_a_density_that_moves_is_pruned_again(tmp_path, monkeypatch):
    """Issue 22 ("any screening decided from a density must be re-decided when the density
    moves"): scf.small_rho_cutoff prunes the grid at the starting density, as PySCF does.
    Here that density has both electrons of H2 (4 A) on one atom, so the other atom's
    points are pruned; the converged density has one electron there.  compute_point finds
    the electron on the points left out, prunes again at the converged density and
    continues: the energy is that of the grid pruned at the converged density (PySCF's own
    pruning from the converged density, to 1e-8 Ha), and the log says what happened."""
    spec = _spec(tmp_path, basis="def2-svp", text=H2)
    real = point_module.prepare_grids

    def prune_at_one_atom(mf, spec, dm0=None):
        s = mf.get_ovlp()
        c = np.zeros(mf.mol.nao_nr())
        c[0] = 1.0 / np.sqrt(s[0, 0])  # the first atom's tightest s function, doubly occupied
        real(mf, spec, 2 * np.outer(c, c))
        mf._wrong_grid_points = len(mf.grids.weights)

    monkeypatch.setattr(point_module, "prepare_grids", prune_at_one_atom)
    lines: list[str] = []
    point = _point(spec, lines=lines)
    assert point.converged, point.failure
    pruned_again = [line for line in lines if "pruned again" in line]
    assert len(pruned_again) == 1, lines
    assert len(point.mf.grids.weights) > point.mf._wrong_grid_points
    mol = build_molecule(spec, max_memory_mb=2000)
    mf = dft.RKS(mol, xc="b3lyp")
    mf.grids.level = 1
    mf.conv_tol = 1e-10
    e_full = mf.kernel()  # the whole grid
    mf2 = dft.RKS(mol, xc="b3lyp")
    mf2.grids.level = 1
    mf2.small_rho_cutoff = 1e-4
    mf2.conv_tol = 1e-10
    e_pruned = mf2.kernel(dm0=mf.make_rdm1())  # PySCF prunes at this (converged) density
    # pruning at nearly the same density: the same grid but for points holding ~1e-4
    # electrons in all (measured 1.2e-7 Ha apart); the grid of the one-atom density is far off
    assert point.energy_hartree == pytest.approx(e_pruned, abs=1e-6)
    assert point.energy_hartree == pytest.approx(e_full, abs=1e-5)
