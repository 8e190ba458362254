"""Kohn-Sham classes that evaluate DM21 on PySCF.

`DM21RKS` and `DM21UKS` are PySCF's RKS/UKS with `get_veff` replaced: the
Coulomb matrix comes from PySCF, the XC energy and potential from
`dm21cli.functional.xc.DM21XC`.  DM21 has no global exact exchange (its exact-exchange
dependence is inside the network's features), so no K matrix is built.

`legacy_grids(grids)` switches a Grids object to the radial grids PySCF used
up to version 2.6 (Treutler-Ahlrichs without atom-specific xi), which the
published DM21 test values were computed with.
"""

from __future__ import annotations

import numpy as np
from pyscf import lib
from pyscf.dft import radi, rks, uks
from pyscf.lib import logger

from dm21cli.functional.xc import DM21XC, split_spin


def get_veff(ks, mol=None, dm=None, dm_last=None, vhf_last=None, hermi=1):
    """J + V_xc(DM21) for a restricted (dm 2D) or unrestricted (dm (2,nao,nao)) density.

    Returns the potential tagged with ecoul, exc, vj (like PySCF's get_veff).
    """
    if mol is None:
        mol = ks.mol
    if dm is None:
        dm = ks.make_rdm1()
    if ks.grids.coords is None:
        ks.initialize_grids(mol, dm)
    t0 = (logger.process_clock(), logger.perf_counter())
    restricted, dm_spin, dm_total = split_spin(dm)
    nelec, exc, vxc = ks.dm21.evaluate(mol, ks.grids, dm_spin, restricted)
    logger.debug(ks, "nelec by numeric integration = %s", nelec)
    t0 = logger.timer(ks, "vxc (DM21)", *t0)
    vj = ks.get_j(mol, dm_total, hermi)
    vxc = vxc + vj
    ecoul = float(np.einsum("ij,ji", dm_total, vj).real) * 0.5
    return lib.tag_array(vxc, ecoul=ecoul, exc=exc, vj=vj, vk=None)


class _DM21Mixin:
    """What DM21RKS and DM21UKS share: no libxc parsing of ``xc``."""

    _keys = {"dm21"}

    def do_nlc(self):
        return False

    def do_disp(self, disp=None):
        return False  # dispersion is reported as its own term by dm21cli

    def dump_flags(self, verbose=None):
        log = logger.new_logger(self, verbose)
        self._hf_dump_flags(verbose)
        log.info("XC functional = %s (neural, dm21cli, %s SCF cycles, %s final energy)",
                 self.dm21.network.name, np.dtype(self.dm21.scf_network.dtype).name,
                 np.dtype(self.dm21.network.dtype).name)
        self.grids.dump_flags(verbose)
        log.info("small_rho_cutoff = %g", self.small_rho_cutoff)
        return self

    get_veff = get_veff

    def nuc_grad_method(self):
        """Analytic nuclear gradients of the DM21 energy (`dm21cli.scf.grad`)."""
        from dm21cli.scf.grad import Gradients

        return Gradients(self)

    Gradients = nuc_grad_method


class DM21RKS(_DM21Mixin, rks.RKS):
    """Restricted Kohn-Sham with a DM21 functional."""

    def __init__(self, mol, dm21: DM21XC):
        rks.RKS.__init__(self, mol, xc="HF")  # xc string is never evaluated
        self.xc = dm21.network.name
        self.dm21 = dm21

    def _hf_dump_flags(self, verbose):
        from pyscf.scf import hf

        hf.RHF.dump_flags(self, verbose)


class DM21UKS(_DM21Mixin, uks.UKS):
    """Unrestricted Kohn-Sham with a DM21 functional."""

    def __init__(self, mol, dm21: DM21XC):
        uks.UKS.__init__(self, mol, xc="HF")
        self.xc = dm21.network.name
        self.dm21 = dm21

    def _hf_dump_flags(self, verbose):
        from pyscf.scf import uhf

        uhf.UHF.dump_flags(self, verbose)


def _treutler_legacy(n, chg, *args, **kwargs):
    """Treutler-Ahlrichs radial grid with xi = 1 for every element (PySCF <= 2.6)."""
    saved = radi.ATOM_SPECIFIC_TREUTLER_GRIDS
    radi.ATOM_SPECIFIC_TREUTLER_GRIDS = False
    try:
        return radi.treutler_ahlrichs(n, chg, *args, **kwargs)
    finally:
        radi.ATOM_SPECIFIC_TREUTLER_GRIDS = saved


def use_legacy_grids(grids):
    """Make `grids` reproduce PySCF <= 2.6 default grids exactly; returns grids."""
    grids.radi_method = _treutler_legacy
    return grids
