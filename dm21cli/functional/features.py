"""Local exact-exchange features of DM21 on a DFT grid.

For spin s and range-separation parameter omega the feature is the local
exact-exchange energy density (Ha / bohr^3)

    hfx_s(r) = -1/2 sum_bd E_b(r) E_d(r) nu_bd(r),
    E_b(r)   = sum_a D^s_ab chi_a(r),
    nu_bd(r) = int chi_b(r') v_omega(|r - r'|) chi_d(r') dr',

with v_0 = 1/r and v_0.4 = erf(0.4 r)/r.  Its derivative with respect to
D^s_ab is -chi_a(r) F_b(r) with F_b(r) = sum_d nu_bd(r) E_d(r), which is the
intermediate this module returns.

The nu integrals do not depend on the density.  They come from the backend
`dm21cli.functional.backends.select` chooses (dm21cli's compiled McMurchie-Davidson
kernel, or libcint).  `ExchangeIntegrals` keeps the lower triangle of each block
(nu is symmetric in b, d: half the memory) for the next SCF cycle, in float32 when
asked (half the memory again), within the memory budget and in two stages
(FIRST_CACHE_BYTES, then the rest from pass LATE_CACHE_PASS on).  Blocks that are
not cached are recomputed in every cycle by the backend's `features`, which never
stores nu.  Either way only the points the caller asks for are used.
"""

from __future__ import annotations

import time

import numpy as np

from dm21cli.functional import backends, kernels
from dm21cli.functional.backends import OMEGAS

#: The libcint backend: grid points per int1e_grids call when filling
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
#: LATE_CACHE_PASS in the usual two to four.
FIRST_CACHE_BYTES = 1.5e9
LATE_CACHE_PASS = 6


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
        #: what computes the integrals (`backends.select`: the one place that chooses)
        self.backend = backends.select(mol)
        #: grid points per chunk of the cached layout (None: NumPy's layout)
        self.chunk = self.backend.chunk
        step = kernels.CHUNK
        point_bytes = self.backend.fill_scratch_bytes_per_point
        if not point_bytes:  # the backend fills the packed layout directly
            self.scratch_points = 0
            self.budget_bytes = float(budget_bytes) if budget_bytes >= self.bytes_per_point * step else 0.0
        else:
            # the scratch block used while filling the cache comes out of the same budget
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
            self.backend.release_scratch()  # the cache is full: no more blocks to fill
            return None
        start = self._arena_used // self.dtype.itemsize
        self._arena_used += nbytes
        self.cached_bytes += nbytes
        stop = start + nbytes // self.dtype.itemsize
        if self.chunk:
            return arena[start:stop].reshape(len(OMEGAS), self.npair * n_points)
        return arena[start:stop].reshape(len(OMEGAS), self.npair, n_points)

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
        f, hfx = self.backend.features(coords, e_mat)
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
                self.backend.fill(coords, slot, self.scratch_points)
                nu = self._cache[key] = slot
                self.points_computed += n
        if nu is None:
            # not cached: integrals and contraction in one pass
            return self.features_at(coords, e_mat)
        t1 = clock()
        f, hfx = self.backend.contract(nu, e_mat)
        self.timings_s["exchange_integrals"] += t1 - t0
        self.timings_s["exchange_features"] += clock() - t1
        return f, hfx
