"""Restricted DM21 on stretched H2: the lowest restricted solution and the H + H limit.

Reproduces the key table of issue 10's measurement (docs/tutorials/dissociation.md, "Measured: H2"):

    python benchmarks/h2_static_correlation.py                 # 0.74, 1.5, 2, 3, 4, 6 A
    python benchmarks/h2_static_correlation.py --distance 3,6 --starts 3

For each distance (def2-SVP, grid level 3, DM21 in float64 on every grid point) it converges
restricted DM21 by direct minimisation (dm21cli.scf.directmin, dE < 1e-10 Ha, |g| < 1e-6) from
several starting orbitals: B3LYP, HF, the core Hamiltonian, sigma_u doubly occupied, a
localised (sigma_g + sigma_u) orbital and random rotations of the HF orbitals.  It prints
each solution's energy against two H atoms (unrestricted doublets) and against two
fractional-spin H atoms (half an alpha and half a beta electron: one electron, restricted),
whether it is aufbau, and the parity of the doubly occupied orbital; then DM21 evaluated on
the B3LYP, HF and FCI one-particle density matrices, the self-consistent sigma_g^1 sigma_u^1
ensemble (fixed fractional occupations), and restricted B3LYP.  Times are not measured.
About 10 DM21 minimisations per distance: minutes per distance on 2 cores.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

MHA = 1e3


def _grids(mol, level):
    from pyscf.dft import gen_grid

    grids = gen_grid.Grids(mol)
    grids.level = level
    grids.build()
    return grids


def _dm21(mol, grids, network, restricted=True):
    from dm21cli.scf.ks import DM21RKS, DM21UKS
    from dm21cli.functional.xc import DM21XC

    mf = (DM21RKS if restricted else DM21UKS)(mol, DM21XC(network, rho_screen=0.0))
    mf.grids, mf.verbose, mf.conv_check = grids, 0, False
    mf.conv_tol, mf.conv_tol_grad, mf.max_cycle = 1e-11, 1e-7, 200
    return mf


def _one_electron_occupation(mf, per_spin: float | None):
    """get_occ for one electron in the lowest orbital: restricted (per_spin None, occupation
    1 = half an alpha and half a beta electron) or unrestricted with (per_spin, per_spin)."""
    def get_occ(mo_energy=None, mo_coeff=None):
        e = np.asarray(mo_energy)
        occ = np.zeros_like(e)
        if per_spin is None:
            occ[np.argmin(e)] = 1.0
        else:
            occ[0][np.argmin(e[0])] = occ[1][np.argmin(e[1])] = per_spin
        return occ
    mf.get_occ = get_occ
    return mf


def atoms(network, basis, level):
    """H atom energies (Ha): DM21 and B3LYP doublet and fractional spin."""
    from pyscf import dft, gto

    mol = gto.M(atom="H 0 0 0", basis=basis, spin=1, verbose=0)
    grids = _grids(mol, level)
    out = {}
    for name in ("DM21", "B3LYP"):
        def make(restricted):
            if name == "DM21":
                return _dm21(mol, grids, network, restricted)
            mf = (dft.rks.RKS if restricted else dft.uks.UKS)(mol, xc="b3lyp")
            mf.grids, mf.verbose, mf.conv_tol = grids, 0, 1e-11
            return mf
        doublet = make(False).kernel()
        frac = _one_electron_occupation(make(True), None).kernel()
        out[name] = (doublet, frac)
    return out


def _parity_matrix(mol):
    """AO matrix of inversion through the bond midpoint: (A, l, m) -> (-1)^l (B, l, m)."""
    labels = mol.ao_labels(fmt=False)
    p = np.zeros((mol.nao_nr(), mol.nao_nr()))
    for i, (a, _, shell, m) in enumerate(labels):
        for j, (b, _, shell_b, m_b) in enumerate(labels):
            if a != b and (shell, m) == (shell_b, m_b):
                p[j, i] = (-1) ** "spdfg".index(shell[-1])
    return p


def _orbitals_starting_with(first, s, orbitals):
    """Orthonormal orbitals whose first columns are `first` (orthonormal among themselves),
    completed from the span of `orbitals`."""
    first = np.atleast_2d(np.asarray(first).T).T
    first = first / np.sqrt(np.einsum("ui,uv,vi->i", first, s, first))
    rest = orbitals - first @ (first.T @ s @ orbitals)
    e, u = np.linalg.eigh(rest.T @ s @ rest)
    keep = np.argsort(e)[::-1][:orbitals.shape[1] - first.shape[1]]
    rest = rest @ u[:, keep] / np.sqrt(e[keep])
    return np.column_stack([first, rest])


def distance(r_angstrom, network, basis, level, n_random, seed=0):
    import scipy.linalg
    from pyscf import dft, fci, gto, scf

    from dm21cli.scf.directmin import minimize

    mol = gto.M(atom=f"H 0 0 0; H 0 0 {r_angstrom}", basis=basis, verbose=0)
    grids = _grids(mol, level)
    s, nao = mol.intor("int1e_ovlp"), mol.nao_nr()
    hf = scf.RHF(mol).run(conv_tol=1e-10, max_cycle=200)
    b3 = dft.rks.RKS(mol, xc="b3lyp")
    b3.grids, b3.verbose, b3.conv_tol, b3.max_cycle = grids, 0, 1e-10, 200
    b3.kernel()
    parity = _parity_matrix(mol)
    symmetrise = lambda c, sign: (lambda v: v / np.sqrt(v @ s @ v))(0.5 * (c + sign * parity @ c))
    is_gerade = lambda c: float(c @ s @ parity @ c) / float(c @ s @ c)
    sigma_g = symmetrise(hf.mo_coeff[:, 0], +1)
    ungerade = [symmetrise(hf.mo_coeff[:, i], -1) for i in range(nao) if is_gerade(hf.mo_coeff[:, i]) < 0.5]
    sigma_u = min(ungerade, key=lambda c: c @ hf.get_fock() @ c)
    starts = {"b3lyp": b3.mo_coeff, "hf": hf.mo_coeff,
              "core": scf.hf.eig(mol.intor("int1e_kin") + mol.intor("int1e_nuc"), s)[1],
              "sigma_u": _orbitals_starting_with(sigma_u, s, hf.mo_coeff),
              "localised": _orbitals_starting_with(sigma_g + sigma_u, s, hf.mo_coeff)}
    rng = np.random.default_rng(seed)
    for k in range(n_random):
        a = rng.normal(size=(nao, nao))
        starts[f"random{k}"] = hf.mo_coeff @ scipy.linalg.expm(0.8 * np.sqrt(nao) * (a - a.T) / np.linalg.norm(a - a.T))
    mf = _dm21(mol, grids, network)
    occ = np.zeros(nao)
    occ[0] = 2.0
    solutions = {}
    for name, c0 in starts.items():
        converged, _, energy, _ = minimize(mf, c0, occ.copy(), max_cycle=300, conv_tol=1e-10, conv_tol_grad=1e-6)
        phi = mf.mo_coeff[:, 0]
        eps, vec = mf.eig(mf.get_fock(dm=mf.make_rdm1()), s)
        rank = int(np.argmax(np.abs(vec.T @ s @ phi)))  # empty orbitals below the occupied one
        solutions[name] = (energy, converged, rank, is_gerade(phi))
    ensemble_occ = np.zeros(nao)
    ensemble_occ[:2] = 1.0
    c_ens = _orbitals_starting_with(np.column_stack([sigma_g, sigma_u]), s, hf.mo_coeff)
    _, _, e_ensemble, _ = minimize(mf, c_ens, ensemble_occ, max_cycle=300, conv_tol=1e-10, conv_tol_grad=1e-6)
    solver = fci.FCI(hf)
    _, civec = solver.kernel()
    dm_fci = hf.mo_coeff @ solver.make_rdm1(civec, nao, mol.nelec) @ hf.mo_coeff.T
    on_densities = {key: float(mf.energy_tot(dm=dm)) for key, dm in
                    (("B3LYP", b3.make_rdm1()), ("HF", hf.make_rdm1()), ("FCI", dm_fci))}
    return solutions, e_ensemble, on_densities, b3.e_tot


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--distance", default="0.74,1.5,2,3,4,6", help="Angstrom, comma-separated")
    parser.add_argument("--basis", default="def2-svp")
    parser.add_argument("--grid-level", type=int, default=3)
    parser.add_argument("--starts", type=int, default=2, help="random starting orbitals per distance")
    parser.add_argument("--checkpoints", default=os.environ.get("DM21_CHECKPOINTS"))
    args = parser.parse_args(argv)
    from dm21cli.functional.network import DM21Network

    network = DM21Network.load("DM21", args.checkpoints, precision="float64")
    (h_dm21, frac_dm21), (h_b3, frac_b3) = (lambda a: (a["DM21"], a["B3LYP"]))(
        atoms(network, args.basis, args.grid_level))
    print(f"H atom ({args.basis}, grid level {args.grid_level}): DM21 doublet {h_dm21:.8f} Ha, "
          f"fractional spin {frac_dm21:.8f} Ha ({MHA * (frac_dm21 - h_dm21):+.2f} mHa); "
          f"B3LYP {h_b3:.8f} / {frac_b3:.8f} Ha ({MHA * (frac_b3 - h_b3):+.2f} mHa)")
    print("energies in mHa against 2 E(H doublet) of the same functional; [vs 2 E(fractional-spin H)]")
    for r in (float(x) for x in args.distance.split(",")):
        solutions, e_ens, on, e_b3 = distance(r, network, args.basis, args.grid_level, args.starts)
        lowest = min(solutions, key=lambda k: solutions[k][0])
        e_low = solutions[lowest][0]
        print(f"\nR = {r:g} A: lowest restricted DM21 {MHA * (e_low - 2 * h_dm21):+.2f} "
              f"[{MHA * (e_low - 2 * frac_dm21):+.2f}] from '{lowest}'; restricted B3LYP {MHA * (e_b3 - 2 * h_b3):+.2f}")
        for name, (e, conv, rank, g) in solutions.items():
            kind = "aufbau" if rank == 0 else f"non-aufbau ({rank} empty below)"
            orbital = "gerade" if g > 0.99 else "ungerade" if g < -0.99 else f"mixed parity {g:+.2f}"
            print(f"  start {name:10s} {MHA * (e - 2 * h_dm21):+9.2f}  {kind}, {orbital}"
                  f"{'' if conv else ', NOT converged'}")
        print("  DM21 on densities: " + ", ".join(f"{k} {MHA * (v - 2 * h_dm21):+.2f}" for k, v in on.items())
              + f"; sigma_g^1 sigma_u^1 ensemble SCF {MHA * (e_ens - 2 * h_dm21):+.2f} "
              f"[{MHA * (e_ens - 2 * frac_dm21):+.2f}]")


if __name__ == "__main__":
    main()
