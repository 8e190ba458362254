"""The DM21 exchange-correlation energy and potential matrix on a PySCF grid.

`DM21XC.evaluate` takes spin density matrices and returns E_xc and
dE_xc/dD^s, including the term that comes from the local exact-exchange
features (see `dm21cli.functional.features`).  It does not go through PySCF's
`NumInt.eval_xc` / `eval_xc_eff`: the KS classes in `dm21cli.scf.ks` call it
directly, so no PySCF version can silently route around it.

Precision.  With ``scf_network`` set (precision "mixed", the default of
`dm21 run`), the SCF cycles evaluate the network in float32 and
`DM21XC.final_correction` gives the final E_xc in float64, forward pass
only, on the network inputs of the converged density.  The energy is
stationary in the density, so the float32 rounding of the potential moves it
by far less than 1e-7 Ha, while the float32 cycles cost half as much as
float64 ones.
"""

from __future__ import annotations

import time

import numpy as np

from dm21cli.functional.features import OMEGAS, ExchangeIntegrals
from dm21cli.functional.network import DM21Network

#: Grid points whose total density (e/bohr^3) is below this are left out of the
#: SCF's evaluations: no AO values, integrals or network there, energy density
#: and potential taken as zero (see `DM21XC._block_points`).  Their whole
#: contribution to E_xc is 1.8e-9 Ha for water/def2-SVP (measured; the
#: exact-exchange terms fall off like rho, not rho^(4/3)), inside the 1e-7 Ha
#: budget for fast paths, and they are 5-30% of a molecular grid.  The set of
#: points is chosen at the first density evaluated on a grid and checked again
#: at every new density: a left-out point whose density has reached the
#: threshold joins the set (which never shrinks), so the electrons cannot move
#: onto points that are not evaluated.  The final energy adds the left-out
#: points' contribution (`DM21XC.final_correction`): no reported E_xc is screened.
RHO_SCREEN = 1e-10
#: The final checks of a converged density (`DM21XC.final_correction`; the manual,
#: docs/explanation/dm21.md "Final energy and checks").  The density integrated on the points the SCF evaluated must
#: equal the electron count to NELEC_RTOL relative: the integration grid's own error
#: in the integral of rho, measured with B3LYP densities of water, CH3, NaCl, Ar and
#: Kr (def2-SVP/TZVP) and stretched H2, is at most 4.1e-4 N at grid level 0 and
#: 5.3e-6 N from level 1 on; 2e-3 N leaves a margin of five at level 0 and still
#: catches a lost fraction of an electron (the failure this guards against lost
#: all of them).  NELEC_ATOL (electrons) covers systems of almost no electrons.
NELEC_RTOL = 2e-3
NELEC_ATOL = 1e-4
#: The left-out points may carry at most this much of E_xc (Ha) at convergence:
#: below RHO_SCREEN everywhere they carry ~1e-9 Ha (measured above).
SCREENED_EXC_TOL = 1e-6
MIN_BLOCK_POINTS = 64
MAX_BLOCK_POINTS = 8192
#: An atomic orbital whose value and gradient stay below this (bohr^-3/2, bohr^-5/2) at
#: every point of a block of the grid is left out of that block's density and potential
#: products (`_ao_columns`), as PySCF's numint leaves out its screened shells.  Grid
#: blocks are compact in space, so in a molecule of real size most orbitals vanish on
#: most blocks: (H2O)16/def2-SVP keeps 48% of them per block of 8,192 points, benzene 86%
#: (measured at this threshold).  What an orbital below it adds to a density product is
#: below AO_SCREEN times an orbital value; tested: E_xc and the potential at a density move by
#: less than 1e-9 Ha.
AO_SCREEN = 1e-10
#: The budget (``--memory``) is the whole process's.  An evaluation first sets
#: aside its working arrays (`work_bytes`) next to what the process already
#: holds (Python, PySCF, in-core two-electron integrals: its resident memory);
#: of what is left, this share may cache exchange integrals (the dearest to
#: recompute) and the rest AO values and gradients.
INTEGRAL_CACHE_SHARE = 0.85
#: Share of the budget the per-block working arrays may take; it sets the block size.
BLOCK_WORK_SHARE = 0.15
#: Memory per network thread (bytes): about 16 arrays of its block of 1024 points
#: x 256 floats in float64 during the backward pass (see `dm21cli.functional.network`).
NETWORK_THREAD_BYTES = 16 * 1024 * 256 * 8
#: Precision "mixed": the final float64 pass skips the grid points of smallest
#: |w e| whose float32 contributions add up to at most this (Ha), keeping
#: their float32 values.  float32 evaluates e to a relative 1e-6 or better
#: (tested: max 1e-5 allowed), so this changes E_xc by at most 1e-5 x 1e-3 =
#: 1e-8 Ha; it spares about a third of the points (water/def2-TZVP).
FINAL_SKIP_HARTREE = 1e-3
#: The phases `DM21XC.progress` names.
PHASES = ("integral memory", "exchange integrals", "exchange features", "network", "potential")


def _orbitals_first(ao: np.ndarray) -> np.ndarray:
    """PySCF's AO values (4, n, nao) or (n, nao) as the (4, nao, n) or (nao, n) array they
    are stored as (a view, no copy): rows are orbitals, so gathering points or orbitals
    and the products below run along contiguous memory."""
    return ao.transpose(0, 2, 1) if ao.ndim == 3 else ao.T


def _eval_ao_t(mol, coords: np.ndarray, deriv: int) -> np.ndarray:
    """AO values (deriv 0: (nao, n)) or values and gradients (deriv 1: (4, nao, n)) at
    coords (n, 3) in bohr, orbitals first (`_orbitals_first`)."""
    from pyscf.dft import numint

    return _orbitals_first(numint.eval_ao(mol, coords, deriv=deriv))


def _ao_columns(ao_t: np.ndarray, screen: float) -> np.ndarray | None:
    """The orbitals (indices) whose value or gradient reaches `screen` somewhere in a block;
    ao_t (4, nao, n).  None when every orbital does (nothing to leave out)."""
    big = np.maximum(ao_t.max(axis=(0, 2)), -ao_t.min(axis=(0, 2))) >= screen
    return None if big.all() else np.flatnonzero(big)


def _density(ao_t: np.ndarray, dms: np.ndarray,
             cols: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Density, its gradient and tau per spin, and E_b(r) = sum_a D_ab chi_a(r).

    ao_t: (4, m, ng) values and gradients of the orbitals `cols` (None: all nao, m = nao;
    the others vanish on these points, see `_ao_columns`); dms: (nspin, nao, nao) symmetric.
    Returns rho (nspin, 5, ng) = [rho, d/dx, d/dy, d/dz, tau] in atomic units,
    and E (nspin, nao, ng) for every orbital b.  Plain BLAS products (what PySCF's
    eval_rho does, without its OpenMP pool competing with BLAS threads).
    """
    nspin, ng = len(dms), ao_t.shape[-1]
    rho = np.empty((nspin, 5, ng))
    e_mat = np.empty((nspin, dms.shape[-1], ng))
    for s in range(nspin):
        d = dms[s] if cols is None else dms[s][:, cols]  # (nao, m): D_ba, a kept
        np.matmul(d, ao_t[0], out=e_mat[s])  # E_b = sum_a D_ba chi_a
        e_kept = e_mat[s] if cols is None else e_mat[s][cols]  # (m, ng)
        rho[s, 0] = np.einsum("bg,bg->g", e_kept, ao_t[0])
        for i in range(1, 4):
            rho[s, i] = 2.0 * np.einsum("bg,bg->g", e_kept, ao_t[i])
        c = (d if cols is None else d[cols]) @ ao_t[1:4]  # (3, m, ng): gradients of E_b
        rho[s, 4] = 0.5 * np.einsum("ibg,ibg->g", c, ao_t[1:4])
    return rho, e_mat


def _total_density(ao0_t: np.ndarray, dm_spin: np.ndarray, nspin_eff: int) -> np.ndarray:
    """Total density (n,) in e/bohr^3 from AO values ao0_t (nao, n) and spin density
    matrices dm_spin (2, nao, nao); nspin_eff 1: restricted, dm_spin[0] is D/2."""
    rho = np.zeros(ao0_t.shape[-1])
    for s in range(nspin_eff):
        rho += np.einsum("bg,bg->g", dm_spin[s] @ ao0_t, ao0_t)
    return rho * (2.0 if nspin_eff == 1 else 1.0)


def kept_bytes(nao: int, ngrids: int, nspin_eff: int) -> int:
    """Memory (bytes) of the exchange features one evaluation keeps for a gradient
    (`DM21XC.keep_features`): F and hfx for both omegas at every grid point."""
    return 8 * len(OMEGAS) * nspin_eff * (nao + 1) * ngrids


def work_bytes(nao: int, block_points: int, ngrids: int, threads: int = 1) -> int:
    """Memory (bytes) one DM21 evaluation needs besides its caches.

    Per point of a block: AO values and gradients (4 nao), chi D and E (5 nao
    per spin), F for both omegas (2 nao per spin) and the potential's
    temporaries (2 nao) in float64; per grid point: the network inputs, the
    energy density and the mask kept for the final energy (and their
    copies); the network's threads; the potential and density matrices.
    An upper bound, used to size the caches and to refuse a budget too
    small for a job (`dm21cli.jobs.memory`).
    """
    per_point = 8 * (2 * (4 + 5 + 4 + 2) * nao + 64)
    per_grid_point = 8 * 2 * 14
    matrices = 8 * 12 * nao * nao
    return int(block_points * per_point + ngrids * per_grid_point
               + max(threads, 1) * NETWORK_THREAD_BYTES + matrices)


class DM21XC:
    """DM21 energy and potential for one molecule and one grid.

    network: a loaded `DM21Network`, used for the energies `energy` returns
    (and for the SCF unless scf_network is given); scf_network: the network
    `evaluate` uses (e.g. the float32 copy); max_memory_mb: the memory budget
    of the whole process (MB): the caches of exchange integrals and AO values
    take what is left of it after the process's resident memory and the
    evaluation's working arrays (see INTEGRAL_CACHE_SHARE); a budget that
    cannot hold the working arrays raises `ResourceError`.  cache_bytes: what the
    caches may take instead (0: nothing cached; tests and benchmarks).
    """

    def __init__(self, network: DM21Network, max_memory_mb: float = 4000.0,
                 rho_screen: float = RHO_SCREEN, scf_network: DM21Network | None = None,
                 integral_dtype=np.float64, cache_bytes: float | None = None):
        self.network = network
        self.scf_network = scf_network if scf_network is not None else network
        self.max_memory_mb = float(max_memory_mb)
        #: total density (e/bohr^3) below which grid points are skipped
        self.rho_screen = float(rho_screen)
        #: orbitals below this on a whole block are left out of its products (AO_SCREEN)
        self.ao_screen = AO_SCREEN
        #: storage precision of the cached exchange integrals (see `ExchangeIntegrals`)
        self.integral_dtype = np.dtype(integral_dtype)
        self.n_evaluations = 0
        #: wall seconds spent per phase, summed over evaluations
        self.timings_s = {"ao_density": 0.0, "integral_memory": 0.0, "exchange_integrals": 0.0,
                          "exchange_features": 0.0, "network": 0.0, "potential": 0.0}
        #: (dm_spin, restricted, exc, then per grid point: e, network inputs x,
        #: kept mask) of the latest `evaluate`
        self.last = None
        #: keep the exchange features of the latest `evaluate` (when the budget has room
        #: for them, see `_sizes`), so that a nuclear gradient at the same density reuses
        #: them instead of computing its integrals again (`blocks`); set by the jobs
        #: that compute a gradient after their SCF
        self.keep_features = False
        #: (dm_spin, restricted, {(p0, p1): (F, hfx)}) of the latest evaluation, or None
        self._kept = None
        self._keep_room = False  # whether the budget has room for them on the current grid
        self._integrals: ExchangeIntegrals | None = None
        self._ao: dict[tuple[int, int], np.ndarray] = {}
        self._ao_bytes = 0
        #: per block (p0, p1): the block-relative points evaluated (None: all)
        self._points: dict[tuple[int, int], np.ndarray | None] = {}
        #: per block: the orbitals not negligible on its evaluated points (None: all)
        self._cols: dict[tuple[int, int], np.ndarray | None] = {}
        #: per block: the left-out points a later density reached (block-relative, sorted),
        #: evaluated beside the block's first set, whose cached AO values and integrals stay
        self._added: dict[tuple[int, int], np.ndarray] = {}
        #: per block: the AO values (n, nao) at its left-out points, when the budget has room
        self._ao_out: dict[tuple[int, int], np.ndarray] = {}
        #: the density whose left-out points were last checked (`_regrow`)
        self._checked_dm: np.ndarray | None = None
        #: left-out points that joined the evaluated set since the grid was set up
        self.points_added = 0
        self._grid_key = None
        self._ao_budget = 0.0  # bytes the AO cache may take on the current grid
        self.cache_bytes = cache_bytes
        self._blk: int | None = None  # grid points per block on the current grid
        #: optional hook progress(step, phase, block, nblocks), called when a phase
        #: (one of PHASES) starts on a block of grid points: step "evaluation N"
        #: (N counts `evaluate` calls from 1) or "final energy"; block 0 ..
        #: nblocks - 1.  At most one call per phase and block, none in the loops.
        self.progress = None
        self._step = ("", 0, 1)  # (step, block, nblocks) for `_phase`

    def _phase(self, phase: str) -> None:
        """Tell the progress hook that `phase` starts on the current block."""
        if self.progress is not None:
            step, block, nblocks = self._step
            self.progress(step, phase, block, nblocks)

    @property
    def mixed(self) -> bool:
        """Whether the SCF runs another precision than the final energy."""
        return self.scf_network is not self.network

    # ------------------------------------------------------------------
    def _prepare(self, mol, grids, nspin_eff: int = 2) -> ExchangeIntegrals:
        """Integrals and AO cache for this grid (rebuilt when the grid changes)."""
        coords = grids.coords
        # identity alone could be reused by a new array: the content decides.  The atoms'
        # positions and the basis belong to the key: a Mole moved in place (set_geom_, as
        # optimisers and ASE do) keeps its id, and a grid object need not be rebuilt with it
        key = (id(mol), mol.atom_coords().tobytes(), mol.nao_nr(), coords.shape,
               coords[0].tobytes(), coords[-1].tobytes(), float(np.sum(coords)))
        if self._integrals is None or self._grid_key != key:
            self._integrals, self._ao, self._ao_bytes, self._points = None, {}, 0, {}
            self._ao_out, self._checked_dm, self.points_added, self._added = {}, None, 0, {}
            self._kept, self._cols = None, {}
            nao, ngrids = mol.nao_nr(), len(coords)
            if self.cache_bytes is None:
                cache_bytes, self._blk = self._sizes(nao, ngrids)
                kept = kept_bytes(nao, ngrids, nspin_eff)
                self._keep_room = self.keep_features and cache_bytes >= kept
                if self._keep_room:
                    cache_bytes -= kept
            else:
                cache_bytes, self._blk = self.cache_bytes, self._budget_block_points(nao, ngrids)
                self._keep_room = self.keep_features
            self._integrals = ExchangeIntegrals(mol, grids.coords, self.timings_s,
                                                dtype=self.integral_dtype,
                                                budget_bytes=INTEGRAL_CACHE_SHARE * cache_bytes)
            self._ao_budget = (1.0 - INTEGRAL_CACHE_SHARE) * cache_bytes
            self._grid_key = key
        return self._integrals

    def _sizes(self, nao: int, ngrids: int) -> tuple[float, int]:
        """(bytes the caches may take, grid points per block) from what is left of the
        budget after the process's resident memory and the evaluation's working arrays;
        ResourceError if even blocks of MIN_BLOCK_POINTS do not fit."""
        from dm21cli.core.errors import ResourceError
        from dm21cli.core.resources import current_rss_mb

        threads = getattr(self.scf_network, "workers", 1) or 1
        held = current_rss_mb() * 1e6
        fixed = work_bytes(nao, 0, ngrids, threads)
        per_point = work_bytes(nao, 1, 0, 0) - work_bytes(nao, 0, 0, 0)
        room = self.max_memory_mb * 1e6 - held - fixed
        blk = int(min(BLOCK_WORK_SHARE * self.max_memory_mb * 1e6, room) // per_point)
        blk = max(MIN_BLOCK_POINTS, min(MAX_BLOCK_POINTS, blk, ngrids))
        free = room - blk * per_point
        if free < 0:
            need = (held + fixed + blk * per_point) / 1e6
            raise ResourceError(
                f"the memory budget of {self.max_memory_mb:.0f} MB is too small: the process holds "
                f"{held / 1e6:.0f} MB and a DM21 evaluation on {ngrids} grid points needs "
                f"{need - held / 1e6:.0f} MB more; give at least {need * 1.1:.0f} MB (--memory)")
        return free, blk

    def _block_points(self, mol, coords: np.ndarray, p0: int, p1: int, dm_spin: np.ndarray,
                      nspin_eff: int):
        """The points of block p0:p1 the functional is evaluated at, and their AO values.

        Returns (points, ao_t, cols): points are block-relative indices (None: all of
        the block), ao_t (4, m, n) the values and gradients there of the orbitals cols
        (None: all nao; the others vanish on the block, see `_ao_columns`).  The points
        are chosen at the first density evaluated on the grid: those whose total
        density is at least rho_screen; `_regrow` adds the left-out points a later
        density reaches.  Between changes the set is fixed, which keeps E_xc a
        smooth function of the density (its potential exact) and lets the AO
        values and integrals be stored at those points only.
        """
        key = (p0, p1)
        ao_t = self._ao.get(key)
        if ao_t is not None:
            return self._points[key], ao_t, self._cols[key]
        if key in self._points:  # chosen before, AO values not kept
            points, cols = self._points[key], self._cols[key]
            ao_t = _eval_ao_t(mol, coords[p0:p1] if points is None else coords[p0:p1][points], 1)
        else:
            ao_t = _eval_ao_t(mol, coords[p0:p1], 1)
            rho = _total_density(ao_t[0], dm_spin, nspin_eff)
            keep = rho >= self.rho_screen
            points = None if self.rho_screen <= 0 or keep.all() else np.flatnonzero(keep)
            if points is not None:
                self._keep_ao_out(key, ao_t[0][:, np.flatnonzero(~keep)])
                ao_t = np.take(ao_t, points, axis=2)
            self._points[key] = points
            cols = self._cols[key] = _ao_columns(ao_t, self.ao_screen)
        if cols is not None:
            ao_t = np.take(ao_t, cols, axis=1)  # (np.take: 2x faster than fancy indexing here)
        ao_t = np.ascontiguousarray(ao_t)  # (a gather above already is)
        if self._ao_bytes + ao_t.nbytes <= self._ao_budget:
            self._ao[key] = ao_t
            self._ao_bytes += ao_t.nbytes
        return points, ao_t, cols

    def _keep_ao_out(self, key, ao_out_t: np.ndarray) -> None:
        """Keep the AO values (nao, n) of a block's left-out points if the budget has room."""
        ao_out_t = np.ascontiguousarray(ao_out_t)
        if self._ao_bytes + ao_out_t.nbytes <= self._ao_budget:
            self._ao_out[key] = ao_out_t
            self._ao_bytes += ao_out_t.nbytes

    def _left_out(self, key) -> np.ndarray:
        """The block-relative points of block `key` that are not evaluated (sorted)."""
        p0, p1 = key
        points = self._points[key]
        evaluated = points if key not in self._added else np.union1d(points, self._added[key])
        return np.setdiff1d(np.arange(p1 - p0), evaluated, assume_unique=True)

    def _regrow(self, mol, coords: np.ndarray, dm_spin: np.ndarray, nspin_eff: int) -> int:
        """Add to each block's evaluated points the left-out ones where the density
        `dm_spin` has reached rho_screen; returns how many were added.

        The points added are evaluated beside the block's first set (`_added`), so
        that set keeps its cached AO values and exchange integrals; the added ones are
        computed at every evaluation (`blocks`), usually a handful.  Called by `blocks`
        once per new density, so no density is ever evaluated on a set chosen for
        another.
        """
        added = 0
        for key, points in list(self._points.items()):
            if points is None:
                continue
            p0, p1 = key
            out = self._left_out(key)
            if len(out) == 0:
                continue
            ao_out = self._ao_out.get(key)
            if ao_out is None:
                ao_out = _eval_ao_t(mol, coords[p0:p1][out], 0)
            rho = _total_density(ao_out, dm_spin, nspin_eff)
            grow = rho >= self.rho_screen
            if not grow.any():
                continue
            added += int(np.count_nonzero(grow))
            self._added[key] = np.union1d(self._added.get(key, np.zeros(0, dtype=int)), out[grow])
            old = self._ao_out.pop(key, None)
            if old is not None:
                self._ao_bytes -= old.nbytes
                if not grow.all():
                    self._keep_ao_out(key, old[:, ~grow])
            self._integrals.forget(p0, p1, "added")
        self.points_added += added
        return added

    @property
    def backend(self):
        """What computes the exchange integrals on the current grid (`backends.select`), or
        None before the first evaluation."""
        return None if self._integrals is None else self._integrals.backend

    def integrals_summary(self) -> dict | None:
        """How the exchange integrals were held: {'storage', 'grid_points',
        'points_evaluated', 'points_cached', 'cache_mb', 'points_computed', 'backend'}
        (points_computed counts every point whose integrals were computed, over
        all evaluations) and, with the compiled kernel, 'screened_feature_blocks' and
        'screened_force_blocks': the fractions of shell-pair blocks its density
        screening left out of the uncached features and of the gradient; or None
        before the first evaluation."""
        ints = self._integrals
        if ints is None:
            return None
        evaluated = sum(p1 - p0 if pts is None else len(pts) for (p0, p1), pts in self._points.items())
        evaluated += sum(len(added) for added in self._added.values())
        return {"storage": ints.dtype.name, "grid_points": len(ints.coords),
                "points_evaluated": int(evaluated),
                "points_cached": int(ints.cached_bytes // ints.bytes_per_point),
                "cache_mb": round(ints.cached_bytes / 1e6, 1),
                "points_computed": int(ints.points_computed), "backend": ints.backend.name,
                **ints.backend.screening()}

    def block_points(self, nao: int, ngrids: int) -> int:
        """Grid points per block on the current grid (chosen with the caches, see
        `_sizes`), or from the budget alone before the first evaluation."""
        if self._blk is not None:
            return self._blk
        return self._budget_block_points(nao, ngrids)

    def _budget_block_points(self, nao: int, ngrids: int) -> int:
        """Grid points per block with its working arrays within BLOCK_WORK_SHARE of the budget.
        (The nu integrals live in their own cache, see `dm21cli.functional.features`.)"""
        per_point = work_bytes(nao, 1, 0, 0) - work_bytes(nao, 0, 0, 0)
        blk = int(BLOCK_WORK_SHARE * self.max_memory_mb * 1e6 // per_point)
        return max(MIN_BLOCK_POINTS, min(MAX_BLOCK_POINTS, blk, ngrids))

    def blocks(self, mol, grids, dm_spin: np.ndarray, restricted: bool, store: dict | None = None):
        """Per block of grid points: (at, ao, cols, rho, x, F, E).

        at: the grid indices of the block's n evaluated points (a slice or an
        index array, see `_block_points`); at those points, ao_t (4, m, n) the values
        and gradients of the orbitals cols (None: all nao, see `_ao_columns`); rho
        (2, 5, n) per spin: density, gradient, tau; x (n, 11) network inputs;
        F (n_omega, nspin_eff, nao, n) and E (nspin_eff, nao, n) (see
        `dm21cli.features`) with nspin_eff = 1 if restricted (then E is that of
        D^a = D/2).  The energy and the nuclear gradient (`dm21cli.functional.xc_grad`)
        both go through here, so they see the same points and features.
        At the density of the latest evaluation, the features it kept are used
        (see keep_features); store: a dict that receives each block's features
        when the budget has room for them.
        """
        coords = grids.coords
        ngrids = len(grids.weights)
        nao = dm_spin.shape[-1]
        nspin_eff = 1 if restricted else 2
        integrals = self._prepare(mol, grids, nspin_eff)
        if self._points and (self._checked_dm is None or self._checked_dm.shape != dm_spin.shape
                             or not np.array_equal(self._checked_dm, dm_spin)):
            if self._regrow(mol, coords, dm_spin, nspin_eff):
                self._kept = None
        self._checked_dm = np.array(dm_spin)
        kept = self._kept[2] if (self._kept is not None and self._kept[1] == restricted
                                 and np.array_equal(self._kept[0], dm_spin)) else None
        if kept is None:
            integrals.begin_pass()
        if not self._keep_room:
            store = None
        blk = self.block_points(nao, ngrids)
        clock = time.perf_counter
        nblocks = -(-ngrids // blk)
        for p0 in range(0, ngrids, blk):
            p1 = min(p0 + blk, ngrids)
            self._step = (self._step[0], p0 // blk, nblocks)
            t0 = clock()
            points, ao_t, cols = self._block_points(mol, coords, p0, p1, dm_spin, nspin_eff)
            if ao_t.shape[-1] == 0:
                continue
            rho, e_mat = _density(ao_t, dm_spin[:nspin_eff], cols)
            if restricted:
                rho = np.concatenate([rho, rho])
            self.timings_s["ao_density"] += clock() - t0
            if kept is not None and (p0, p1) in kept:
                f_mat, hfx = kept[(p0, p1)]
            else:
                if self.progress is not None:
                    if not integrals.memory_mapped:
                        self._phase("integral memory")
                    self._phase("exchange integrals" if integrals.computes(p0, p1)
                                else "exchange features")
                f_mat, hfx = integrals.features(p0, p1, e_mat, points)
            if store is not None:
                store[(p0, p1)] = (f_mat, hfx)
            x = _network_inputs_of(rho, hfx, restricted)
            at = slice(p0, p1) if points is None else p0 + points
            yield at, ao_t, cols, rho, x, f_mat, e_mat
            if (p0, p1) in self._added:  # the points a later density reached (see _regrow)
                yield self._added_chunk(mol, coords, p0, p1, dm_spin, restricted, kept, store)

    def _added_chunk(self, mol, coords, p0: int, p1: int, dm_spin, restricted: bool, kept, store):
        """`blocks`' tuple for the points block p0:p1 gained after its set was chosen: their AO
        values computed anew, their integrals cached as their own block when there is room."""
        nspin_eff = 1 if restricted else 2
        added = self._added[(p0, p1)]
        t0 = time.perf_counter()
        ao_t = _eval_ao_t(mol, coords[p0:p1][added], 1)
        rho, e_mat = _density(ao_t, dm_spin[:nspin_eff])
        if restricted:
            rho = np.concatenate([rho, rho])
        self.timings_s["ao_density"] += time.perf_counter() - t0
        key = (p0, p1, "added")
        if kept is not None and key in kept:
            f_mat, hfx = kept[key]
        else:
            f_mat, hfx = self._integrals.features(p0, p1, e_mat, added, key=key)
        if store is not None:
            store[key] = (f_mat, hfx)
        return p0 + added, ao_t, None, rho, _network_inputs_of(rho, hfx, restricted), f_mat, e_mat

    def _network_screened(self, network: DM21Network, x: np.ndarray, keep: np.ndarray | None,
                          with_grad: bool):
        """Network energy density (and gradient), zero where keep is False (None: all
        points), timed as the network phase."""
        self._phase("network")
        t0 = time.perf_counter()
        if keep is None or keep.all():
            out = network(x, with_grad)
        else:
            e = np.zeros(len(x))
            de = np.zeros_like(x) if with_grad else None
            if keep.any():
                res = network(x[keep], with_grad)
                if with_grad:
                    e[keep], de[keep] = res
                else:
                    e[keep] = res
            out = (e, de) if with_grad else e
        self.timings_s["network"] += time.perf_counter() - t0
        return out

    # ------------------------------------------------------------------
    def evaluate(self, mol, grids, dm_spin: np.ndarray, restricted: bool):
        """E_xc and its potential matrices, with the SCF network.

        mol: pyscf Mole; grids: built pyscf Grids (coords in bohr, weights);
        dm_spin: (2, nao, nao) alpha and beta density matrices;
        restricted: if True the result is dE/dD for D = D^a + D^b with D^a = D^b.
        Returns (nelec, exc in Ha, vxc): vxc is (nao, nao) if restricted else
        (2, nao, nao).
        """
        dm_spin = np.asarray(dm_spin, dtype=np.float64)
        nao = dm_spin.shape[-1]
        weights = grids.weights
        nspin_eff = 1 if restricted else 2

        exc = 0.0
        nelec = 0.0
        vmat = np.zeros((nspin_eff, nao, nao))  # non-symmetrised half
        vtau = np.zeros((nspin_eff, nao, nao))
        e_points = np.zeros(len(weights))
        x_points = np.zeros((len(weights), 11))  # kept for the final pass at this density
        keep_points = np.zeros(len(weights), dtype=bool)
        self._step = (f"evaluation {self.n_evaluations + 1}", 0, 1)
        self._kept = None  # the previous density's features go before this one's are made
        store = {} if self.keep_features else None
        for at, ao_t, cols, rho, x, f_mat, _ in self.blocks(mol, grids, dm_spin, restricted, store):
            w = weights[at]
            e, de = self._network_screened(self.scf_network, x, None, True)
            self._phase("potential")
            t1 = time.perf_counter()
            e_points[at], x_points[at], keep_points[at] = e, x, True
            exc += float(np.dot(w, e))
            nelec += float(np.dot(w, x[:, 0] + x[:, 1]))
            _add_potential(vmat, vtau, ao_t, cols, rho, w, de, f_mat, restricted)
            self.timings_s["potential"] += time.perf_counter() - t1
        vxc = vmat + vmat.transpose(0, 2, 1) + vtau
        self.n_evaluations += 1
        self.last = (dm_spin, restricted, exc, e_points, x_points, keep_points)
        if store:
            self._kept = (dm_spin, restricted, store)
        if restricted:
            return nelec, exc, vxc[0]
        return nelec, exc, vxc

    def _network_inputs(self, mol, grids, dm_spin: np.ndarray, restricted: bool):
        """Network inputs x (ngrids, 11) and the kept-point mask (ngrids,) of a density."""
        dm_spin = np.asarray(dm_spin, dtype=np.float64)
        x_all = np.zeros((len(grids.weights), 11))
        keep_all = np.zeros(len(grids.weights), dtype=bool)
        for at, _, _, _, x, _, _ in self.blocks(mol, grids, dm_spin, restricted):
            x_all[at], keep_all[at] = x, True
        return x_all, keep_all

    def energy_density(self, mol, grids, dm_spin: np.ndarray, restricted: bool,
                       network=None) -> np.ndarray:
        """e(r) (Ha/bohr^3) per grid point, forward pass only, with `network`
        (default the final one); zero where the density is negligible."""
        x_all, keep_all = self._network_inputs(mol, grids, dm_spin, restricted)
        return self._network_screened(self.network if network is None else network,
                                      x_all, keep_all, False)

    def left_out_energy(self, mol, grids, dm_spin: np.ndarray, restricted: bool,
                        network=None) -> tuple[float, float, int]:
        """(E_xc in Ha, electrons, points) of the grid points the SCF left out
        (density below rho_screen), with `network` (default the final one), forward
        pass only: what the full grid adds to the screened E_xc.  Their exchange
        integrals are computed here once and not kept."""
        dm_spin = np.asarray(dm_spin, dtype=np.float64)
        network = self.network if network is None else network
        nspin_eff = 1 if restricted else 2
        self._prepare(mol, grids, nspin_eff)
        coords, weights = grids.coords, grids.weights
        out = [key[0] + self._left_out(key)
               for key, points in sorted(self._points.items()) if points is not None]
        out = np.concatenate(out) if out else np.zeros(0, dtype=int)
        blk = self.block_points(mol.nao_nr(), len(weights))
        nblocks = -(-len(out) // blk)
        exc = nelec = 0.0
        for q0 in range(0, len(out), blk):
            self._step = ("final energy, left-out points", q0 // blk, nblocks)
            at = out[q0:q0 + blk]
            rho, e_mat = _density(_eval_ao_t(mol, coords[at], 1), dm_spin[:nspin_eff])
            if restricted:
                rho = np.concatenate([rho, rho])
            self._phase("exchange integrals")
            hfx = self._integrals.features_at(coords[at], e_mat)[1]
            x = _network_inputs_of(rho, hfx, restricted)
            w = weights[at]
            exc += float(np.dot(w, self._network_screened(network, x, None, False)))
            nelec += float(np.dot(w, x[:, 0] + x[:, 1]))
        return exc, nelec, len(out)

    def final_correction(self, mol, grids, dm_spin: np.ndarray, restricted: bool,
                         nelec_expected: float | None = None) -> dict:
        """E_xc of the converged density on the full grid in the final precision,
        against the SCF's, and the checks that the density was evaluated where it is.

        Returns {'exc_scf_hartree', 'exc_final_hartree', 'correction_hartree',
        'final_points', 'final_points_skipped', 'left_out_points',
        'exc_left_out_hartree', 'nelec_grid', 'nelec_expected', 'problems'}; the
        correction is what to add to the SCF's total energy.  exc_final is the
        full grid's: the SCF's points with the final network (precision "mixed":
        float64, skipping the points that carry at most FINAL_SKIP_HARTREE of
        sum |w e|, see there), plus the points the SCF left out
        (`left_out_energy`).  The SCF values and the network inputs are taken
        from the latest evaluation when it was at this density (no features are
        computed again).

        problems lists, in words, every check the density fails (empty: passed):
        the density integrated on the SCF's points is nelec_expected (default:
        tr(D S)) to NELEC_RTOL; the left-out points carry at most
        SCREENED_EXC_TOL of E_xc; E_xc is negative when there are electrons.
        """
        dm_spin = np.asarray(dm_spin, dtype=np.float64)
        w = grids.weights
        self._step = ("final energy", 0, 1)
        if (self.last is not None and self.last[1] == restricted
                and np.array_equal(self.last[0], dm_spin)):
            exc_scf, e_scf, x_all, keep_all = self.last[2:]
        else:
            x_all, keep_all = self._network_inputs(mol, grids, dm_spin, restricted)
            e_scf = self._network_screened(self.scf_network, x_all, keep_all, False)
            exc_scf = float(np.dot(w, e_scf))
        nelec_grid = float(np.dot(w, x_all[:, 0] + x_all[:, 1]))
        if nelec_expected is None:
            s = mol.intor_symmetric("int1e_ovlp")
            nelec_expected = float(np.einsum("sij,ji->", dm_spin[:1 if restricted else 2], s)
                                   * (2.0 if restricted else 1.0))
        info = {"exc_scf_hartree": exc_scf, "exc_final_hartree": exc_scf, "correction_hartree": 0.0,
                "final_points": 0, "final_points_skipped": 0}
        exc_final = exc_scf
        if self.mixed:
            contrib = np.abs(w * e_scf)
            order = np.argsort(contrib)
            n_skip = int(np.searchsorted(np.cumsum(contrib[order]), FINAL_SKIP_HARTREE, side="right"))
            skip = np.zeros(len(w), dtype=bool)
            skip[order[:n_skip]] = True
            self._step = ("final energy", 0, 1)
            e_final = self._network_screened(self.network, x_all, keep_all & ~skip, False)
            e_final[skip] = e_scf[skip]
            exc_final = float(np.dot(w, e_final))
            info.update(final_points=int(np.count_nonzero(~skip & (e_scf != 0))),
                        final_points_skipped=n_skip)
        exc_out, nelec_out, n_out = self.left_out_energy(mol, grids, dm_spin, restricted)
        exc_final += exc_out
        info.update(exc_final_hartree=exc_final, correction_hartree=exc_final - exc_scf,
                    left_out_points=n_out, exc_left_out_hartree=exc_out,
                    nelec_grid=nelec_grid, nelec_left_out=nelec_out,
                    nelec_expected=nelec_expected, rho_screen=self.rho_screen)
        info["problems"] = density_problems(info)
        return info


def _add_potential(vmat: np.ndarray, vtau: np.ndarray, ao_t: np.ndarray, cols: np.ndarray | None,
                   rho: np.ndarray, w: np.ndarray, de: np.ndarray, f_mat: np.ndarray,
                   restricted: bool) -> None:
    """Add one block's dE_xc/dD^s to vmat (its non-symmetrised half) and vtau, both
    (nspin_eff, nao, nao).

    ao_t (4, m, n): values and gradients of the orbitals cols (None: all); rho (2, 5, n);
    w (n,) weights; de (n, 11) dE/dx of the network inputs; f_mat (n_omega, nspin_eff,
    nao, n) the exchange features' F.  Restricted: both spins add to the one matrix, and
    their coefficients are summed before the products, so each product is formed once.
    """
    grad = rho[0, 1:4] + rho[1, 1:4]
    scale = 0.5 if restricted else 1.0
    for t in range(len(vmat)):
        spins = (0, 1) if restricted else (t,)
        wv = sum(w * de[:, s] * 0.5 for s in spins)
        gcoef = sum(2.0 * (de[:, 2] * grad + de[:, 3 + s] * rho[s, 1:4]) * w for s in spins)
        k_short = sum(0.5 * w * de[:, 7 + 2 * s] for s in spins)
        k_long = sum(0.5 * w * de[:, 8 + 2 * s] for s in spins)
        wt = sum((0.5 * scale) * w * de[:, 5 + s] for s in spins)
        fs = f_mat[:, t]  # (n_omega, nao, n)
        aow_t = fs[0] * -k_short  # (nao, n)
        aow_t -= fs[1] * k_long
        local = ao_t[0] * wv
        for i in range(3):
            local += ao_t[1 + i] * gcoef[i]
        vt = sum((ao_t[i] * wt) @ ao_t[i].T for i in range(1, 4))
        if cols is None:
            aow_t += local
            vmat[t] += scale * (ao_t[0] @ aow_t.T)
            vtau[t] += vt
        else:
            aow_t[cols] += local
            vmat[t][cols] += scale * (ao_t[0] @ aow_t.T)
            vtau[t][np.ix_(cols, cols)] += vt


def density_problems(info: dict) -> list[str]:
    """The checks of `DM21XC.final_correction` on its record `info`: a list of what
    failed, in words (empty: all passed)."""
    problems = []
    n, n_grid = info["nelec_expected"], info["nelec_grid"]
    tol = NELEC_RTOL * abs(n) + NELEC_ATOL
    if not abs(n_grid - n) <= tol:
        problems.append(f"the density integrates to {n_grid:.6f} electrons on the grid points DM21 "
                        f"was evaluated at, not {n:.6f} (tolerance {tol:.1e})")
    if not abs(info["exc_left_out_hartree"]) <= SCREENED_EXC_TOL:
        problems.append(f"the grid points left out as empty (density < {info['rho_screen']:g}) carry "
                        f"{info['exc_left_out_hartree']:.2e} Ha of E_xc (at most "
                        f"{SCREENED_EXC_TOL:.0e} allowed)")
    if n > NELEC_ATOL and not info["exc_final_hartree"] < 0.0:
        problems.append(f"E_xc = {info['exc_final_hartree']:.3e} Ha is not negative for "
                        f"{n:.4f} electrons")
    return problems


def _network_inputs_of(rho: np.ndarray, hfx: np.ndarray, restricted: bool) -> np.ndarray:
    """The network inputs x (n, 11) from rho (2, 5, n) per spin and hfx (n_omega, nspin_eff, n)."""
    if restricted:
        hfx = np.concatenate([hfx, hfx], axis=1)
    grad_a, grad_b = rho[0, 1:4], rho[1, 1:4]
    grad = grad_a + grad_b
    return np.column_stack([
        rho[0, 0], rho[1, 0],
        np.einsum("ig,ig->g", grad, grad),
        np.einsum("ig,ig->g", grad_a, grad_a),
        np.einsum("ig,ig->g", grad_b, grad_b),
        rho[0, 4], rho[1, 4],
        hfx[0, 0], hfx[1, 0], hfx[0, 1], hfx[1, 1],
    ])


def split_spin(dm: np.ndarray):
    """(restricted, dm_spin (2, nao, nao), dm_total (nao, nao))."""
    dm = np.asarray(dm)
    if dm.ndim == 2:
        return True, np.stack([dm * 0.5, dm * 0.5]), dm
    return False, dm, dm[0] + dm[1]
