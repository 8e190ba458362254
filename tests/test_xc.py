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

from dm21cli.features import OMEGAS, ExchangeIntegrals, contract
from dm21cli.ks import DM21RKS, DM21UKS, use_legacy_grids
from dm21cli.network import DM21Network
from dm21cli.xc import DM21XC

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
    integrals = ExchangeIntegrals(mol, grids.coords, max_memory_mb=2000)
    ao = dft.numint.eval_ao(mol, grids.coords)
    e_mat = np.einsum("gb,sab->gas", ao, dm)
    i = OMEGAS.index(omega)
    _, hfx = contract(integrals.nu(0, len(grids.weights)), e_mat)
    with mol.with_range_coulomb(omega):
        vk = scf.hf.get_jk(mol, dm, hermi=1)[1]
    for s in range(2):
        exact = -0.5 * np.einsum("ij,ji", dm[s], vk[s])
        assert np.dot(grids.weights, hfx[i, :, s]) == pytest.approx(exact, rel=2e-5)


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
    uncached = DM21XC(network, max_memory_mb=8)  # too small to cache: recomputed per block
    r1 = cached.evaluate(mol, grids, dm, restricted=False)
    r1b = cached.evaluate(mol, grids, dm, restricted=False)  # second call reads the cache
    r2 = uncached.evaluate(mol, grids, dm, restricted=False)
    assert cached._integrals.cached and not uncached._integrals.cached
    assert r1[1] == pytest.approx(r2[1], abs=1e-10)
    assert r1b[1] == pytest.approx(r1[1], abs=1e-12)
    np.testing.assert_allclose(r1[2], r2[2], atol=1e-10)


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
    from dm21cli.xc import RHO_SCREEN

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
