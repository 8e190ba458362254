"""Starting densities from the orbitals of another SCF: a chkfile, or another geometry.

A density matrix is only a density of the molecule it is used for when its
orbitals are orthonormal in that molecule's overlap metric.  Orbitals converged
at another geometry (or in another basis) are not: their basis functions have
moved, and D = C n C^T then holds the wrong number of electrons, so its energy
is not an upper bound of the SCF's minimum and can lie below it.  Every density
carried to a new geometry here is made of orbitals orthonormalised again
(`carried_density`).
"""

from __future__ import annotations

import numpy as np

from dm21cli.scf.occupations import fixed, reoccupy


def orbitals_of(dm) -> tuple[np.ndarray, np.ndarray] | None:
    """(mo_coeff, mo_occ) a PySCF density matrix is tagged with, or None."""
    coeff, occ = getattr(dm, "mo_coeff", None), getattr(dm, "mo_occ", None)
    return None if coeff is None or occ is None else (np.asarray(coeff), np.asarray(occ))


def carried_density(mf, mo_coeff, mo_occ) -> np.ndarray:
    """The density matrix, for the SCF `mf` at a new geometry, of the orbitals
    `mo_coeff` (nao, nmo) or (2, nao, nmo) with occupations `mo_occ` (nmo,) or (2, nmo),
    converged at another geometry of the same atoms (or projected from another basis).

    The coefficients belong to basis functions that have moved with the atoms:
    used as they are, the old density matrix holds the wrong number of
    electrons in the new overlap metric (water/STO-3G, H moved by 0.01 A: its
    first DM21 energy was 2 mHa above the warm start's; benzene/def2-SVP, one C
    moved by 0.005 bohr: 3e-4 Ha below the converged energy).  The occupied orbitals
    of each spin are orthonormalised in the new overlap S symmetrically
    (Loewdin: C (C^T S C)^(-1/2)), the smallest change that makes them
    orthonormal again, and occupied as before.
    """
    s = mf.get_ovlp()
    coeff = np.array(mo_coeff, dtype=float, copy=True)
    occ = np.asarray(mo_occ)
    for c, n in ([(coeff, occ)] if occ.ndim == 1 else zip(coeff, occ)):
        idx = np.flatnonzero(n > 0)
        if idx.size:
            w, v = np.linalg.eigh(c[:, idx].T @ s @ c[:, idx])
            c[:, idx] = c[:, idx] @ (v * w**-0.5) @ v.T
    return mf.make_rdm1(coeff, occ)


def guess_from_chkfile(mf, path: str):
    """Initial density for `mf` from the orbitals in a PySCF chkfile.

    PySCF's ``from_chk`` reads the orbitals and keeps the chkfile's occupations.
    When the chkfile's molecule is `mf`'s at another geometry (or in another
    basis, which ``from_chk`` projects onto mf's), its orbitals are
    orthonormalised in mf's overlap metric (`carried_density`): the starting
    density of every displaced point of a Hessian, and of a scan's point started
    from its neighbour's file.  At the same geometry, when the occupations are
    not what `mf` keeps (fixed occupations, or another number of electrons of
    either spin, as from a neighbouring point of an electron-number scan) and
    the chkfile holds unrestricted orbitals, the orbitals are occupied again with
    `mf`'s occupations by `reoccupy`.  Otherwise ``from_chk``'s density.
    """
    from pyscf import gto
    from pyscf.scf import chkfile

    dm = mf.from_chk(path)
    try:
        chk_mol, rec = chkfile.load_scf(path)
    except (OSError, KeyError, ValueError):  # pragma: no cover - from_chk read it just now
        return dm
    mol = mf.mol
    same_molecule = (chk_mol.natm == mol.natm and chk_mol.nao_nr() == mol.nao_nr()
                     and gto.same_basis_set(chk_mol, mol)
                     and np.allclose(chk_mol.atom_coords(), mol.atom_coords(), atol=1e-8))
    if not same_molecule:
        orbitals = orbitals_of(dm)
        if orbitals is None or orbitals[0].ndim != orbitals[1].ndim + 1:
            return dm  # (PySCF's natural orbitals of a UHF file read for RHF: left as read)
        return carried_density(mf, *orbitals)
    if np.asarray(dm).ndim != 3:
        return dm
    mo_occ, mo_coeff, mo_energy = (np.asarray(rec.get(k))
                                   for k in ("mo_occ", "mo_coeff", "mo_energy"))
    if not (mo_occ.ndim == 2 and mo_coeff.ndim == 3 and mo_coeff.shape[1] == mol.nao_nr()):
        return dm
    occupations = fixed(mf)
    if occupations is not None:
        targets = [occupations.alpha, occupations.beta]
    else:
        n_alpha, n_beta = mf.nelec
        if np.allclose(mo_occ.sum(axis=1), (n_alpha, n_beta)):
            return dm
        targets = [np.ones(n_alpha), np.ones(n_beta)]
    return mf.make_rdm1(mo_coeff, reoccupy(mo_energy, mo_occ, targets))
