"""Local exact-exchange features of DM21 on a DFT grid.

For spin s and range-separation parameter omega the feature is the local
exact-exchange energy density (Ha / bohr^3)

    hfx_s(r) = -1/2 sum_bd E_b(r) E_d(r) nu_bd(r),
    E_b(r)   = sum_a D^s_ab chi_a(r),
    nu_bd(r) = int chi_b(r') v_omega(|r - r'|) chi_d(r') dr',

with v_0 = 1/r and v_0.4 = erf(0.4 r)/r.  Its derivative with respect to
D^s_ab is -chi_a(r) F_b(r) with F_b(r) = sum_d nu_bd(r) E_d(r), which is the
intermediate this module returns.

The nu integrals do not depend on the density.  With the compiled kernels
they come from dm21cli's own McMurchie-Davidson kernel (`_gridcoulomb.c`,
planned by `dm21cli.functional.hermite`), both omegas in one pass: measured
on benzene/def2-SVP, 3.1 to 3.3 times faster than libcint's int1e_grids on one
thread.  `ExchangeIntegrals` keeps the lower triangle of each block (nu is
symmetric in b, d: half the memory) for the next SCF cycle, in float32 when
asked (half the memory again), within the memory budget and in two stages
(FIRST_CACHE_BYTES, then the rest from pass LATE_CACHE_PASS on); with the
kernels the cache is laid out chunk by chunk.  Blocks that are not cached
are recomputed in every cycle, each shell pair's integrals contracted with E
while they are in cache (`kernels.coulomb_features`), so nu is never stored.
Without the kernels PySCF's int1e_grids computes a full block in its own
layout (grid index fastest), which is packed, and PySCF's seminumerical-
exchange driver (`pyscf.sgx`) does the uncached blocks.  Either way only the
points the caller asks for are used.
"""

from __future__ import annotations

import time

import numpy as np

from dm21cli.functional import hermite, kernels

#: Range-separation parameters of the two exchange features (1/bohr).
OMEGAS = (0.0, 0.4)
#: Without the compiled kernels: grid points per int1e_grids call when filling
#: the cache (a reused scratch block of 2 x nao^2 x SCRATCH_POINTS doubles;
#: int1e_grids is as fast at 1024 points as at 8192).  Fewer (down to one
#: kernels.CHUNK) when that block would take more than SCRATCH_SHARE of the
#: cache's budget.
SCRATCH_POINTS = 1024  # a multiple of kernels.CHUNK
SCRATCH_SHARE = 0.25
#: The cache is filled in two stages.  At most FIRST_CACHE_BYTES are mapped and
#: filled in the first pass over the grid; the rest of the budget only from pass
#: LATE_CACHE_PASS on, when the SCF has shown that it needs many evaluations.
#: With the compiled kernel, a pass that recomputes the integrals and contracts them
#: in cache costs about as much as filling and reading a cache, and mapping fresh
#: memory costs 0.3 to 2.7 s per GB on this project's VM: measured on
#: benzene/def2-SVP (three evaluations), the whole float32 cache (7 GB) made the run
#: no faster than recomputing 80% of the points (50.4 against 52.4 s), at 8.2
#: against 3.1 GB.  An SCF's evaluations plus one gradient pass stay below
#: LATE_CACHE_PASS in the usual three or four.
FIRST_CACHE_BYTES = 1.5e9
LATE_CACHE_PASS = 6
#: Shell-pair screening threshold of the direct (uncached) path.  Measured on
#: benzene/def2-SVP: hfx changes by at most 3e-14 Ha/bohr^3 at 1e-13.
DIRECT_SCREEN = 1e-13


def kernel_integrals(mol) -> bool:
    """Whether `ExchangeIntegrals` computes the integrals for mol with the compiled
    McMurchie-Davidson kernel (spherical basis functions): no scratch block, and
    the uncached path contracts them in cache."""
    return kernels.available() and not mol.cart


def _direct_driver(mol):
    """PySCF's SGX K-contraction driver for mol, or None if this PySCF lacks it.

    It is a private function of `pyscf.sgx.sgx_jk` (PySCF 2.x); without it the
    direct path falls back to computing nu and contracting it.
    """
    try:
        from pyscf.sgx import sgx_jk

        return sgx_jk._gen_jk_direct(mol, "s2", False, True, DIRECT_SCREEN)
    except (ImportError, AttributeError, TypeError):  # pragma: no cover - older/newer PySCF
        return None


def direct_features(mol, coords: np.ndarray, e_mat: np.ndarray, driver=None):
    """F (n_omega, nspin, nao, n) and hfx (n_omega, nspin, n) without storing nu.

    coords: (n, 3) bohr; e_mat: (nspin, nao, n).  driver: from `_direct_driver`
    (built here when None); if PySCF has none, nu is computed and contracted.
    """
    driver = _direct_driver(mol) if driver is None else driver
    if driver is False or driver is None:
        return contract(compute_nu(mol, coords), e_mat)
    nspin, nao, n = e_mat.shape
    f = np.empty((len(OMEGAS), nspin, nao, n))
    ones = np.ones(n)
    for i, omega in enumerate(OMEGAS):
        with mol.with_range_coulomb(omega):
            _, f[i] = driver(mol, np.ascontiguousarray(coords), None, np.array(e_mat, order="C"), ones)
    hfx = -0.5 * np.einsum("sbg,wsbg->wsg", e_mat, f)
    return f, hfx


def compute_nu(mol, coords: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """nu for both omegas at `coords` (n, 3) bohr: shape (n_omega, nao, nao, n).

    PySCF's int1e_grids fills a Fortran-ordered (n, nao, nao) array; writing
    it into a C-ordered (nao, nao, n) buffer is the same memory, so nothing
    is copied.  hermi=1 computes one triangle of shell pairs.
    """
    nao = mol.nao_nr()
    if out is None:
        out = np.empty((len(OMEGAS), nao, nao, len(coords)))
    for i, omega in enumerate(OMEGAS):
        with mol.with_range_coulomb(omega):
            mol.intor("int1e_grids", hermi=1, grids=coords, out=out[i])
    return out


def contract(nu: np.ndarray, e_mat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F and hfx for one block of grid points.

    nu: (n_omega, nao, nao, ng), symmetric in the AO pair; e_mat: (nspin, nao, ng)
    with E_b(r) per spin.  Returns F (n_omega, nspin, nao, ng) and hfx
    (n_omega, nspin, ng) in Ha/bohr^3.
    """
    n_omega, nao = nu.shape[0], nu.shape[1]
    nspin, _, ng = e_mat.shape
    f = np.empty((n_omega, nspin, nao, ng))
    for w in range(n_omega):
        for b in range(nao):  # nu[w, b] is one contiguous (nao, ng) slab
            np.einsum("dg,sdg->sg", nu[w, b], e_mat, out=f[w, :, b])
    hfx = -0.5 * np.einsum("sbg,wsbg->wsg", e_mat, f)
    return f, hfx


def pack_lower(nu_full: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Lower triangle of a symmetric (nao, nao, n) block as (nao (nao + 1) / 2, n).

    Row b of the result's b-th slab holds nu_b0 .. nu_bb; each slab is one
    contiguous copy.
    """
    nao = nu_full.shape[0]
    off = 0
    for b in range(nao):
        out[off:off + b + 1] = nu_full[b, :b + 1]
        off += b + 1
    return out


def contract_packed(packed: np.ndarray, e_mat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`contract` for lower-triangle storage: packed (n_omega, nao (nao + 1) / 2, ng).

    F_b = sum_{d <= b} nu_bd E_d + sum_{d > b} nu_db E_d: each stored slab
    nu_b0..nu_bb serves both sums, so every integral is read once.
    """
    nspin, nao, ng = e_mat.shape
    n_omega = packed.shape[0]
    f = np.zeros((n_omega, nspin, nao, ng))
    tmp = np.empty((nspin, nao, ng))
    for w in range(n_omega):
        off = 0
        for b in range(nao):
            rows = packed[w, off:off + b + 1]  # (b + 1, ng): nu_b0 .. nu_bb
            f[w, :, b] += np.einsum("dg,sdg->sg", rows, e_mat[:, :b + 1])
            if b:
                np.multiply(rows[None, :b], e_mat[:, b, None, :], out=tmp[:, :b])
                f[w, :, :b] += tmp[:, :b]
            off += b + 1
    hfx = -0.5 * np.einsum("sbg,wsbg->wsg", e_mat, f)
    return f, hfx


class ExchangeIntegrals:
    """nu_bd(r) for both omegas on a fixed set of grid points.

    mol: pyscf Mole; coords: (ngrids, 3) grid points in bohr;
    budget_bytes: what the cache (and the scratch block that fills it) may take.
    dtype: storage precision of the cached integrals (float64, or float32 for
    half the memory: measured E_xc change 1.5e-9 Ha for water/def2-TZVP and
    1.8e-8 Ha for benzene/def2-SVP, where it lets the whole grid be cached).
    timings_s: a dict whose 'exchange_integrals', 'exchange_features' and
    'integral_memory' (mapping the cache's memory) entries receive the wall
    seconds spent.
    """

    def __init__(self, mol, coords: np.ndarray, timings_s: dict | None = None,
                 dtype=np.float64, budget_bytes: float = 0.0):
        self.mol = mol
        self.coords = np.asarray(coords)
        nao = mol.nao_nr()
        self.npair = nao * (nao + 1) // 2
        self.dtype = np.dtype(dtype)
        #: cache bytes per grid point: the lower triangle of nu, both omegas
        self.bytes_per_point = self.dtype.itemsize * self.npair * len(OMEGAS)
        #: grid points per chunk of the cached layout (None: NumPy's layout, no kernels)
        self.chunk = kernels.CHUNK if kernels.available() else None
        #: whether the compiled kernel computes the integrals (no scratch block)
        self.direct_fill = kernel_integrals(mol)
        step = kernels.CHUNK
        if self.direct_fill:
            self.scratch_points = 0
            self.budget_bytes = float(budget_bytes) if budget_bytes >= self.bytes_per_point * step else 0.0
        else:
            # the scratch block used while filling the cache comes out of the same budget
            point_bytes = 8 * len(OMEGAS) * nao * nao
            self.scratch_points = int(min(SCRATCH_POINTS, SCRATCH_SHARE * budget_bytes // point_bytes)
                                      // step * step)
            if self.scratch_points < step:  # not even one chunk: no cache
                self.scratch_points, self.budget_bytes = 0, 0.0
            else:
                self.budget_bytes = max(budget_bytes - point_bytes * self.scratch_points, 0.0)
        #: whether the integrals of the whole grid fit in the cache
        self.cached = self.bytes_per_point * len(self.coords) <= self.budget_bytes
        self.cached_bytes = 0
        #: grid points whose integrals were computed, summed over calls
        self.points_computed = 0
        self.timings_s = timings_s if timings_s is not None else {
            "exchange_integrals": 0.0, "exchange_features": 0.0}
        #: (p0, p1) -> packed nu (n_omega, npair, n) at that block's points
        self._cache: dict[tuple[int, int], np.ndarray] = {}
        #: pre-faulted allocations of the cache: the first stage, then the rest of the budget
        self._arenas: list[np.ndarray] = []
        self._arena_used = 0  # bytes of the last arena handed out
        #: passes over the grid begun (`begin_pass`)
        self.passes = 0
        self._late_mapped = False
        self._driver = None  # the direct path's driver, built on first use (False: none)
        self._scratch: np.ndarray | None = None  # full nu of one block, reused
        self._plan: hermite.Plan | None = None  # the compiled kernel's plan, built on first use

    @property
    def memory_mapped(self) -> bool:
        """Whether the cache's first stage is mapped (the first `features` call maps it)."""
        return bool(self._arenas)

    def computes(self, p0: int, p1: int) -> bool:
        """Whether `features` computes the integrals of block p0:p1 (they are not cached)."""
        return (p0, p1) not in self._cache

    def begin_pass(self) -> None:
        """The caller starts a pass over the grid (an SCF evaluation, a gradient): from
        pass LATE_CACHE_PASS on, the rest of the budget may be cached."""
        self.passes += 1

    def _cache_limit(self) -> float:
        """Bytes the cache may hold now (see FIRST_CACHE_BYTES)."""
        total = min(self.bytes_per_point * len(self.coords), self.budget_bytes)
        return total if self.passes >= LATE_CACHE_PASS else min(total, FIRST_CACHE_BYTES)

    def _map_arena(self, nbytes: float) -> None:
        """One more pre-faulted allocation for the cache, timed as its own phase: mapping
        fresh memory costs 0.4 to 2.7 s per GB on this project's VM, depending on
        whether the host has backed the pages before."""
        from dm21cli.core.resources import prefaulted_empty

        t0 = time.perf_counter()
        self._arenas.append(prefaulted_empty(nbytes).view(self.dtype))
        self._arena_used = 0
        self.timings_s["integral_memory"] = (self.timings_s.get("integral_memory", 0.0)
                                             + time.perf_counter() - t0)

    def _prepare_arena(self) -> None:
        """Map the cache's memory the limit allows and no arena holds yet (before the
        integral clock starts)."""
        mapped = sum(a.nbytes for a in self._arenas)  # the last arena's unused end is lost
        more = min(self._cache_limit() - self.cached_bytes, self.budget_bytes - mapped)
        if more >= self.bytes_per_point * kernels.CHUNK or not self._arenas:
            self._map_arena(max(more, 0.0))

    def _cache_slot(self, n_points: int) -> np.ndarray | None:
        """A (n_omega, npair, n_points) view into the last arena (flat per omega in the
        kernels' chunked layout), or None when it is full."""
        nbytes = self.bytes_per_point * n_points
        arena = self._arenas[-1]
        if self._arena_used + nbytes > arena.nbytes:
            self._scratch = None  # the cache is full: no more blocks to pack
            return None
        start = self._arena_used // self.dtype.itemsize
        self._arena_used += nbytes
        self.cached_bytes += nbytes
        stop = start + nbytes // self.dtype.itemsize
        if self.chunk:
            return arena[start:stop].reshape(len(OMEGAS), self.npair * n_points)
        return arena[start:stop].reshape(len(OMEGAS), self.npair, n_points)

    def _hermite_plan(self) -> hermite.Plan:
        """The McMurchie-Davidson plan of the molecule's shell pairs, built once."""
        if self._plan is None:
            self._plan = hermite.build_plan(self.mol)
        return self._plan

    def _compute_packed(self, coords: np.ndarray, slot: np.ndarray) -> np.ndarray:
        """nu at coords packed into slot (n_omega, npair, n), scratch_points at a time.

        With the compiled kernels, slot is (n_omega, npair * n) in their chunked
        layout (see `dm21cli.functional.kernels`), filled by the McMurchie-Davidson
        kernel when `direct_fill`.
        """
        if self.direct_fill:
            kernels.fill_coulomb(self._hermite_plan(), coords, OMEGAS, slot, self.chunk)
            return slot
        nao = self.mol.nao_nr()
        step = self.scratch_points
        if self._scratch is None:
            self._scratch = np.empty((len(OMEGAS), nao, nao, step))
        for q0 in range(0, len(coords), step):
            q1 = min(q0 + step, len(coords))
            full = self._scratch if q1 - q0 == step else np.empty(
                (len(OMEGAS), nao, nao, q1 - q0))
            compute_nu(self.mol, coords[q0:q1], out=full)
            for w in range(len(OMEGAS)):
                if self.chunk:
                    kernels.pack_lower(full[w], slot[w], len(coords), q0, self.chunk)
                else:
                    pack_lower(full[w], slot[w, :, q0:q1])
        return slot

    def forget(self, *key) -> None:
        """Drop the cached integrals of the block `key` ((p0, p1), or a caller's own key): its
        points changed, and the next `features` call computes them at its new points.  The
        cache's memory they took is not reused."""
        self._cache.pop(tuple(key), None)

    def features_at(self, coords: np.ndarray, e_mat: np.ndarray):
        """F (n_omega, nspin, nao, n) and hfx (n_omega, nspin, n) at the n points `coords`
        (bohr), nothing cached: the integrals are computed and contracted in one pass.
        e_mat: (nspin, nao, n) E_b(r) per spin at those points."""
        t0 = time.perf_counter()
        if self.direct_fill:  # each shell pair's integrals contracted while in cache
            e_mat = np.ascontiguousarray(e_mat, dtype=np.float64)
            f = np.empty((len(OMEGAS),) + e_mat.shape)
            kernels.coulomb_features(self._hermite_plan(), np.ascontiguousarray(coords), OMEGAS,
                                     e_mat, f)
            hfx = -0.5 * np.einsum("sbg,wsbg->wsg", e_mat, f)
        else:
            if self._driver is None:
                self._driver = _direct_driver(self.mol) or False
            f, hfx = direct_features(self.mol, coords, e_mat, self._driver)
        self.points_computed += len(coords)
        # computed and contracted together
        self.timings_s["exchange_integrals"] += time.perf_counter() - t0
        return f, hfx

    def features(self, p0: int, p1: int, e_mat: np.ndarray, points: np.ndarray | None = None,
                 key: tuple | None = None):
        """F (n_omega, nspin, nao, n) and hfx (n_omega, nspin, n) at grid points p0:p1.

        points: the block-relative indices of the n points to use (None: all of
        p0:p1); a block changes its points only after `forget`.  e_mat: (nspin,
        nao, n) E_b(r) per spin at those points.  key: what the points are cached
        under (default (p0, p1)): another set of points of the same block needs its own.
        """
        if not self._arenas or (self.passes >= LATE_CACHE_PASS and not self._late_mapped):
            self._late_mapped = self.passes >= LATE_CACHE_PASS
            self._prepare_arena()  # before the clock starts: not integral time
        clock = time.perf_counter
        t0 = clock()
        key = (p0, p1) if key is None else key
        coords = self.coords[p0:p1] if points is None else self.coords[p0:p1][points]
        n = len(coords)
        if e_mat.shape[-1] != n:
            raise ValueError(f"e_mat has {e_mat.shape[-1]} points, the block {n}")
        nu = self._cache.get(key)
        if nu is None:
            slot = self._cache_slot(n)
            if slot is not None:
                nu = self._cache[key] = self._compute_packed(coords, slot)
                self.points_computed += n
        if nu is None:
            # not cached: integrals and contraction in one pass
            return self.features_at(coords, e_mat)
        t1 = clock()
        if self.chunk:
            e_mat = np.ascontiguousarray(e_mat, dtype=np.float64)
            f = np.empty((len(OMEGAS),) + e_mat.shape)
            for w in range(len(OMEGAS)):
                kernels.contract_packed(nu[w], e_mat, f[w], self.chunk)
            hfx = -0.5 * np.einsum("sbg,wsbg->wsg", e_mat, f)
        else:
            f, hfx = contract_packed(nu, e_mat)
        self.timings_s["exchange_integrals"] += t1 - t0
        self.timings_s["exchange_features"] += clock() - t1
        return f, hfx
