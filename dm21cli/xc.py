"""The DM21 exchange-correlation energy and potential matrix on a PySCF grid.

`DM21XC.evaluate` takes spin density matrices and returns E_xc and
dE_xc/dD^s, including the term that comes from the local exact-exchange
features (see `dm21cli.features`).  It does not go through PySCF's
`NumInt.eval_xc` / `eval_xc_eff`: the KS classes in `dm21cli.ks` call it
directly, so no PySCF version can silently route around it.
"""

from __future__ import annotations

import time

import numpy as np

from dm21cli.features import OMEGAS, ExchangeIntegrals, contract
from dm21cli.network import DM21Network

#: Grid points whose total density (e/bohr^3) is below this are not given to
#: the network: their energy density and potential are taken as zero.  Their
#: whole contribution to E_xc is 1.8e-9 Ha for water/def2-SVP (measured; the
#: exact-exchange terms fall off like rho, not rho^(4/3)), inside the 1e-7 Ha
#: budget for fast paths, and they are 5-30% of a molecular grid.
RHO_SCREEN = 1e-10
MIN_BLOCK_POINTS = 64
MAX_BLOCK_POINTS = 8192


class DM21XC:
    """DM21 energy and potential for one molecule and one grid.

    network: a loaded `DM21Network`; max_memory_mb: memory budget (MB).
    """

    def __init__(self, network: DM21Network, max_memory_mb: float = 4000.0,
                 rho_screen: float = RHO_SCREEN):
        self.network = network
        self.max_memory_mb = float(max_memory_mb)
        #: total density (e/bohr^3) below which grid points are skipped
        self.rho_screen = float(rho_screen)
        self.n_evaluations = 0
        #: wall seconds spent per phase, summed over evaluations
        self.timings_s = {"ao_density": 0.0, "exchange_integrals": 0.0, "exchange_features": 0.0,
                          "network": 0.0, "potential": 0.0}
        self._integrals: ExchangeIntegrals | None = None
        self._grid_key = None

    # ------------------------------------------------------------------
    def _integrals_for(self, mol, grids) -> ExchangeIntegrals:
        coords = grids.coords
        # identity alone could be reused by a new array: the content decides
        key = (id(mol), coords.shape, coords[0].tobytes(), coords[-1].tobytes(),
               float(np.sum(coords)))
        if self._integrals is None or self._grid_key != key:
            self._integrals = ExchangeIntegrals(mol, grids.coords, self.max_memory_mb)
            self._grid_key = key
        return self._integrals

    def _network_screened(self, x: np.ndarray):
        """Network energy density and gradient, zero where the density is negligible."""
        keep = (x[:, 0] + x[:, 1]) >= self.rho_screen
        if keep.all():
            return self.network(x)
        e = np.zeros(len(x))
        de = np.zeros_like(x)
        if keep.any():
            e[keep], de[keep] = self.network(x[keep])
        return e, de

    def block_points(self, nao: int, ngrids: int) -> int:
        """Grid points per block so that nu (2 x nao^2) and AO values fit."""
        per_point = 8 * (len(OMEGAS) * nao * nao * 2 + 12 * nao + 64)
        budget = 0.25 * self.max_memory_mb * 1e6
        blk = int(budget // per_point)
        return max(MIN_BLOCK_POINTS, min(MAX_BLOCK_POINTS, blk, ngrids))

    def evaluate(self, mol, grids, dm_spin: np.ndarray, restricted: bool):
        """E_xc and its potential matrices.

        mol: pyscf Mole; grids: built pyscf Grids (coords in bohr, weights);
        dm_spin: (2, nao, nao) alpha and beta density matrices;
        restricted: if True the result is dE/dD for D = D^a + D^b with D^a = D^b.
        Returns (nelec, exc in Ha, vxc): vxc is (nao, nao) if restricted else
        (2, nao, nao).
        """
        from pyscf.dft import numint

        dm_spin = np.asarray(dm_spin, dtype=np.float64)
        nao = dm_spin.shape[-1]
        coords, weights = grids.coords, grids.weights
        ngrids = len(weights)
        integrals = self._integrals_for(mol, grids)
        blk = self.block_points(nao, ngrids)
        nspin_eff = 1 if restricted else 2

        exc = 0.0
        nelec = 0.0
        vmat = np.zeros((nspin_eff, nao, nao))  # non-symmetrised half
        vtau = np.zeros((nspin_eff, nao, nao))
        timings = self.timings_s
        clock = time.perf_counter
        for p0 in range(0, ngrids, blk):
            p1 = min(p0 + blk, ngrids)
            w = weights[p0:p1]
            t0 = clock()
            ao = numint.eval_ao(mol, coords[p0:p1], deriv=1)  # (4, ng, nao)
            rho = np.stack([numint.eval_rho(mol, ao, dm_spin[s], xctype="MGGA", with_lapl=False)
                            for s in range(nspin_eff)])  # (nspin_eff, 5, ng)
            t1 = clock()
            nu = integrals.nu(p0, p1)
            t2 = clock()
            e_mat = np.einsum("gb,sab->gas", ao[0], dm_spin[:nspin_eff])  # (ng, nao, nspin_eff)
            f_mat, hfx = contract(nu, e_mat)
            t3 = clock()
            timings["ao_density"] += t1 - t0
            timings["exchange_integrals"] += t2 - t1
            timings["exchange_features"] += t3 - t2
            if restricted:
                rho = np.concatenate([rho, rho])
                hfx = np.concatenate([hfx, hfx], axis=2)
            grad_a, grad_b = rho[0, 1:4], rho[1, 1:4]
            grad = grad_a + grad_b
            x = np.column_stack([
                rho[0, 0], rho[1, 0],
                np.einsum("ig,ig->g", grad, grad),
                np.einsum("ig,ig->g", grad_a, grad_a),
                np.einsum("ig,ig->g", grad_b, grad_b),
                rho[0, 4], rho[1, 4],
                hfx[0, :, 0], hfx[1, :, 0], hfx[0, :, 1], hfx[1, :, 1],
            ])
            t0 = clock()
            e, de = self._network_screened(x)
            t1 = clock()
            timings["network"] += t1 - t0
            exc += float(np.dot(w, e))
            nelec += float(np.dot(w, x[:, 0] + x[:, 1]))

            for s in range(2):
                t = 0 if restricted else s
                fs = f_mat[..., 0 if restricted else s]  # (n_omega, ng, nao)
                wv = w * de[:, s] * 0.5
                gcoef = 2.0 * (de[:, 2] * grad + de[:, 3 + s] * rho[s, 1:4]) * w  # (3, ng)
                aow = ao[0] * wv[:, None]
                aow += np.einsum("ig,igb->gb", gcoef, ao[1:4])
                aow -= fs[0] * (0.5 * w * de[:, 7 + 2 * s])[:, None]
                aow -= fs[1] * (0.5 * w * de[:, 8 + 2 * s])[:, None]
                scale = 0.5 if restricted else 1.0
                vmat[t] += scale * (ao[0].T @ aow)
                wt = (0.5 * scale) * w * de[:, 5 + s]
                for i in range(1, 4):
                    vtau[t] += ao[i].T @ (ao[i] * wt[:, None])
            timings["potential"] += clock() - t1
        vxc = vmat + vmat.transpose(0, 2, 1) + vtau
        self.n_evaluations += 1
        if restricted:
            return nelec, exc, vxc[0]
        return nelec, exc, vxc
