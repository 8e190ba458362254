"""Starting densities from a chkfile (`dm21cli.scf.guess`): at another geometry the
orbitals are orthonormalised in the new overlap metric, so the density holds the
molecule's electrons and its energy bounds the SCF's minimum from above."""

from __future__ import annotations

import numpy as np
import pytest
from pyscf import gto, scf

from dm21cli.scf.guess import guess_from_chkfile

WATER = "O 0 0 0.1173; H 0 0.7572 -0.4692; H 0 -0.7572 -0.4692"
#: one H moved by 0.05 Angstrom: the chkfile's orbitals no longer orthonormal
WATER_MOVED = "O 0 0 0.1173; H 0 0.8072 -0.4692; H 0 -0.7572 -0.4692"


def _chkfile(tmp_path, atom, spin=0, charge=0):
    mol = gto.M(atom=atom, basis="def2-svp", spin=spin, charge=charge, verbose=0)
    mf = scf.RHF(mol) if spin == 0 else scf.UHF(mol)
    mf.chkfile = str(tmp_path / "scf.chk")
    mf.kernel()
    assert mf.converged
    return mf.chkfile


def _electrons(dm, s) -> np.ndarray:
    return np.einsum("...ij,ji->...", np.asarray(dm), s)


def test_a_chkfile_from_another_geometry_gives_an_orthonormal_density(tmp_path):
    chk = _chkfile(tmp_path, WATER)
    mf = scf.RHF(gto.M(atom=WATER_MOVED, basis="def2-svp", verbose=0))
    s = mf.get_ovlp()
    as_read = mf.from_chk(chk)
    # PySCF reads the coefficients as they are (same basis): the wrong number of electrons
    assert abs(_electrons(as_read, s) - 10) > 1e-3
    dm = guess_from_chkfile(mf, chk)
    assert _electrons(dm, s) == pytest.approx(10, abs=1e-10)
    np.testing.assert_allclose(dm @ s @ dm, 2 * dm, atol=1e-10)  # idempotent: a determinant's
    # a determinant's energy bounds the converged one from above (variational)
    e_guess = mf.energy_tot(dm)
    e_min = mf.kernel(dm0=dm)
    assert mf.converged and e_guess >= e_min
    # and it is the closest orthonormal set: the guess is within 1e-2 of PySCF's density
    assert np.abs(dm - as_read).max() < 1e-2


def test_unrestricted_orbitals_from_another_geometry_keep_each_spins_electrons(tmp_path):
    oh = "O 0 0 0; H 0 0 0.97"
    chk = _chkfile(tmp_path, oh, spin=1)
    mf = scf.UHF(gto.M(atom="O 0 0 0; H 0 0.02 0.99", basis="def2-svp", spin=1, verbose=0))
    s = mf.get_ovlp()
    dm = guess_from_chkfile(mf, chk)
    np.testing.assert_allclose(_electrons(dm, s), [5, 4], atol=1e-10)
    for d in dm:
        np.testing.assert_allclose(d @ s @ d, d, atol=1e-10)


def test_a_chkfile_of_the_same_geometry_is_read_as_pyscf_reads_it(tmp_path):
    chk = _chkfile(tmp_path, WATER)
    mf = scf.RHF(gto.M(atom=WATER, basis="def2-svp", verbose=0))
    np.testing.assert_array_equal(guess_from_chkfile(mf, chk), mf.from_chk(chk))
