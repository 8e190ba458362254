"""Where the integrals of DM21's exchange features are computed: one interface, chosen in
one place (`select`).

The local exact-exchange features (`dm21cli.functional.features`) need, at every grid
point r and for each range-separation parameter omega of OMEGAS,

    nu_bd(r) = int chi_b(r') v_omega(|r - r'|) chi_d(r') dr'

contracted with E_d(r) = sum_a D_ad chi_a(r), and the gradient needs the same integrals
differentiated by the atoms.  An `ExchangeBackend` does four things with them (shapes
below; coordinates in bohr, omega in 1/bohr, results in atomic units):

* `fill`: nu at a block of points, packed (lower triangle) into the cache's layout;
* `contract`: F and hfx from such a packed block;
* `features`: F and hfx at points without storing nu (the uncached blocks);
* `integral_force`: the integral term of the nuclear gradient at points.

Two backends exist.  `CompiledBackend` runs dm21cli's McMurchie-Davidson kernel
(`_gridcoulomb.c`, through `dm21cli.functional.kernels`; spherical basis functions).
`LibcintBackend` runs PySCF's libcint integrals (int1e_grids, int1e_grids_ip) and PySCF's
seminumerical-exchange drivers; its cache is contracted by the compiled contraction kernel
when the library is loaded (a Cartesian basis) and by NumPy when it is not.  A GPU backend
(gpu4pyscf has grid integrals for omega > 0) would be a third class with these methods,
returned by `select` when asked for.  Nothing outside this module asks which backend runs.
"""

from __future__ import annotations

import numpy as np

from dm21cli.functional import hermite, kernels

#: Range-separation parameters of the two exchange features (1/bohr).
OMEGAS = (0.0, 0.4)
#: Density screening of the compiled kernel's uncached features and of its gradient term
#: (`CompiledBackend`): a shell pair is left out of a block of 64 grid points when no term
#: it would add to F exceeds FEATURE_SCREEN, or it could move no force component by more
#: than FORCE_SCREEN Ha/bohr (the bounds: `hermite`'s module docstring; 0 turns it off).
#: Measured on whole DM21/def2-SVP SCFs and gradients, grid level 1, every integral
#: recomputed (no cache), both thresholds equal, against no screening: (H2O)8 at 1e-10
#: leaves out 24% of the feature blocks and moves E by 2e-12 Ha and the gradient by
#: 2e-10 Ha/bohr (at 1e-9: 29%, 3e-11 Ha, 2e-9 Ha/bohr); (H2O)4 at 1e-11 leaves out 11%
#: (1e-13 Ha, 4e-12 Ha/bohr), at 1e-9 16% (1e-13 Ha, 8e-10 Ha/bohr), at 1e-8 20% (8e-12 Ha,
#: 9e-9 Ha/bohr), at 1e-6 34% (7e-8 Ha, 1.5e-6 Ha/bohr: too much).  1e-10 keeps a margin
#: of over 6,000 on the 1e-6 Ha/bohr that gradients must keep, for larger clusters, where
#: more is left out (53% of a stretch of (H2O)16's grid).
FEATURE_SCREEN = 1e-10
FORCE_SCREEN = 1e-10
#: Shell-pair screening threshold of PySCF's direct (uncached) drivers.  Measured on
#: benzene/def2-SVP: hfx changes by at most 3e-14 Ha/bohr^3 at 1e-13.
DIRECT_SCREEN = 1e-13


def select(mol) -> ExchangeBackend:
    """The backend for mol: the compiled kernel when its library is loaded and the basis
    is spherical, else libcint."""
    if kernels.available() and not mol.cart:
        return CompiledBackend(mol)
    return LibcintBackend(mol)


def hfx_from(e_mat: np.ndarray, f: np.ndarray) -> np.ndarray:
    """hfx (n_omega, nspin, n) Ha/bohr^3 = -1/2 sum_b E_b F_b from e_mat (nspin, nao, n) and
    F (n_omega, nspin, nao, n)."""
    return -0.5 * np.einsum("sbg,wsbg->wsg", e_mat, f)


class ExchangeBackend:
    """The interface (see the module's docstring); `CompiledBackend` and `LibcintBackend`
    implement it."""

    #: how `dm21 info`, the log and result.json name it
    name = ""
    #: grid points per chunk of the packed layout `fill` writes and `contract` reads
    #: (`kernels.CHUNK`: the compiled kernels' chunked layout), or None: NumPy's
    #: (n_omega, npair, n) layout
    chunk: int | None = None
    #: bytes per point of the full (unpacked) block `fill` computes before packing it
    #: (0: none, the integrals go straight into the packed layout)
    fill_scratch_bytes_per_point = 0.0
    #: whether `integral_force` forms G (n_omega, nspin, 3, nao, n) per piece of points
    forms_g = False

    def __init__(self, mol):
        self.mol = mol

    def screening(self) -> dict:
        """What the density screening left out so far (empty: this backend has none)."""
        return {}

    def fill(self, coords: np.ndarray, slot: np.ndarray, scratch_points: int) -> None:
        """nu at coords (n, 3) for every omega, written into slot ((n_omega, npair * n) in
        the chunked layout, or (n_omega, npair, n)), in pieces of scratch_points points
        where a scratch block is needed."""
        raise NotImplementedError

    def release_scratch(self) -> None:
        """Free the block `fill` reuses (no more blocks will be filled)."""

    def contract(self, packed: np.ndarray, e_mat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """F (n_omega, nspin, nao, n) and hfx (n_omega, nspin, n) from the packed block
        `fill` wrote and e_mat (nspin, nao, n)."""
        raise NotImplementedError

    def features(self, coords: np.ndarray, e_mat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """F and hfx as `contract` returns them, at coords (n, 3), nu never stored."""
        raise NotImplementedError

    def integral_force(self, coords: np.ndarray, e_mat: np.ndarray, c: np.ndarray, natm: int,
                       own: np.ndarray | None = None, max_memory_mb: float = 1000.0) -> np.ndarray:
        """The exchange features' integral term of the nuclear gradient (natm, 3) Ha/bohr:
        -sum_g sum_bd W_bd(g) d nu_bd(g)/dR_A moving the AOs on atom A, with
        W_bd(g) = sum_s c[w, s, g] E[s, b, g] E[s, d, g] for each omega w.

        coords: (n, 3); e_mat: (nspin, nao, n); c: (n_omega, nspin, n) the weighted
        derivatives of the energy by hfx.  own: (n,) the atom each point belongs to
        (negative: none), or None; if given, the grid response's term of the point
        itself: its atom receives minus the sum over all atoms at the point.
        """
        raise NotImplementedError


class CompiledBackend(ExchangeBackend):
    """dm21cli's McMurchie-Davidson kernel: both omegas in one pass, each shell pair's
    integrals contracted while they are in cache; measured on benzene/def2-SVP, 3.1 to 3.3
    times faster than libcint's int1e_grids on one thread."""

    name = "compiled (dm21cli's McMurchie-Davidson kernel)"
    chunk = kernels.CHUNK

    def __init__(self, mol, feature_screen: float | None = None, force_screen: float | None = None):
        super().__init__(mol)
        #: the thresholds (None: FEATURE_SCREEN and FORCE_SCREEN as they are now; 0: off)
        self.feature_screen = FEATURE_SCREEN if feature_screen is None else feature_screen
        self.force_screen = FORCE_SCREEN if force_screen is None else force_screen
        self._plan: hermite.Plan | None = None
        self._force_plan: hermite.Plan | None = None
        #: shell-pair blocks (computed, left out by the screening) of `features`, and of
        #: `integral_force`, summed over the calls
        self.feature_blocks = np.zeros(2, dtype=np.int64)
        self.force_blocks = np.zeros(2, dtype=np.int64)

    def screening(self):
        def fraction(blocks):
            total = int(blocks.sum())
            return round(float(blocks[1]) / total, 4) if total else None

        return {"screened_feature_blocks": fraction(self.feature_blocks),
                "screened_force_blocks": fraction(self.force_blocks)}

    def _nu_plan(self) -> hermite.Plan:
        if self._plan is None:
            self._plan = hermite.build_plan(self.mol)
        return self._plan

    def fill(self, coords, slot, scratch_points):
        kernels.fill_coulomb(self._nu_plan(), coords, OMEGAS, slot, self.chunk)

    def contract(self, packed, e_mat):
        return contract_chunked(packed, e_mat, self.chunk)

    def features(self, coords, e_mat):
        e_mat = np.ascontiguousarray(e_mat, dtype=np.float64)
        f = np.empty((len(OMEGAS),) + e_mat.shape)
        self.feature_blocks += kernels.coulomb_features(
            self._nu_plan(), np.ascontiguousarray(coords), OMEGAS, e_mat, f, self.feature_screen)
        return f, hfx_from(e_mat, f)

    def integral_force(self, coords, e_mat, c, natm, own=None, max_memory_mb=1000.0):
        if self._force_plan is None:
            self._force_plan = hermite.build_plan(self.mol, derivative=True)
        # the kernel is fastest with the points in order of their atom
        order = np.argsort(own, kind="stable") if own is not None else slice(None)
        return kernels.coulomb_ip_force(
            self._force_plan, np.ascontiguousarray(coords[order]), OMEGAS,
            np.ascontiguousarray(e_mat[:, :, order]), np.ascontiguousarray(c[:, :, order]),
            natm, None if own is None else own[order], self.force_screen, self.force_blocks)


class LibcintBackend(ExchangeBackend):
    """PySCF's libcint integrals: int1e_grids fills the cache a block at a time (into a
    reused scratch block, then packed), PySCF's seminumerical-exchange drivers (`pyscf.sgx`)
    contract the uncached blocks and the gradient's derivative integrals; without those
    drivers (a PySCF that lacks them) the integrals are computed and contracted here."""

    name = "libcint (PySCF's int1e_grids)"

    def __init__(self, mol):
        super().__init__(mol)
        nao = mol.nao_nr()
        self.chunk = kernels.CHUNK if kernels.available() else None
        self.fill_scratch_bytes_per_point = 8.0 * len(OMEGAS) * nao * nao
        self.forms_g = True
        self._scratch: np.ndarray | None = None
        self._driver = None  # built on first use (False: PySCF has none)
        self._ip = None

    def fill(self, coords, slot, scratch_points):
        nao = self.mol.nao_nr()
        step = scratch_points
        if self._scratch is None or self._scratch.shape[-1] != step:
            self._scratch = np.empty((len(OMEGAS), nao, nao, step))
        for q0 in range(0, len(coords), step):
            q1 = min(q0 + step, len(coords))
            full = self._scratch if q1 - q0 == step else np.empty((len(OMEGAS), nao, nao, q1 - q0))
            compute_nu(self.mol, coords[q0:q1], out=full)
            for w in range(len(OMEGAS)):
                if self.chunk:
                    kernels.pack_lower(full[w], slot[w], len(coords), q0, self.chunk)
                else:
                    pack_lower(full[w], slot[w, :, q0:q1])

    def release_scratch(self):
        self._scratch = None

    def contract(self, packed, e_mat):
        if not self.chunk:
            return contract_packed(packed, e_mat)
        return contract_chunked(packed, e_mat, self.chunk)

    def features(self, coords, e_mat):
        if self._driver is None:
            self._driver = direct_driver(self.mol) or False
        return direct_features(self.mol, coords, e_mat, self._driver)

    def integral_force(self, coords, e_mat, c, natm, own=None, max_memory_mb=1000.0):
        if self._ip is None:
            self._ip = ip_driver(self.mol) or False
        g = derivative_contraction(self.mol, coords, e_mat, self._ip, max_memory_mb)
        nspin, nao, n = e_mat.shape
        t_ao, t_pt = np.zeros((3, nao)), np.zeros((3, n))
        for t in range(nspin):
            for k in range(len(OMEGAS)):
                ec = e_mat[t] * c[k, t]  # (nao, n): c E_u
                for xdir in range(3):
                    prod = g[k, t, xdir] * ec
                    t_ao[xdir] += prod.sum(axis=1)
                    if own is not None:
                        t_pt[xdir] += prod.sum(axis=0)
        force = np.zeros((natm, 3))
        for ia, (p0, p1) in enumerate(self.mol.aoslice_by_atom()[:, 2:]):
            force[ia] += t_ao[:, p0:p1].sum(axis=1)
        if own is not None:
            for xdir in range(3):
                np.subtract.at(force[:, xdir], own[own >= 0], t_pt[xdir][own >= 0])
        return force


# ----------------------------------------------------------------------------------------
# libcint's integrals and their NumPy contractions


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
    return f, hfx_from(e_mat, f)


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


def contract_chunked(packed: np.ndarray, e_mat: np.ndarray,
                     chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """F (n_omega, nspin, nao, n) and hfx (n_omega, nspin, n) from cached integrals in the
    compiled kernels' chunked layout (`packed[w]` flat per omega, `chunk` points per chunk),
    contracted by the kernel; e_mat (nspin, nao, n)."""
    e_mat = np.ascontiguousarray(e_mat, dtype=np.float64)
    f = np.empty((len(OMEGAS),) + e_mat.shape)
    for w in range(len(OMEGAS)):
        kernels.contract_packed(packed[w], e_mat, f[w], chunk)
    return f, hfx_from(e_mat, f)


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
    return f, hfx_from(e_mat, f)


def direct_driver(mol):
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

    coords: (n, 3) bohr; e_mat: (nspin, nao, n).  driver: from `direct_driver`
    (built here when None); if PySCF has none, nu is computed and contracted.
    """
    driver = direct_driver(mol) if driver is None else driver
    if driver is False or driver is None:
        return contract(compute_nu(mol, coords), e_mat)
    nspin, nao, n = e_mat.shape
    f = np.empty((len(OMEGAS), nspin, nao, n))
    ones = np.ones(n)
    for i, omega in enumerate(OMEGAS):
        with mol.with_range_coulomb(omega):
            _, f[i] = driver(mol, np.ascontiguousarray(coords), None, np.array(e_mat, order="C"), ones)
    return f, hfx_from(e_mat, f)


def ip_driver(mol):
    """PySCF's SGX driver contracting int1e_grids_ip with E, or None without it.

    It returns G[s, x, b, g] = sum_d <d_x chi_b | v | chi_d>(r_g) E[s, d, g]
    (a private function of `pyscf.sgx.sgx_jk`, PySCF 2.x); the fallback
    computes the integrals for a few points at a time and contracts them.
    """
    try:
        from pyscf.sgx import sgx_jk

        return sgx_jk._gen_jk_direct(mol, "s1", False, True, DIRECT_SCREEN, None, grad=True)
    except (ImportError, AttributeError, TypeError):  # pragma: no cover - older/newer PySCF
        return None


def derivative_contraction(mol, coords: np.ndarray, e_mat: np.ndarray, driver=None,
                           max_memory_mb: float = 1000.0) -> np.ndarray:
    """G (n_omega, nspin, 3, nao, n): sum_d <nabla chi_b | v_w | chi_d>(r_g) E_d(r_g).

    coords: (n, 3) bohr; e_mat: (nspin, nao, n).  nabla acts on the electron
    coordinate of chi_b (libcint's int1e_grids_ip).  driver: PySCF's SGX driver
    (`ip_driver`), or False: int1e_grids_ip a few points at a time, contracted.
    """
    nspin, nao, n = e_mat.shape
    out = np.empty((len(OMEGAS), nspin, 3, nao, n))
    fg = np.ascontiguousarray(e_mat, dtype=np.float64)
    coords = np.ascontiguousarray(coords, dtype=np.float64)
    for i, omega in enumerate(OMEGAS):
        with mol.with_range_coulomb(omega):
            if driver:
                out[i] = driver(mol, coords, None, fg, np.ones(n))[1]
                continue
            # fallback: the integrals of a few points at a time (3 nao^2 doubles each)
            step = max(1, int(max_memory_mb * 1e6 * 0.1 // (8 * 3 * nao * nao)))
            for q0 in range(0, n, step):
                q1 = min(q0 + step, n)
                ip = mol.intor("int1e_grids_ip", grids=coords[q0:q1])  # (3, m, nao, nao)
                out[i, :, :, :, q0:q1] = np.einsum("xgbd,sdg->sxbg", ip, fg[:, :, q0:q1])
    return out
