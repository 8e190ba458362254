"""Analytic nuclear gradients of the DM21 energy (PySCF Gradients classes).

`Gradients(mf)` gives the gradient object of a converged `DM21RKS` or
`DM21UKS` (also `mf.nuc_grad_method()`); `.kernel()` returns dE/dR (natm, 3)
in Ha/bohr.  The one-electron, Coulomb, overlap (energy-weighted density)
and nuclear-repulsion terms are PySCF's own (`pyscf.grad.rks` / `uks`): DM21
has no global exact exchange, so the two-electron part is the Coulomb
derivative alone.  The exchange-correlation force comes from
`dm21cli.functional.xc_grad.xc_nuc_grad` at the converged density, with the float64
network (the precision of the final energy, also when the SCF cycles ran in
float32), on the grid points the energy used.

``grid_response`` (default True, unlike PySCF) adds the motion of the grid
points and of their Becke weights with the atoms: with it the gradient is
the derivative of the energy computed on a grid that moves with the atoms
(what finite differences at one grid level measure) and sums to zero over
the atoms (translational invariance).  Without it, it is the derivative of
the energy on a grid that stays in place, which differs by the derivative of
the grid's integration error: for DM21 3e-4 to 2e-2 Ha/bohr at grid levels
0 to 6 (water, CH2, HF, LiH; it does not shrink with the level as it does
for B3LYP, 6e-6 at level 3), as large as the force thresholds of geometry
optimisers or larger.

After `kernel()`, ``timings_s`` holds the wall seconds of the XC part per
phase and ``exc_hartree`` the float64 E_xc the gradient was taken of.
"""

from __future__ import annotations

import numpy as np
from pyscf import lib
from pyscf.grad import rks as rks_grad
from pyscf.grad import uks as uks_grad
from pyscf.lib import logger

from dm21cli.functional.xc_grad import xc_nuc_grad


class _DM21GradMixin:
    """What the restricted and unrestricted DM21 gradients share."""

    _keys = {"xc_kernel", "timings_s", "exc_hartree"}
    #: on by default, unlike PySCF: without it DM21's gradient misses the
    #: grid's integration error, 3e-4 to 2e-2 Ha/bohr at grid levels 0 to 6
    #: (water, CH2, HF, LiH; B3LYP: 6e-6 at level 3), as large as the usual
    #: force thresholds of geometry optimisers (3e-4 to 4.5e-4 Ha/bohr) or larger
    grid_response = True

    def _init_dm21(self):
        #: callable x (n, 11) -> (e, de/dx) replacing the float64 network (tests)
        self.xc_kernel = None
        self.timings_s: dict = {}
        self.exc_hartree = None

    def dump_flags(self, verbose=None):
        super().dump_flags(verbose)
        logger.info(self, "DM21 XC gradient: float64 network, grid_response = %s", self.grid_response)
        return self

    def xc_force(self, mol=None, dm=None) -> np.ndarray:
        """dE_xc/dR (natm, 3) at the density matrix dm (the SCF's by default)."""
        from dm21cli.functional.xc import split_spin

        mf = self.base
        if mol is None:
            mol = self.mol
        if dm is None:
            dm = mf.make_rdm1()
        if self.grids is not None and self.grids is not mf.grids:
            raise ValueError("DM21 gradients are taken on the SCF's own grid (leave .grids unset)")
        if mf.grids.coords is None:
            raise ValueError("the SCF has not run: its grid is not built")
        restricted, dm_spin, _ = split_spin(dm)
        t0 = (logger.process_clock(), logger.perf_counter())
        timings: dict = {}
        exc, force = xc_nuc_grad(mf.dm21, mol, mf.grids, dm_spin, restricted,
                                 grid_response=self.grid_response, kernel=self.xc_kernel,
                                 max_memory_mb=self.max_memory, timings_s=timings)
        self.timings_s, self.exc_hartree = timings, exc
        logger.timer(self, "DM21 XC gradient", *t0)
        logger.debug(self, "DM21 XC gradient phases (s): %s",
                     ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
        return force


class DM21RKSGradients(_DM21GradMixin, rks_grad.Gradients):
    """Nuclear gradients of a restricted DM21 SCF (`dm21cli.ks.DM21RKS`)."""

    def __init__(self, mf):
        rks_grad.Gradients.__init__(self, mf)
        self._init_dm21()

    def get_veff(self, mol=None, dm=None):
        """The Coulomb derivative matrices (3, nao, nao), tagged with the XC
        force (natm, 3) that `extra_force` adds per atom."""
        if mol is None:
            mol = self.mol
        if dm is None:
            dm = self.base.make_rdm1()
        force = self.xc_force(mol, dm)
        vj = self.get_j(mol, dm)
        return lib.tag_array(vj, xc_force=force)

    def extra_force(self, atom_id, envs):
        return envs["vhf"].xc_force[atom_id]


class DM21UKSGradients(_DM21GradMixin, uks_grad.Gradients):
    """Nuclear gradients of an unrestricted DM21 SCF (`dm21cli.ks.DM21UKS`)."""

    def __init__(self, mf):
        uks_grad.Gradients.__init__(self, mf)
        self._init_dm21()

    def get_veff(self, mol=None, dm=None):
        """The Coulomb derivative matrices of the total density for both spins
        (2, 3, nao, nao), tagged with the XC force (natm, 3)."""
        if mol is None:
            mol = self.mol
        if dm is None:
            dm = self.base.make_rdm1()
        force = self.xc_force(mol, dm)
        vj = self.get_j(mol, dm)
        vj = vj[0] + vj[1]
        return lib.tag_array(np.stack([vj, vj]), xc_force=force)

    def extra_force(self, atom_id, envs):
        return envs["vhf"].xc_force[atom_id]


def Gradients(mf):
    """The gradient object of a DM21RKS or DM21UKS SCF (`dm21cli.scf.ks`)."""
    from pyscf.dft import rks, uks

    if getattr(mf, "dm21", None) is not None:
        if isinstance(mf, uks.UKS):
            return DM21UKSGradients(mf)
        if isinstance(mf, rks.RKS):
            return DM21RKSGradients(mf)
    raise TypeError(f"not a DM21 SCF: {type(mf).__name__}")
