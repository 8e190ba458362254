"""The gradient of a job's energy (`dm21cli.jobs.gradient`): SCF plus D3(BJ).

* D3(BJ) on a water dimer: `dispersion_gradient` against central differences of
  `dispersion_energy` (h = 1e-4 bohr; D3 is an analytic pair potential, so
  the differences agree to 1e-8 Ha/bohr).
* A B3LYP job's gradient (with and without D3) is PySCF's own B3LYP gradient
  plus the D3 one (1e-10 Ha/bohr: the same code paths), and with grid
  response it sums to zero over the atoms (1e-8).
"""

from __future__ import annotations

import numpy as np
import pytest
from pyscf import dft, gto

from dm21cli.io.inputs.load import load_job
from dm21cli.jobs.build import build_grids, build_molecule, build_scf, dispersion_energy, dispersion_gradient
from dm21cli.jobs.gradient import nuclear_gradient, summary

#: a water dimer (Angstrom): D3 between the molecules, 1e-4 Ha/bohr
DIMER = ["O -1.551 -0.115 0.000", "H -1.934 0.763 0.000", "H -0.600 0.041 0.000",
         "O 1.351 0.112 0.000", "H 1.680 -0.373 -0.758", "H 1.680 -0.373 0.758"]


def _spec(tmp_path, functional="B3LYP", dispersion=None):
    job = tmp_path / "w.yaml"
    atoms = "".join(f"    {row}\n" for row in DIMER)
    job.write_text(f"molecule:\n  xyz: |\n{atoms}basis: sto-3g\nfunctional: {functional}\n"
                   f"dispersion: {dispersion or 'null'}\n")
    return load_job(job)


def test_d3bj_gradient_is_the_derivative_of_the_d3bj_energy():
    mol = gto.M(atom="; ".join(DIMER), basis="sto-3g")
    analytic = dispersion_gradient(mol, "B3LYP")
    h = 1e-4
    coords = mol.atom_coords(unit="Bohr")
    fd = np.zeros_like(coords)
    for a in range(mol.natm):
        for x in range(3):
            e = []
            for s in (h, -h):
                c = coords.copy()
                c[a, x] += s
                e.append(dispersion_energy(mol.set_geom_(c, unit="Bohr", inplace=False), "B3LYP"))
            fd[a, x] = (e[0] - e[1]) / (2 * h)
    assert np.abs(analytic).max() > 1e-5  # not trivially zero
    np.testing.assert_allclose(analytic, fd, atol=1e-8)


@pytest.mark.parametrize("dispersion", [None, "d3bj"])
def test_b3lyp_job_gradient_is_pyscf_plus_d3(tmp_path, dispersion):
    spec = _spec(tmp_path, dispersion=dispersion)
    mol = build_molecule(spec)
    mf = build_scf(mol, spec, build_grids(mol, spec), None)
    mf.conv_tol = 1e-11
    mf.kernel()
    assert mf.converged
    out = nuclear_gradient(mf, spec)

    ref = dft.RKS(mol, xc="b3lyp")
    ref.grids = mf.grids
    ref.conv_tol = 1e-11
    ref.kernel()
    g = ref.nuc_grad_method()
    g.grid_response = True
    expected = g.kernel()
    if dispersion:
        expected = expected + dispersion_gradient(mol, "B3LYP")
        assert out["dispersion_gradient_hartree_per_bohr"] is not None
    else:
        assert out["dispersion_gradient_hartree_per_bohr"] is None
    np.testing.assert_allclose(out["gradient_hartree_per_bohr"], expected, atol=1e-8)
    np.testing.assert_allclose(out["gradient_hartree_per_bohr"].sum(axis=0), 0, atol=1e-8)
    stats = summary(out["gradient_hartree_per_bohr"])
    assert stats["max_hartree_per_bohr"] == pytest.approx(np.abs(expected).max(), abs=1e-8)
    assert stats["rms_hartree_per_bohr"] == pytest.approx(np.sqrt(np.mean(expected**2)), abs=1e-8)
