"""DM21 on a PySCF grid: exchange features, potential matrix, grids, routing.

The potential is checked against central differences of E_xc with respect to
the density matrix (it is dE_xc/dD, exactly); the local exact-exchange
features against PySCF's exchange matrix (their grid integral is the exact
exchange energy, up to the grid's integration error).
"""

from __future__ import annotations

import numpy as np
import pytest
from pyscf import dft, gto, scf

from dm21cli.functional.features import OMEGAS, ExchangeIntegrals
from dm21cli.scf.ks import DM21RKS, DM21UKS, use_legacy_grids
from dm21cli.functional.network import DM21Network
from dm21cli.functional.xc import DM21XC, PHASES

WATER = "O 0 0 0.1173; H 0 0.7572 -0.4692; H 0 -0.7572 -0.4692"


@pytest.fixture(scope="module")
def network(checkpoints_dir):
    return DM21Network.load("DM21", checkpoints_dir)


def _uks_density(atom, spin=0, basis="def2-svp", level=1):
    mol = gto.M(atom=atom, basis=basis, spin=spin, verbose=0)
    mf = dft.UKS(mol, xc="b3lyp")
    mf.grids.level = level
    mf.kernel()
    return mol, mf.grids, np.asarray(mf.make_rdm1())


@pytest.mark.parametrize("omega", OMEGAS)
def test_exchange_features_integrate_to_exact_exchange(omega):
    mol, _, dm = _uks_density(WATER)
    grids = dft.gen_grid.Grids(mol)
    grids.level = 4
    grids.build()
    integrals = ExchangeIntegrals(mol, grids.coords, budget_bytes=1300e6)
    ao = dft.numint.eval_ao(mol, grids.coords)
    e_mat = np.einsum("gb,sab->sag", ao, dm)  # (nspin, nao, ngrids)
    i = OMEGAS.index(omega)
    _, hfx = integrals.features(0, len(grids.weights), e_mat)
    with mol.with_range_coulomb(omega):
        vk = scf.hf.get_jk(mol, dm, hermi=1)[1]
    for s in range(2):
        exact = -0.5 * np.einsum("ij,ji", dm[s], vk[s])
        assert np.dot(grids.weights, hfx[i, s]) == pytest.approx(exact, rel=2e-5)


@pytest.mark.parametrize("case", [("rks", WATER, 0), ("uks", WATER, 0), ("uks", "O 0 0 0; H 0 0 0.97", 1)])
def test_potential_is_the_derivative_of_the_energy(network, case):
    kind, atom, spin = case
    mol, grids, dm = _uks_density(atom, spin)
    xc = DM21XC(network)
    rng = np.random.default_rng(3)
    delta = rng.normal(size=dm.shape) * 1e-5
    delta = delta + delta.transpose(0, 2, 1)
    if kind == "rks":
        d0, dd = dm[0] + dm[1], delta[0] + delta[1]

        def energy_and_potential(d):
            return xc.evaluate(mol, grids, np.stack([d / 2, d / 2]), restricted=True)[1:]
    else:
        d0, dd = dm, delta

        def energy_and_potential(d):
            return xc.evaluate(mol, grids, d, restricted=False)[1:]

    _, v = energy_and_potential(d0)
    e_plus = energy_and_potential(d0 + dd)[0]
    e_minus = energy_and_potential(d0 - dd)[0]
    finite_difference = (e_plus - e_minus) / 2
    analytic = np.sum(v * dd)
    assert finite_difference == pytest.approx(analytic, rel=1e-5, abs=1e-11)


def test_restricted_equals_unrestricted_for_closed_shell(network):
    mol, grids, dm = _uks_density(WATER)
    dm_sym = np.stack([(dm[0] + dm[1]) / 2] * 2)
    xc = DM21XC(network)
    n_r, e_r, v_r = xc.evaluate(mol, grids, dm_sym, restricted=True)
    n_u, e_u, v_u = xc.evaluate(mol, grids, dm_sym, restricted=False)
    assert e_r == pytest.approx(e_u, abs=1e-12)
    np.testing.assert_allclose(v_r, (v_u[0] + v_u[1]) / 2, atol=1e-12)


def test_cached_and_recomputed_integrals_agree(network):
    mol, grids, dm = _uks_density(WATER)
    cached = DM21XC(network, max_memory_mb=4000)
    uncached = DM21XC(network, max_memory_mb=8, cache_bytes=0)  # recomputed per block
    r1 = cached.evaluate(mol, grids, dm, restricted=False)
    r1b = cached.evaluate(mol, grids, dm, restricted=False)  # second call reads the cache
    r2 = uncached.evaluate(mol, grids, dm, restricted=False)
    assert cached._integrals.cached and not uncached._integrals.cached
    assert r1[1] == pytest.approx(r2[1], abs=1e-10)
    assert r1b[1] == pytest.approx(r1[1], abs=1e-12)
    np.testing.assert_allclose(r1[2], r2[2], atol=1e-10)


def test_atoms_moved_in_place_get_fresh_integrals(network):
    """The integral and AO caches belong to one geometry.  Moving the atoms of the same
    Mole object in place (``set_geom_``, as an optimiser or ASE may do) on the same grid
    object must give what a fresh DM21XC gives, not the integrals of the old geometry
    (which are off by about 1e-2 Ha here)."""
    mol, grids, dm = _uks_density(WATER, basis="sto-3g")
    xc = DM21XC(network)
    before = xc.evaluate(mol, grids, dm, restricted=False)[1]
    moved = mol.atom_coords() + np.array([[0, 0, 0.05], [0, 0.1, 0], [0, -0.1, 0]])
    mol.set_geom_(moved, unit="Bohr")  # in place: the same object, the same id
    after = xc.evaluate(mol, grids, dm, restricted=False)[1]
    fresh = DM21XC(network).evaluate(mol, grids, dm, restricted=False)[1]
    assert abs(after - before) > 1e-4
    assert after == pytest.approx(fresh, abs=1e-12)


def test_dm21_is_what_the_scf_evaluates(network):
    """PySCF >= 2.5 routes xc through eval_xc_eff; prove DM21 is not bypassed."""
    mol = gto.M(atom="Ne 0 0 0", basis="sto-3g", verbose=0)
    mf = DM21RKS(mol, DM21XC(network))
    mf.grids.level = 1
    before = network.points_evaluated
    e_dm21 = mf.kernel()
    assert mf.converged
    assert mf.dm21.n_evaluations >= 2
    # every point with a non-negligible density went through the network in every evaluation
    rho = dft.numint.NumInt().get_rho(mol, mf.make_rdm1(), mf.grids)
    assert network.points_evaluated - before >= mf.dm21.n_evaluations * np.count_nonzero(rho > 1e-6)
    for other in ("tpss", "b3lyp", "hf"):
        ref = dft.RKS(mol, xc=other)
        ref.grids.level = 1
        assert abs(ref.kernel() - e_dm21) > 1e-3, other


def test_uks_class_runs_and_reports_spin(network):
    mol = gto.M(atom="H 0 0 0", basis="sto-3g", spin=1, verbose=0)
    mf = DM21UKS(mol, DM21XC(network))
    mf.grids.level = 1
    mf.kernel()
    assert mf.converged
    assert mf.spin_square()[0] == pytest.approx(0.75, abs=1e-8)


def test_legacy_grids_reproduce_pyscf_2_6_point_count():
    """Ne at level 3: 12,072 points with the PySCF <= 2.6 grids, 11,816 with current ones."""
    mol = gto.M(atom="Ne 0 0 0", basis="sto-3g", verbose=0)
    current = dft.gen_grid.Grids(mol).build()
    legacy = use_legacy_grids(dft.gen_grid.Grids(mol)).build()
    assert len(current.weights) == 11816
    assert len(legacy.weights) == 12072
    # the global switch is untouched afterwards
    assert len(dft.gen_grid.Grids(mol).build().weights) == 11816


def test_density_screening_changes_nothing_measurable(network):
    """Skipping grid points with rho < RHO_SCREEN changes E_xc by less than 1e-8 Ha
    (ten times inside the 1e-7 Ha allowed for fast paths; measured 1.8e-9) and the
    potential matrix by less than 1e-8 Ha."""
    from dm21cli.functional.xc import RHO_SCREEN

    mol, grids, dm = _uks_density(WATER, level=3)
    screened = DM21XC(network)
    plain = DM21XC(network, rho_screen=0.0)
    before = network.points_evaluated
    _, e_s, v_s = screened.evaluate(mol, grids, dm, restricted=False)
    skipped = len(grids.weights) - (network.points_evaluated - before)
    _, e_p, v_p = plain.evaluate(mol, grids, dm, restricted=False)
    assert RHO_SCREEN > 0 and skipped > 0, "screening skipped no point"
    assert e_s == pytest.approx(e_p, abs=1e-8)
    np.testing.assert_allclose(v_s, v_p, atol=1e-8)


@pytest.mark.parametrize("restricted", [True, False])
def test_orbitals_left_out_of_distant_blocks_change_nothing_measurable(network, restricted):
    """Orbitals below AO_SCREEN on a whole block of points are left out of its density and
    potential products: two waters 6 A apart, where that leaves out a good share of them,
    give E_xc and the potential of the plain products to 1e-9 Ha (measured: 4e-15 Ha in
    E_xc, 6e-14 in the potential)."""
    far = WATER + "; " + "; ".join(
        f"{s} {float(x) + 6.0} {y} {z}" for s, x, y, z in
        (a.split() for a in WATER.split("; ")))
    mol, grids, dm = _uks_density(far, level=1)
    if restricted:
        dm = np.stack([(dm[0] + dm[1]) / 2] * 2)
    screened, plain = DM21XC(network), DM21XC(network)
    plain.ao_screen = 0.0
    _, e_s, v_s = screened.evaluate(mol, grids, dm, restricted=restricted)
    _, e_p, v_p = plain.evaluate(mol, grids, dm, restricted=restricted)
    kept = [mol.nao if c is None else len(c) for c in screened._cols.values()]
    left_out = 1.0 - sum(kept) / (mol.nao * len(kept))
    assert all(c is None for c in plain._cols.values())
    assert left_out > 0.2, f"only {left_out:.0%} of the orbitals left out"
    assert e_s == pytest.approx(e_p, abs=1e-9)
    np.testing.assert_allclose(v_s, v_p, atol=1e-9)


def test_mixed_precision_runs_the_scf_in_float32_and_the_energy_in_float64(network):
    """scf_network does the SCF evaluations; `energy` and `final_correction` use the
    float64 network on the same density, and the two E_xc differ by float32 rounding only."""
    mol, grids, dm = _uks_density(WATER, level=2)
    net32 = network.astype(np.float32)
    xc = DM21XC(network, scf_network=net32)
    assert xc.mixed and not DM21XC(network).mixed
    n64, n32 = network.points_evaluated, net32.points_evaluated
    _, exc32, _ = xc.evaluate(mol, grids, dm, restricted=False)
    assert net32.points_evaluated > n32 and network.points_evaluated == n64
    corr = xc.final_correction(mol, grids, dm, restricted=False)
    assert network.points_evaluated > n64  # the final energy went through float64
    assert corr["exc_scf_hartree"] == exc32  # taken from the evaluation at this density
    exc64 = DM21XC(network).evaluate(mol, grids, dm, restricted=False)[1]
    # the final pass keeps float32 values where |w e| adds up to FINAL_SKIP_HARTREE: bound 1e-8
    assert corr["final_points_skipped"] > 0
    assert corr["exc_final_hartree"] == pytest.approx(exc64, abs=1e-8)
    assert 0 < abs(corr["correction_hartree"]) < 1e-5
    # at another density the SCF value is recomputed, not taken from the last evaluation
    other = xc.final_correction(mol, grids, dm * 0.999, restricted=False)
    assert other["exc_scf_hartree"] != exc32


def test_partial_cache_holds_what_fits_and_recomputes_the_rest(network):
    mol, grids, dm = _uks_density(WATER)
    xc = DM21XC(network, max_memory_mb=40, cache_bytes=26e6)  # room for part of the grid
    xc.evaluate(mol, grids, dm, restricted=False)
    integrals = xc._integrals
    assert not integrals.cached and 0 < integrals.cached_bytes <= integrals.budget_bytes
    first = integrals.points_computed
    xc.evaluate(mol, grids, dm, restricted=False)
    recomputed = integrals.points_computed - first
    cached_points = integrals.cached_bytes // integrals.bytes_per_point
    # the second evaluation recomputes only uncached blocks, and there only kept points
    assert 0 < recomputed <= len(grids.weights) - cached_points


def test_cache_grows_past_its_first_stage_only_in_a_long_scf(network, monkeypatch):
    """With FIRST_CACHE_BYTES below what the budget allows, the first passes cache that
    much and recompute the rest; from pass LATE_CACHE_PASS on the rest of the budget
    is cached, and every pass gives the same E_xc and potential (1e-12 Ha)."""
    from dm21cli.functional import features

    mol, grids, dm = _uks_density(WATER)
    monkeypatch.setattr(features, "FIRST_CACHE_BYTES", 5e6)
    xc = DM21XC(network, max_memory_mb=200, cache_bytes=150e6)  # room for the whole grid
    _, e1, v1 = xc.evaluate(mol, grids, dm, restricted=False)
    integrals = xc._integrals
    assert integrals.bytes_per_point * len(grids.weights) < integrals.budget_bytes
    first_stage = integrals.cached_bytes
    assert 0 < first_stage <= 5e6 and len(integrals._arenas) == 1
    for n in range(2, features.LATE_CACHE_PASS):
        _, e, v = xc.evaluate(mol, grids, dm, restricted=False)
        assert integrals.passes == n and integrals.cached_bytes == first_stage
        assert e == pytest.approx(e1, abs=1e-12)
    _, e, v = xc.evaluate(mol, grids, dm, restricted=False)  # pass LATE_CACHE_PASS: the rest cached
    assert len(integrals._arenas) == 2 and integrals.cached_bytes > 5 * first_stage
    computed = integrals.points_computed
    _, e, v = xc.evaluate(mol, grids, dm, restricted=False)  # and read back: nothing computed
    assert integrals.points_computed == computed
    assert e == pytest.approx(e1, abs=1e-12)
    np.testing.assert_allclose(v, v1, atol=1e-12)


def test_prefaulted_arrays_are_ordinary_writable_arrays():
    from dm21cli.core.resources import prefaulted_empty

    a = prefaulted_empty(8 * 1000 + 5)
    assert a.dtype == np.float64 and a.shape == (1000,) and a.flags.writeable
    a[:] = 1.5
    assert a.sum() == 1500.0


def test_direct_features_equal_stored_integrals_contracted():
    """The uncached path (PySCF's SGX driver, shell pairs screened at 1e-13) against
    nu computed, stored and contracted: same F and hfx to 1e-12 on water, both spins."""
    from dm21cli.functional.backends import compute_nu, contract, direct_driver, direct_features

    mol, grids, dm = _uks_density(WATER, spin=0)
    dm = dm * np.array([1.0, 0.9])[:, None, None]  # make the spins differ
    coords = grids.coords[::40]
    ao = dft.numint.eval_ao(mol, coords)
    e_mat = np.einsum("gb,sab->sag", ao, dm)
    assert direct_driver(mol) is not None, "this PySCF has no SGX driver: the fast path is off"
    f_d, h_d = direct_features(mol, coords, e_mat)
    f_s, h_s = contract(compute_nu(mol, coords), e_mat)
    np.testing.assert_allclose(h_d, h_s, atol=1e-12)
    np.testing.assert_allclose(f_d, f_s, atol=1e-12)


def test_packed_lower_triangle_contracts_like_the_full_block():
    from dm21cli.functional.backends import compute_nu, contract, contract_packed, pack_lower

    mol, grids, dm = _uks_density(WATER)
    coords = grids.coords[::25]
    full = compute_nu(mol, coords)
    nao = mol.nao_nr()
    packed = np.empty((full.shape[0], nao * (nao + 1) // 2, len(coords)))
    for w in range(full.shape[0]):
        pack_lower(full[w], packed[w])
    e_mat = np.random.default_rng(1).normal(size=(2, nao, len(coords)))
    f_p, h_p = contract_packed(packed, e_mat)
    f_f, h_f = contract(full, e_mat)
    np.testing.assert_allclose(f_p, f_f, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(h_p, h_f, rtol=1e-12, atol=1e-13)


def test_float32_network_error_is_within_the_final_pass_premise(network):
    """FINAL_SKIP_HARTREE's 1e-8 Ha bound assumes float32 gives every grid point's
    energy density to 1e-5 relative; check it on a converged-like molecular density."""
    mol, grids, dm = _uks_density(WATER, basis="def2-tzvp", level=3)
    xc = DM21XC(network)
    e64 = xc.energy_density(mol, grids, dm, restricted=False)
    e32 = xc.energy_density(mol, grids, dm, restricted=False, network=network.astype(np.float32))
    nz = e64 != 0
    assert np.count_nonzero(nz) > 1000
    assert np.max(np.abs(e32[nz] - e64[nz]) / np.abs(e64[nz])) < 1e-5


def test_float32_integral_cache_moves_energy_and_potential_by_little(network):
    """`dm21 run`'s default stores the exchange integrals in float32 (half the
    memory).  Against float64 storage on the same density: E_xc within 1e-8 Ha
    (measured 1.5e-9 for water/def2-TZVP, 1.8e-8 for benzene/def2-SVP, inside
    the 1e-7 Ha budget) and the potential within 1e-7 Ha."""
    mol, grids, dm = _uks_density(WATER, basis="def2-tzvp")
    r64 = DM21XC(network).evaluate(mol, grids, dm, restricted=False)
    xc32 = DM21XC(network, integral_dtype=np.float32)
    r32 = xc32.evaluate(mol, grids, dm, restricted=False)
    assert xc32._integrals.cached and xc32._integrals.dtype == np.float32
    assert r32[1] != r64[1]  # the float32 path did run
    assert r32[1] == pytest.approx(r64[1], abs=1e-8)
    np.testing.assert_allclose(r32[2], r64[2], atol=1e-7)


def test_grid_points_grow_where_a_later_density_reaches_them(network):
    """Points are left out where the first density evaluated on a grid is below
    rho_screen; a later density that reaches some of them adds them (the set
    never shrinks), and its E_xc and potential are those of a grid screened at
    that density (issue 22: before, the set was fixed at the first density).
    The same density again adds nothing."""
    mol, grids, dm = _uks_density(WATER)
    xc = DM21XC(network)
    before = network.points_evaluated
    xc.evaluate(mol, grids, dm, restricted=False)
    first = network.points_evaluated - before
    assert 0 < first < len(grids.weights)
    diffuse = dm * 1.5  # more points above the threshold: a superset of the first set
    before = network.points_evaluated
    _, e_grown, v_grown = xc.evaluate(mol, grids, diffuse, restricted=False)
    grown = network.points_evaluated - before
    assert grown > first and xc.points_added == grown - first
    fresh = DM21XC(network)
    before = network.points_evaluated
    _, e_fresh, v_fresh = fresh.evaluate(mol, grids, diffuse, restricted=False)
    assert network.points_evaluated - before == grown
    assert e_grown == pytest.approx(e_fresh, abs=1e-10)
    np.testing.assert_allclose(v_grown, v_fresh, atol=1e-10)
    before = network.points_evaluated
    xc.evaluate(mol, grids, diffuse, restricted=False)
    assert network.points_evaluated - before == grown and xc.points_added == grown - first


def _stretched_h2():
    """H2 at 21 A (STO-3G, grid level 1) and two of its restricted densities: both electrons
    in the 1s function of atom A (on_a), or of atom B (on_b), as (2, nao, nao) D/2 pairs."""
    mol = gto.M(atom="H 0 0 0; H 0 0 21", basis="sto-3g", verbose=0)
    grids = dft.gen_grid.Grids(mol)
    grids.level = 1
    grids.build()
    s = mol.intor("int1e_ovlp")
    on_a = np.stack([np.outer([1.0, 0.0], [1.0, 0.0])] * 2) / s[0, 0]
    on_b = np.stack([np.outer([0.0, 1.0], [0.0, 1.0])] * 2) / s[1, 1]
    return mol, grids, on_a, on_b


def test_electrons_moving_onto_left_out_points_are_evaluated_there(network):
    """Issue 22's wrong number: restricted DM21 H2 at 21 A in STO-3G reported E_xc = 0
    and E = +0.59 Ha as a success.  The first density (both electrons on atom A)
    left atom B's points out; the electrons then moved to B, where nothing was
    evaluated.  Now the second density's E_xc is that of a grid screened at it
    (the H- ion on B: equal to the one on A by symmetry), not zero."""
    mol, grids, on_a, on_b = _stretched_h2()
    xc = DM21XC(network)
    _, e_a, _ = xc.evaluate(mol, grids, on_a, restricted=True)
    _, e_b, v_b = xc.evaluate(mol, grids, on_b, restricted=True)
    _, e_b_fresh, v_b_fresh = DM21XC(network).evaluate(mol, grids, on_b, restricted=True)
    assert e_a < -0.5 and xc.points_added > 0
    assert e_b == pytest.approx(e_b_fresh, abs=1e-10)
    assert e_b == pytest.approx(e_a, abs=1e-6)
    np.testing.assert_allclose(v_b, v_b_fresh, atol=1e-10)
    info = xc.final_correction(mol, grids, on_b, restricted=True)
    assert info["problems"] == [] and info["nelec_grid"] == pytest.approx(2.0, abs=1e-4)


def test_final_checks_catch_a_density_on_points_never_evaluated(network):
    """The final checks cannot be fooled by the screening: with the regrowth switched
    off (the old behaviour), the density on atom B integrates to ~0 electrons on the
    evaluated points and the full-grid E_xc differs: those two checks fail (E_xc's sign
    is checked on the full-grid value, which is right, so it passes here; on its own
    it refuses a zero E_xc)."""
    mol, grids, on_a, on_b = _stretched_h2()
    xc = DM21XC(network)
    xc._regrow = lambda *args: 0
    xc.evaluate(mol, grids, on_a, restricted=True)
    _, e_b, _ = xc.evaluate(mol, grids, on_b, restricted=True)
    assert abs(e_b) < 1e-12
    info = xc.final_correction(mol, grids, on_b, restricted=True)
    assert len(info["problems"]) == 2, info["problems"]  # electron count, left-out E_xc
    assert "electrons" in info["problems"][0] and "left out" in info["problems"][1]
    _, e_ref, _ = DM21XC(network).evaluate(mol, grids, on_b, restricted=True)
    assert info["exc_final_hartree"] == pytest.approx(e_ref, abs=1e-8)
    info["exc_final_hartree"] = 0.0  # and a zero E_xc for two electrons is refused by itself
    from dm21cli.functional.xc import density_problems

    assert any("not negative" in p for p in density_problems(info))


def test_progress_hook_names_each_phase_of_each_block_once(network):
    """DM21XC.progress: one call per phase and block, in the order they run; the first
    evaluation maps the cache and computes the integrals, the next reads them; the
    final float64 energy is one network pass."""
    mol, grids, dm = _uks_density(WATER, level=2)
    xc = DM21XC(network, scf_network=network.astype(np.float32))
    calls = []
    xc.progress = lambda *args: calls.append(args)
    xc.evaluate(mol, grids, dm, restricted=False)
    nblocks = -(-len(grids.weights) // xc.block_points(mol.nao_nr(), len(grids.weights)))
    assert nblocks > 1

    def expected(step, integrals):
        return [(step, phase, block, nblocks) for block in range(nblocks)
                for phase in (integrals, "network", "potential")]

    first = [("evaluation 1", "integral memory", 0, nblocks), *expected("evaluation 1", "exchange integrals")]
    assert calls == first
    xc.evaluate(mol, grids, dm, restricted=False)
    assert calls[len(first):] == expected("evaluation 2", "exchange features")
    assert {phase for _, phase, _, _ in calls} == set(PHASES)
    del calls[:]
    info = xc.final_correction(mol, grids, dm, restricted=False)
    n_out = -(-info["left_out_points"] // xc.block_points(mol.nao_nr(), len(grids.weights)))
    assert n_out >= 1  # the final energy adds the points the SCF left out, block by block
    assert calls == [("final energy", "network", 0, 1)] + [
        ("final energy, left-out points", phase, block, n_out)
        for block in range(n_out) for phase in ("exchange integrals", "network")]
