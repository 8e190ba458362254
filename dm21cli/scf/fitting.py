"""Density fitting where the two-electron integrals do not fit in memory.

PySCF holds a molecule's four-index integrals in memory when they fit its max_memory,
else it runs a direct SCF: every J or K build recomputes them.  Two of dm21cli's cheap
SCFs are density-fitted in that case (PySCF's ``density_fit``, its default auxiliary
basis for the orbital basis): the warm start (`dm21cli.jobs.build.warm_start`), whose
density only starts DM21's SCF, and the frozen-XC inner SCF
(`dm21cli.scf.escalation`), whose fixed point stays DM21's own.  The fitted three-index
integrals are built once, by the warm start, and handed to the inner SCF
(`hand_over`, `handed_over`).
"""

from __future__ import annotations

import numpy as np

#: MB of each of the two scratch buffers with which the fitted integrals are built:
#: PySCF's own build sizes them to the free memory, up to the tensor's size each
#: ((H2O)16/def2-SVP: 1.07 GB tensor, 3.2 GB at its build).
FIT_BUILD_BUFFER_MB = 64


def integrals_in_core(mf, probe) -> bool:
    """Whether mf holds its two-electron integrals in memory, or PySCF would put them
    there (`probe`, an SCF object of the same molecule before density fitting, judges by
    its own max_memory)."""
    return (getattr(mf, "_eri", None) is not None or mf.mol.incore_anyway
            or getattr(probe, "_is_mem_enough", lambda: False)())


def build(with_df, max_memory_mb: float) -> None:
    """The fitted three-index integrals of `with_df` (a PySCF DF object), held in memory
    and built with scratch buffers of FIT_BUILD_BUFFER_MB; left to PySCF (which then keeps
    them on disk) when they take more than 0.9 of what max_memory_mb leaves free."""
    from pyscf import df, lib

    mol = with_df.mol
    auxmol = df.addons.make_auxmol(mol, with_df.auxbasis)  # (None: PySCF's default for the basis)
    nao, naux = mol.nao_nr(), auxmol.nao_nr()
    tensor_mb = 8.0 * naux * nao * (nao + 1) / 2 / 1e6
    metric_mb = 8.0 * naux * naux / 1e6
    free_mb = max_memory_mb - lib.current_memory()[0]
    if tensor_mb + metric_mb + 3 * FIT_BUILD_BUFFER_MB > 0.9 * free_mb:
        return
    # (cholesky_eri's two buffers share what max_memory leaves beside the tensor and metric)
    with_df._cderi = df.incore.cholesky_eri(
        mol, auxmol=auxmol, max_memory=(tensor_mb + metric_mb) / 0.98 + 3 * FIT_BUILD_BUFFER_MB)


def _geometry(mol) -> tuple:
    return mol.atom_coords().tobytes(), mol.nao_nr(), mol.nelectron


def hand_over(with_df, mf) -> None:
    """Give mf (the SCF that follows) the fitted integrals `with_df` built in memory, for its
    frozen-XC inner SCF (`handed_over`); nothing when they are on disk."""
    if isinstance(getattr(with_df, "_cderi", None), np.ndarray):
        mf.fitted_integrals = (_geometry(with_df.mol), with_df.auxbasis, with_df._cderi)


def handed_over(mf, with_df):
    """The fitted integrals handed to mf (`hand_over`) when they belong to its molecule at
    its geometry and to with_df's auxiliary basis, else None.  mf lets go of them: they
    live as long as the SCF that takes them (the inner SCF), not as long as mf."""
    handed = getattr(mf, "fitted_integrals", None)
    if handed is None:
        return None
    mf.fitted_integrals = None
    geometry, auxbasis, cderi = handed
    if geometry != _geometry(mf.mol) or auxbasis != with_df.auxbasis:
        return None
    return cderi
