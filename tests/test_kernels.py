"""The compiled kernels (dm21cli/functional/_kernels.c) against the NumPy code they replace.

Both paths stay: the kernels are an optional extension, built when a C
compiler is present.  Reference: the NumPy path in the same precision, and
the float64 network (float32 rounding: ARCHITECTURE.md and tests/test_network.py).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from pyscf import dft, gto

from dm21cli.functional import kernels
from dm21cli.functional.features import ExchangeIntegrals
from dm21cli.functional.network import DM21Network
from tests.test_network import realistic_features

WATER = "O 0 0 0.1173; H 0 0.7572 -0.4692; H 0 -0.7572 -0.4692"

#: ``DM21_NO_KERNELS=1 python -m pytest`` tests the NumPy path on purpose (README, Tests): the
#: kernels are off, so the tests of the kernels themselves are skipped, then and only then
#: (a kernel build that fails silently still fails `test_kernels_are_built_in_this_install`).
needs_kernels = pytest.mark.skipif(
    os.environ.get("DM21_NO_KERNELS", "") not in ("", "0"),
    reason="DM21_NO_KERNELS is set: the compiled kernels are off, and this test checks them")


@pytest.fixture
def without_kernels(monkeypatch):
    """Within the test, code runs as if the kernels had not been built."""
    def off():
        monkeypatch.setattr(kernels, "_LIB", None)
    return off


@needs_kernels
def test_kernels_are_built_in_this_install():
    """The install builds them where a C compiler exists (CI has one): a silent
    build failure would leave every run on the slower NumPy path."""
    assert kernels.available()


def test_environment_variable_turns_the_kernels_off(monkeypatch):
    monkeypatch.setenv("DM21_NO_KERNELS", "1")
    assert kernels._load() is None


@needs_kernels
def test_kernels_load_when_the_environment_variable_is_0(monkeypatch):
    monkeypatch.setenv("DM21_NO_KERNELS", "0")
    assert kernels._load() is not None


@needs_kernels
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


@needs_kernels
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


@needs_kernels
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


def _md_points(mol, n_grid: int) -> np.ndarray:
    """Grid points of mol (every 7th of a level-1 grid, a partial last chunk) plus
    each nucleus (T = 0 for its one-centre pairs) and points 30 and 60 bohr out
    (the Boys function's asymptotic form for 1/r and for erf(0.4 r)/r)."""
    grids = dft.gen_grid.Grids(mol)
    grids.level = 1
    grids.build()
    far = np.array([[30.0, 1.0, -2.0], [0.0, -60.0, 5.0]])
    return np.ascontiguousarray(np.vstack([grids.coords[::7][:n_grid], mol.atom_coords(), far]))


def _packed_reference(mol, coords, dtype=np.float64) -> np.ndarray:
    """PySCF's int1e_grids (libcint) for both omegas, packed into the chunked layout."""
    from dm21cli.functional.backends import OMEGAS, compute_nu

    n = len(coords)
    reference = np.empty((len(OMEGAS), mol.nao * (mol.nao + 1) // 2 * n), dtype=dtype)
    full = compute_nu(mol, coords)
    for w in range(len(OMEGAS)):
        kernels.pack_lower(full[w], reference[w], n, 0)
    return reference


@needs_kernels
@pytest.mark.parametrize("basis, lmax", [("def2-tzvp", 3), ("cc-pvdz", 2), ("def2-qzvp", 4)])
def test_md_kernel_equals_libcint_int1e_grids(basis, lmax):
    """dm21cli's McMurchie-Davidson kernel (_gridcoulomb.c) against libcint's
    int1e_grids for both range-separation parameters: f functions (def2-TZVP),
    general contractions split into segments (cc-pVDZ), g functions (def2-QZVP),
    points on the nuclei and far away, a partial chunk, 1 and 2 threads.
    Tolerance: 2e-12 absolute on integrals up to 13 (measured: at most 2e-13;
    libcint's Rys quadrature and the kernel's Boys table each err near 1e-14)."""
    from pyscf import lib

    from dm21cli.functional import hermite
    from dm21cli.functional.features import OMEGAS

    mol = gto.M(atom=WATER, basis=basis, verbose=0)
    assert max(mol.bas_angular(i) for i in range(mol.nbas)) == lmax
    if basis == "cc-pvdz":
        assert max(mol.bas_nctr(i) for i in range(mol.nbas)) > 1
    coords = _md_points(mol, 2 * kernels.CHUNK + 37 if basis != "def2-qzvp" else 90)
    reference = _packed_reference(mol, coords)
    plan = hermite.build_plan(mol)
    for threads in (1, 2):
        with lib.with_omp_threads(threads):
            filled = np.full_like(reference, np.nan)
            kernels.fill_coulomb(plan, coords, OMEGAS, filled)
        np.testing.assert_allclose(filled, reference, rtol=0, atol=2e-12)


@needs_kernels
def test_md_kernel_float32_is_the_float64_result_rounded():
    from dm21cli.functional import hermite
    from dm21cli.functional.features import OMEGAS

    mol = gto.M(atom=WATER, basis="def2-svp", verbose=0)
    coords = _md_points(mol, 300)
    plan = hermite.build_plan(mol)
    npair = mol.nao * (mol.nao + 1) // 2
    f64 = np.empty((len(OMEGAS), npair * len(coords)))
    f32 = np.empty((len(OMEGAS), npair * len(coords)), dtype=np.float32)
    kernels.fill_coulomb(plan, coords, OMEGAS, f64)
    kernels.fill_coulomb(plan, coords, OMEGAS, f32)
    np.testing.assert_array_equal(f32, f64.astype(np.float32))


@needs_kernels
def test_md_kernel_contracted_in_cache_equals_int1e_grids_contracted():
    """`coulomb_features` (integrals contracted shell pair by shell pair, never
    stored) against F = sum_d nu_bd E_d from libcint's int1e_grids, two spins,
    1 and 2 threads (a partial block of 64 points at each thread's end)."""
    from pyscf import lib

    from dm21cli.functional import hermite
    from dm21cli.functional.backends import OMEGAS, compute_nu, contract

    mol = gto.M(atom=WATER, basis="def2-tzvp", verbose=0)
    coords = _md_points(mol, 333)
    rng = np.random.default_rng(5)
    e_mat = rng.standard_normal((2, mol.nao, len(coords)))
    f_ref, _ = contract(compute_nu(mol, coords), e_mat)
    plan = hermite.build_plan(mol)
    for threads in (1, 2):
        with lib.with_omp_threads(threads):
            f = np.full((len(OMEGAS),) + e_mat.shape, np.nan)
            kernels.coulomb_features(plan, coords, OMEGAS, e_mat, f)
        np.testing.assert_allclose(f, f_ref, rtol=0, atol=2e-11)


@needs_kernels
@pytest.mark.parametrize("basis", ["def2-tzvp", "cc-pvdz"])
def test_md_force_kernel_equals_libcint_int1e_grids_ip_contracted(basis):
    """`coulomb_ip_force` (the force plan: d/dP and d/dQ of each primitive pair's
    product from one set of Hermite integrals, summed with W = c E E) against
    libcint's int1e_grids_ip contracted with c E E and summed per atom (xc_grad's
    fallback), without and with the grid response's term of the points (own: in
    order, and shuffled into many short runs).  f functions, general contractions,
    points on the nuclei and far away, one and two spins, 1 and 2 threads.
    A bent, asymmetric water so that no force vanishes by symmetry.  Tolerance
    1e-10 on forces up to 90 (measured 3e-12)."""
    from pyscf import lib

    from dm21cli.functional import hermite
    from dm21cli.functional.backends import derivative_contraction
    from dm21cli.functional.features import OMEGAS

    mol = gto.M(atom="O 0 0.05 0.1173; H 0.1 0.7572 -0.4692; H 0 -0.7 -0.45", basis=basis, verbose=0)
    coords = _md_points(mol, 200)
    n = len(coords)
    rng = np.random.default_rng(3)
    plan = hermite.build_plan(mol, derivative=True)
    assert plan.lmax == 2 * max(mol.bas_angular(i) for i in range(mol.nbas)) + 1
    for nspin in (1, 2):
        e_mat = rng.standard_normal((nspin, mol.nao, n))
        c = rng.standard_normal((len(OMEGAS), nspin, n))
        g = derivative_contraction(mol, coords, e_mat, driver=False)  # (omega, s, 3, nao, n)
        t_ao = np.einsum("wsxbg,wsg,sbg->xb", g, c, e_mat)
        t_pt = np.einsum("wsxbg,wsg,sbg->xg", g, c, e_mat)
        reference = np.array([t_ao[:, p0:p1].sum(axis=1) for p0, p1 in mol.aoslice_by_atom()[:, 2:]])
        for own in (np.sort(rng.integers(-1, mol.natm, n)), rng.integers(-1, mol.natm, n)):
            with_points = reference.copy()
            for x in range(3):
                np.subtract.at(with_points[:, x], own[own >= 0], t_pt[x][own >= 0])
            for threads in (1, 2):
                with lib.with_omp_threads(threads):
                    force = kernels.coulomb_ip_force(plan, coords, OMEGAS, e_mat, c, mol.natm)
                    moving = kernels.coulomb_ip_force(plan, coords, OMEGAS, e_mat, c, mol.natm, own)
                np.testing.assert_allclose(force, reference, rtol=0, atol=1e-10)
                np.testing.assert_allclose(moving, with_points, rtol=0, atol=1e-10)
    assert np.abs(reference).min() > 1e-3


@needs_kernels
def test_plan_orders_hermite_indices_as_the_kernel_does():
    from dm21cli.functional import hermite

    order = hermite.hermite_indices(kernels.lib().dm21_gc_lmax())
    assert [kernels.lib().dm21_gc_herm_index(*tuv) for tuv in order] == list(range(len(order)))


@needs_kernels
def test_md_kernel_refuses_angular_momentum_beyond_its_table():
    """Shell pairs over l_b + l_d = 12 (beyond i functions) raise instead of reading
    past the Boys table."""
    from dm21cli.functional import hermite

    mol = gto.M(atom="Ne 0 0 0", basis={"Ne": [[7, [1.0, 1.0]]]}, verbose=0)
    plan = hermite.build_plan(mol)
    assert plan.lmax == 14
    with pytest.raises(ValueError, match="angular momentum 14"):
        kernels.fill_coulomb(plan, np.zeros((3, 3)), (0.0,), np.empty((1, 120 * 3)))


# ----------------------------------------------------------------------
# the backend seam and the library's ABI stamp
# ----------------------------------------------------------------------
#: sha256 of _kernels.c + _gridcoulomb.c + _beckegrid.c at ABI stamp kernels.KERNELS_ABI
KERNEL_SOURCES_SHA256 = "789b2e7e67c3bf74e9b4d818541df36f1e8205e22080daf86899234192e10e3b"


def _sources_sha256() -> str:
    import hashlib
    from pathlib import Path

    here = Path(kernels.__file__).resolve().parent
    digest = hashlib.sha256()
    for name in ("_kernels.c", "_gridcoulomb.c", "_beckegrid.c"):
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


def test_kernel_sources_are_those_of_the_abi_stamp():
    """A change of the C sources raises the ABI stamp (DM21_KERNELS_ABI in _kernels.c and
    kernels.KERNELS_ABI), so that a library built from the old sources is refused rather
    than called with signatures it does not have.  When this fails after such a change:
    raise both stamps and record the new hash here."""
    import re
    from pathlib import Path

    source = (Path(kernels.__file__).resolve().parent / "_kernels.c").read_text()
    assert int(re.search(r"#define DM21_KERNELS_ABI (\d+)", source).group(1)) == kernels.KERNELS_ABI
    assert _sources_sha256() == KERNEL_SOURCES_SHA256, (
        "the kernel sources changed: raise DM21_KERNELS_ABI (_kernels.c) and KERNELS_ABI "
        f"(kernels.py) and record the sources' new hash {_sources_sha256()}")


def _library_with(tmp_path, body: str):
    """A shared library built from `body` (C) with this machine's compiler."""
    import shutil
    import subprocess
    import sysconfig

    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        pytest.skip(f"no C compiler {cc}")
    src, lib = tmp_path / "k.c", tmp_path / "_kernels.so"
    src.write_text(body)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return lib


@pytest.mark.parametrize("body, says", [
    ("int dm21_kernels_abi(void) { return 1; }\n", "ABI 1; this dm21cli calls ABI"),
    ("void dm21_block_forward(void) {}\n", "has no ABI stamp: it was built from older sources"),
])
def test_a_library_of_other_sources_is_refused_and_the_run_warns(tmp_path, monkeypatch, body, says):
    """A stale or foreign library is not loaded (no function of it is called), `status`
    says why, and `warning` (the first lines of a DM21 run's log) gives the cost and the
    command that rebuilds it."""
    path = _library_with(tmp_path, body)
    monkeypatch.delenv("DM21_NO_KERNELS", raising=False)
    monkeypatch.setattr(kernels, "_library_file", lambda: path)
    monkeypatch.setattr(kernels, "_LIB", False)
    monkeypatch.setattr(kernels, "_STATUS", None)
    assert kernels.lib() is None and not kernels.available()
    st = kernels.status()
    assert st.state == "stale" and says in st.reason and st.path == str(path)
    text = kernels.warning()
    assert str(path) in text and "11.4x B3LYP" in text
    assert f"Rebuild them with: {kernels.rebuild_command()}" in text


def test_missing_and_switched_off_kernels_are_named(tmp_path, monkeypatch):
    monkeypatch.delenv("DM21_NO_KERNELS", raising=False)
    monkeypatch.setattr(kernels, "_library_file", lambda: None)
    monkeypatch.setattr(kernels, "_LIB", False)
    assert kernels.lib() is None
    assert kernels.status().state == "missing"
    assert "not built" in kernels.warning() and "pip install" in kernels.warning()
    monkeypatch.setenv("DM21_NO_KERNELS", "1")
    monkeypatch.setattr(kernels, "_LIB", False)
    assert kernels.lib() is None and kernels.status().state == "off"
    assert "DM21_NO_KERNELS" in kernels.warning() and "Rebuild" not in kernels.warning()


def test_rebuild_command_of_a_checkout_is_its_editable_install():
    from pathlib import Path

    root = Path(kernels.__file__).resolve().parents[2]
    assert kernels.rebuild_command() == f"pip install -e {root}"


@needs_kernels
def test_loaded_kernels_warn_of_nothing():
    assert kernels.status().loaded and kernels.warning() is None


@needs_kernels
@pytest.mark.parametrize("nspin", [1, 2])
def test_the_two_backends_agree_on_features_and_the_integral_force(nspin):
    """`backends.select`'s two answers, called through the interface the features and the
    gradient use: the compiled kernel and libcint (PySCF's SGX drivers) give the same F,
    hfx and integral force, with and without the points' own term (tolerance 1e-10 on
    forces of order 1-90 and F of order 10; measured ~1e-12)."""
    from dm21cli.functional import backends

    mol = gto.M(atom="O 0 0.05 0.1173; H 0.1 0.7572 -0.4692; H 0 -0.7 -0.45", basis="def2-svp",
                verbose=0)
    compiled, libcint = backends.select(mol), backends.LibcintBackend(mol)
    assert isinstance(compiled, backends.CompiledBackend)
    coords = _md_points(mol, 300)
    n = len(coords)
    rng = np.random.default_rng(11)
    e_mat = rng.standard_normal((nspin, mol.nao, n))
    c = rng.standard_normal((len(backends.OMEGAS), nspin, n))
    own = rng.integers(-1, mol.natm, n)
    for a, b in zip(compiled.features(coords, e_mat), libcint.features(coords, e_mat)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)
    for points in (None, own):
        fa = compiled.integral_force(coords, e_mat, c, mol.natm, points)
        fb = libcint.integral_force(coords, e_mat, c, mol.natm, points)
        np.testing.assert_allclose(fa, fb, rtol=0, atol=1e-10)
        assert np.abs(fa).max() > 1.0


def test_select_takes_libcint_for_a_cartesian_basis_or_without_kernels(without_kernels):
    from dm21cli.functional import backends

    cart = gto.M(atom=WATER, basis="6-31g*", cart=True, verbose=0)
    assert isinstance(backends.select(cart), backends.LibcintBackend)
    without_kernels()
    sph = gto.M(atom=WATER, basis="def2-svp", verbose=0)
    chosen = backends.select(sph)
    assert isinstance(chosen, backends.LibcintBackend) and chosen.chunk is None


# ----------------------------------------------------------------------
# density screening (backends.FEATURE_SCREEN, FORCE_SCREEN; hermite's bounds)
# ----------------------------------------------------------------------
def _dimer_density_at_points(n_points: int = 4096):
    """A water dimer (def2-SVP), its B3LYP density's E = D chi at a contiguous run of
    grid points (as the SCF's blocks are), both spins, and c like the network's."""
    from pyscf import scf

    mol = gto.M(atom="O 0 0 0.1173; H 0 0.7572 -0.4692; H 0 -0.7572 -0.4692; "
                "O 0 0 3.1173; H 0 0.7572 2.5308; H 0 -0.7572 2.5308", basis="def2-svp", verbose=0)
    dm = scf.RHF(mol).run(conv_tol=1e-8).make_rdm1() / 2
    grids = dft.gen_grid.Grids(mol)
    grids.level = 1
    grids.build()
    coords = np.ascontiguousarray(grids.coords[:n_points])
    ao = dft.numint.eval_ao(mol, coords)
    e_mat = np.ascontiguousarray(np.stack([ao @ dm, 0.9 * (ao @ dm)]).transpose(0, 2, 1))
    c = np.random.default_rng(4).standard_normal((2, 2, len(coords))) * grids.weights[:n_points]
    return mol, coords, e_mat, np.ascontiguousarray(c)


def test_hermite_bounds_hold_at_every_point():
    """|nu_bd(r)| <= plan.bound for every AO pair of each shell pair, both omegas, at grid
    points, on the nuclei and far away (f functions: def2-TZVP)."""
    from dm21cli.functional import hermite
    from dm21cli.functional.backends import OMEGAS, compute_nu

    mol = gto.M(atom="O 0 0.05 0.1173; H 0.1 0.7572 -0.4692; H 0 -0.7 -0.45", basis="def2-tzvp",
                verbose=0)
    plan = hermite.build_plan(mol)
    coords = _md_points(mol, 2000)
    nu = np.abs(compute_nu(mol, coords))
    assert nu.shape[0] == len(OMEGAS)
    ratio = [nu[:, i0:i0 + di, j0:j0 + dj].max() / plan.bound[q]
             for q, (i0, j0, di, dj) in enumerate(plan.pairs[:, :4])]
    assert max(ratio) <= 1.0
    assert max(ratio) > 0.3  # and not loose by orders of magnitude


@needs_kernels
def test_screened_features_and_forces_stay_within_their_bounds():
    """A loose threshold (1e-6) so that much is left out: F changes by at most nao
    terms below the threshold each, the integral force by at most one threshold per
    shell-pair block left out; with 0 nothing is left out and nothing changes."""
    from dm21cli.functional import hermite
    from dm21cli.functional.backends import OMEGAS

    mol, coords, e_mat, c = _dimer_density_at_points()
    plan, force_plan = hermite.build_plan(mol), hermite.build_plan(mol, derivative=True)
    full = np.empty((len(OMEGAS),) + e_mat.shape)
    screened = np.empty_like(full)
    assert kernels.coulomb_features(plan, coords, OMEGAS, e_mat, full, 0.0)[1] == 0
    blocks = kernels.coulomb_features(plan, coords, OMEGAS, e_mat, screened, 1e-6)
    assert blocks[1] > 0.05 * blocks.sum()
    assert np.abs(screened - full).max() <= mol.nao * 1e-6
    own = np.sort(np.random.default_rng(1).integers(-1, mol.natm, len(coords)))
    for points in (None, own):
        counts = np.zeros(2, dtype=np.int64)
        exact = kernels.coulomb_ip_force(force_plan, coords, OMEGAS, e_mat, c, mol.natm, points)
        approx = kernels.coulomb_ip_force(force_plan, coords, OMEGAS, e_mat, c, mol.natm, points,
                                          screen=1e-6, stats=counts)
        assert counts[1] > 0.05 * counts.sum()
        assert np.abs(approx - exact).max() <= counts[1] * 1e-6
        assert np.abs(exact).max() > 1e-3
