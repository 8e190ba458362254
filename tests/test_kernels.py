"""The compiled kernels (dm21cli/functional/_kernels.c) against the NumPy code they replace.

Both paths stay: the kernels are an optional extension, built when a C
compiler is present.  Reference: the NumPy path in the same precision, and
the float64 network (float32 rounding: ARCHITECTURE.md and tests/test_network.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from pyscf import dft, gto

from dm21cli.functional import kernels
from dm21cli.functional.features import ExchangeIntegrals
from dm21cli.functional.network import DM21Network
from tests.test_network import realistic_features

WATER = "O 0 0 0.1173; H 0 0.7572 -0.4692; H 0 -0.7572 -0.4692"


@pytest.fixture
def without_kernels(monkeypatch):
    """Within the test, code runs as if the kernels had not been built."""
    def off():
        monkeypatch.setattr(kernels, "_LIB", None)
    return off


def test_kernels_are_built_in_this_install():
    """The install builds them where a C compiler exists (CI has one): a silent
    build failure would leave every run on the slower NumPy path."""
    assert kernels.available()


def test_environment_variable_turns_the_kernels_off(monkeypatch):
    monkeypatch.setenv("DM21_NO_KERNELS", "1")
    assert kernels._load() is None
    monkeypatch.setenv("DM21_NO_KERNELS", "0")
    assert kernels._load() is not None


@pytest.mark.parametrize("with_grad", [True, False])
def test_float32_network_kernels_match_numpy(checkpoints_dir, without_kernels, with_grad):
    net64 = DM21Network.load("DM21", checkpoints_dir)
    net32 = net64.astype(np.float32)
    x = realistic_features(5000, seed=4)
    e64, d64 = net64(x, True)
    fast = net32(x, with_grad)
    without_kernels()
    slow = net32(x, with_grad)
    e_fast, e_slow = (fast[0], slow[0]) if with_grad else (fast, slow)
    # both are float32 evaluations of the same function: each within float32 rounding of float64
    for e in (e_fast, e_slow):
        assert np.max(np.abs(e - e64) / np.abs(e64)) < 1e-5
    assert np.max(np.abs(e_fast - e_slow) / np.abs(e64)) < 1e-5
    if with_grad:
        scale = np.abs(d64).max(axis=0)
        for d in (fast[1], slow[1]):
            assert np.max(np.abs(d - d64) / scale) < 1e-5


def test_elu_kernel_is_exact_to_float32_over_its_range():
    """The kernel's own expm1 (no libm call, so that it vectorises) against NumPy's
    in float64, for ELU inputs t from -87 to -1e-8: ELU(t) = expm1(t) and
    ELU'(t) = exp(t) (as expm1(t) + 1, so to float32 rounding of 1).  Rows of +-1 normalise to +-1, a layer-norm scale of
    2^-60 makes t the offset (exactly, in float32) and d = exp(t) 2^-60."""
    lib = kernels.lib()
    width = 256
    scale = np.full(width, 2.0 ** -60, dtype=np.float32)
    zeros = np.zeros(width, dtype=np.float32)
    for t in (-np.logspace(-8, np.log10(87.0), 20 * width).astype(np.float32)).reshape(-1, width):
        a = np.where(np.arange(width) % 2, 1.0, -1.0).astype(np.float32)[None, :].copy()
        y, d = np.empty_like(a), np.empty_like(a)
        rstd = np.empty(1, dtype=np.float32)
        offset = np.ascontiguousarray(t)
        lib.dm21_block_forward(kernels.ptr(a), kernels.ptr(zeros), kernels.ptr(scale), kernels.ptr(offset),
                               0.0, 1, width, kernels.ptr(y), kernels.ptr(d), kernels.ptr(rstd))
        exact = t.astype(np.float64)
        # a few float32 ulps, relative, however small |t| is
        np.testing.assert_allclose(y[0], np.expm1(exact), rtol=4e-7, atol=0)
        # ELU' = expm1(t) + 1, as in the NumPy path: a few ulps of 1, absolute
        np.testing.assert_allclose(d[0] / scale, np.exp(exact), rtol=0, atol=2.5e-7)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_chunked_integral_cache_matches_numpy_layout(dtype, without_kernels):
    """Exchange features from the kernels' chunked cache (points not a multiple of
    the chunk, both spins) equal the NumPy path's in the same storage precision."""
    mol = gto.M(atom=WATER, basis="def2-svp", verbose=0)
    grids = dft.gen_grid.Grids(mol)
    grids.level = 2
    grids.build()
    n = 3001
    coords = grids.coords[:n]
    e_mat = np.random.default_rng(2).normal(size=(2, mol.nao, n)) * np.exp(-np.linalg.norm(coords, axis=1))
    fast = ExchangeIntegrals(mol, coords, dtype=dtype, budget_bytes=650e6)
    assert fast.chunk == kernels.CHUNK
    fast.features(0, n, e_mat)  # fills the cache
    f_fast, h_fast = fast.features(0, n, e_mat)  # reads it
    without_kernels()
    slow = ExchangeIntegrals(mol, coords, dtype=dtype, budget_bytes=650e6)
    assert slow.chunk is None
    slow.features(0, n, e_mat)
    f_slow, h_slow = slow.features(0, n, e_mat)
    np.testing.assert_allclose(f_fast, f_slow, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h_fast, h_slow, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cache_filled_from_libcint_equals_int1e_grids(dtype):
    """The kernels' direct fill (libcint shell pair by shell pair, straight into the
    chunked layout) equals PySCF's int1e_grids packed by the older route, for both
    range-separation parameters, f functions (water/def2-TZVP), a partial last chunk
    and the cache split among threads.  float64: the same libcint numbers; float32:
    both roundings of them."""
    from pyscf import lib

    from dm21cli.functional.features import OMEGAS, compute_nu

    mol = gto.M(atom=WATER, basis="def2-tzvp", verbose=0)
    assert max(mol.bas_angular(i) for i in range(mol.nbas)) == 3
    grids = dft.gen_grid.Grids(mol)
    grids.level = 1
    grids.build()
    n = 2 * kernels.CHUNK + 37
    coords = np.ascontiguousarray(grids.coords[::7][:n])
    npair = mol.nao * (mol.nao + 1) // 2
    reference = np.empty((len(OMEGAS), npair * n), dtype=dtype)
    full = compute_nu(mol, coords)
    for w in range(len(OMEGAS)):
        kernels.pack_lower(full[w], reference[w], n, 0)
    for threads in (1, 2):
        with lib.with_omp_threads(threads):
            filled = np.full_like(reference, np.nan)
            for w, omega in enumerate(OMEGAS):
                with mol.with_range_coulomb(omega):
                    kernels.fill_packed(mol, coords, filled[w])
        if dtype == np.float64:
            np.testing.assert_allclose(filled, reference, rtol=1e-13, atol=1e-15)
        else:  # the same float64 numbers to 1e-16, rounded to float32 at most one ulp apart;
            # integrals that vanish by symmetry are float64 cancellation noise (1e-16) in both
            np.testing.assert_allclose(filled, reference, rtol=1.2e-7, atol=1e-15)
