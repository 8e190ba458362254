"""The same SCF twice gives the same numbers: deterministic J/K and degenerate orbitals.

Two identical DM21 fractional-charge scans of the C atom differed by 6e-5 Ha
(issue 22).  Two things let rounding decide the result:

1. PySCF's in-core J and K (``_vhf.incore``, used whenever the two-electron
   integrals fit in memory) sum the threads' contributions in the order the
   threads finish: the same Fock matrix differs between runs in its last bits
   (measured: 4 different results in 30 calls with 2 threads; the direct-SCF
   path, the numerical integration, BLAS and DM21's own kernels gave one).
   An SCF that oscillates (the C atom with a fractional electron does, before
   direct minimisation takes over) amplifies that to 1e-5 Ha.  `install` runs
   the in-core contraction on one OpenMP thread: it is cheap next to the
   integrals themselves, which are still computed on all threads.
2. Where orbital energies are degenerate (the 2p shell of an atom, the e and t
   shells of a symmetric molecule), any rotation among their eigenvectors
   solves the Fock equations, and the one LAPACK returns depends on rounding.
   When such a shell is partly filled (C+ has one 2p electron in three 2p
   orbitals), that rotation decides which orbital holds the electron.
   `install` wraps the SCF object's ``eig`` so that within each set of orbitals
   whose energies agree to DEGENERACY_TOL_HARTREE it returns the eigenvectors
   of one fixed probe operator (a generic combination of the dipole and
   second-moment integrals about the centre of nuclear charge,
   `probe_operator`): for an atom, the 2p orbitals along the probe's principal
   axes, filled in the probe's order.  The energies of such a set are replaced
   by their mean, so that every occupation rule (aufbau, the fixed occupations
   of `dm21cli.scf.occupations`) fills it in that order; each orbital's sign is
   fixed.  Orbitals that are not degenerate are untouched.
"""

from __future__ import annotations

import numpy as np

#: Orbital energies (Ha) closer than this are one degenerate set.  Rounding splits
#: a symmetry-degenerate set by ~1e-14 Ha; a state that breaks the symmetry (an
#: occupied 2p orbital among empty ones) splits it by 1e-2 Ha or more.
DEGENERACY_TOL_HARTREE = 1e-8
#: Weights of x, y, z and of xx, yy, zz, xy, xz, yz in the probe operator: fixed,
#: pairwise unrelated numbers, so that no symmetry of a molecule leaves two of its
#: degenerate orbitals with the same probe value.
PROBE_WEIGHTS = (0.137, 0.271, 0.419, 1.0, 1.414, 1.732, 0.223, 0.317, 0.529)


def probe_operator(mol) -> np.ndarray:
    """The probe's AO matrix (nao, nao): sum of PROBE_WEIGHTS times the integrals of
    x, y, z, xx, yy, zz, xy, xz, yz (bohr, about the centre of nuclear charge)."""
    charges = mol.atom_charges()
    centre = charges @ mol.atom_coords() / max(charges.sum(), 1)
    with mol.with_common_orig(centre):
        r = mol.intor_symmetric("int1e_r", comp=3)
        rr = mol.intor_symmetric("int1e_rr", comp=9).reshape(3, 3, *r.shape[1:])
    parts = [r[0], r[1], r[2], rr[0, 0], rr[1, 1], rr[2, 2], rr[0, 1], rr[0, 2], rr[1, 2]]
    return sum(w * p for w, p in zip(PROBE_WEIGHTS, parts))


def canonicalize(mo_energy: np.ndarray, mo_coeff: np.ndarray, probe: np.ndarray,
                 tol: float = DEGENERACY_TOL_HARTREE) -> tuple[np.ndarray, np.ndarray]:
    """(mo_energy (nmo,), mo_coeff (nao, nmo)) of one spin, ordered by energy, with
    every degenerate set rotated to the probe's eigenvectors (in increasing probe
    value), its energies set to their mean, and every orbital's sign fixed (the
    coefficient of largest magnitude, the first of ties, positive)."""
    order = np.argsort(mo_energy, kind="stable")
    e = np.array(mo_energy, dtype=float)[order]
    c = np.array(mo_coeff)[:, order]
    start = 0
    for stop in range(1, len(e) + 1):
        if stop < len(e) and e[stop] - e[stop - 1] < tol:
            continue
        if stop - start > 1:
            block = c[:, start:stop]
            _, u = np.linalg.eigh(block.T @ probe @ block)
            c[:, start:stop] = block @ u
            e[start:stop] = e[start:stop].mean()
        start = stop
    big = np.argmax(np.abs(np.round(c, 10)), axis=0)
    c *= np.where(c[big, np.arange(c.shape[1])] < 0, -1.0, 1.0)
    return e, c


def install(mf) -> None:
    """Make `mf` (any PySCF SCF object) reproducible: its in-core J/K on one OpenMP
    thread, and its Fock matrices diagonalised with `canonicalize` applied (per spin
    for unrestricted ones).  Idempotent."""
    if getattr(mf, "_reproducible", False):
        return
    eig, get_jk = mf.eig, mf.get_jk

    def reproducible_get_jk(mol=None, dm=None, *args, **kwargs):
        from pyscf import lib

        mol = mf.mol if mol is None else mol
        omega = kwargs.get("omega", args[3] if len(args) > 3 else None)
        if omega:  # range-separated integrals are never in core: the direct path
            return get_jk(mol, dm, *args, **kwargs)
        if mf._eri is None and (mol.incore_anyway or mf._is_mem_enough()):
            mf._eri = mol.intor("int2e", aosym="s8")  # (on every thread)
        if mf._eri is None:
            return get_jk(mol, dm, *args, **kwargs)
        with lib.with_omp_threads(1):
            return get_jk(mol, dm, *args, **kwargs)
    cache: dict = {}

    def canonical_eig(h, s, *args, **kwargs):
        mo_energy, mo_coeff = eig(h, s, *args, **kwargs)
        if hasattr(mo_energy, "mo_ea"):  # ROHF's tagged energies: left as they are
            return mo_energy, mo_coeff
        key = (mf.mol.atom_coords().tobytes(), mf.mol.nao_nr())
        if cache.get("key") != key:  # (a Mole moved in place, as optimisers do)
            cache["key"], cache["probe"] = key, probe_operator(mf.mol)
        probe = cache["probe"]
        if np.asarray(mo_coeff).ndim == 3 or isinstance(mo_coeff, (tuple, list)):
            pairs = [canonicalize(e, c, probe) for e, c in zip(mo_energy, mo_coeff)]
            return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
        return canonicalize(mo_energy, mo_coeff, probe)

    mf.eig = canonical_eig
    # (density-fitted J/K sum in a fixed order, and never use four-index integrals)
    if hasattr(mf, "_is_mem_enough") and getattr(mf, "with_df", None) is None:
        mf.get_jk = reproducible_get_jk
    mf._reproducible = True
    mf._keys = set(getattr(mf, "_keys", ())) | {"eig", "get_jk", "_reproducible"}
