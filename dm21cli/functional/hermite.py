"""The McMurchie-Davidson plan of a molecule's shell pairs, read by the grid
Coulomb kernel (`_gridcoulomb.c`, called through `kernels.fill_coulomb`,
`kernels.coulomb_features` and `kernels.coulomb_ip_features`).

For every shell pair (b's shell >= d's) and every primitive pair of it, the
Gaussian product chi_b chi_d is a sum of Hermite Gaussians centred at P with
exponent p; M holds its coefficients, one row per AO pair (contraction
coefficients, the product's prefactor K_bd and libcint's Cartesian-to-
spherical transformation folded in), one column per Hermite index (t, u, v)
ordered as the kernel orders them: by t + u + v, then t and u descending.
Generally contracted shells are split into one shell per contraction.

The derivative plan (`build_plan(mol, derivative=True)`) holds, in the same
layout, the coefficients of (d/dx chi_b) chi_d and chi_b (d/dx chi_d), d/dx
on the electron coordinate, for the gradient's integrals <d_x chi_b | v | chi_d>
(libcint's int1e_grids_ip): both come from one set of Hermite integrals of
one order higher.

Primitive pairs whose whole product is below PRIM_SCREEN (|c_b c_d| K_bd
2 pi / p, the largest value its 1/r integral can take for s functions) are
left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Primitive pairs below this bound on their integrals are dropped (see the module docstring).
PRIM_SCREEN = 1e-17


def cartesians(l: int) -> list[tuple[int, int, int]]:
    """libcint's order of the Cartesian components of angular momentum l."""
    return [(lx, ly, l - lx - ly) for lx in range(l, -1, -1) for ly in range(l - lx, -1, -1)]


def hermite_indices(L: int) -> list[tuple[int, int, int]]:
    """The kernel's order of the Hermite indices (t, u, v) with t + u + v <= L."""
    return [(t, u, n - t - u) for n in range(L + 1) for t in range(n, -1, -1)
            for u in range(n - t, -1, -1)]


def hermite_e(la: int, lb: int, xpa: np.ndarray, xpb: np.ndarray, half_over_p: np.ndarray):
    """E^{ij}_t of one Cartesian direction for K primitive pairs: (K, la+1, lb+1, la+lb+2)
    (the last index one longer than needed, always zero there), without K_ab.

    xpa, xpb: (K,) P - A and P - B in bohr; half_over_p: (K,) 1 / (2p).
    """
    e = np.zeros((len(xpa), la + 1, lb + 1, la + lb + 2))
    e[:, 0, 0, 0] = 1.0
    for i in range(la + 1):
        for j in range(lb + 1):
            if i == 0 and j == 0:
                continue
            src, x = (e[:, i - 1, j], xpa) if i > 0 else (e[:, i, j - 1], xpb)
            for t in range(i + j + 1):
                val = x * src[:, t] + (t + 1) * src[:, t + 1]
                if t > 0:
                    val = val + half_over_p * src[:, t - 1]
                e[:, i, j, t] = val
    return e


@dataclass
class Plan:
    """What `_gridcoulomb.c` reads (see its gc_plan comment for the layouts)."""

    nao: int
    pairs: np.ndarray  # (npairs, 9) int64
    prim: np.ndarray  # (nprim_pairs, 4) float64: P (bohr), p
    mmat: np.ndarray  # (total,) float64
    lmax: int  # largest Hermite order: l_b + l_d (+ 1 for derivatives)
    derivative: bool = False  # the plan of <d_x chi_b | v | chi_d> instead of nu


def _shells(mol) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray, int]]:
    """(l, centre (3,) bohr, exponents, coefficients, first AO) per contraction, in AO order."""
    if mol.cart:
        raise ValueError("the grid Coulomb kernel takes spherical basis functions only")
    ao_loc = mol.ao_loc_nr()
    out = []
    for ish in range(mol.nbas):
        l = mol.bas_angular(ish)
        exps = np.asarray(mol.bas_exp(ish), dtype=float)
        coef = mol._libcint_ctr_coeff(ish)
        for c in range(coef.shape[1]):
            keep = coef[:, c] != 0.0
            out.append((l, np.asarray(mol.bas_coord(ish), dtype=float), exps[keep],
                        coef[keep, c], ao_loc[ish] + c * (2 * l + 1)))
    return out


def _derivative_e(e: np.ndarray, exponent: np.ndarray, first: bool, la: int, lb: int) -> np.ndarray:
    """E of (d/dx chi_a) chi_b (first) or chi_a (d/dx chi_b), d/dx on the electron
    coordinate: d/dx x_A^i e^{-a x_A^2} = i x_A^(i-1) - 2a x_A^(i+1) (times the
    Gaussian).  e: `hermite_e` up to la + 1 and lb + 1; returns (K, la+1, lb+1, T)."""
    out = np.zeros((e.shape[0], la + 1, lb + 1, e.shape[3]))
    for i in range(la + 1):
        for j in range(lb + 1):
            if first:
                out[:, i, j] = -2 * exponent[:, None] * e[:, i + 1, j]
                if i:
                    out[:, i, j] += i * e[:, i - 1, j]
            else:
                out[:, i, j] = -2 * exponent[:, None] * e[:, i, j + 1]
                if j:
                    out[:, i, j] += j * e[:, i, j - 1]
    return out


def _hermite_matrices(la: int, lb: int, ex, ey, ez, herm, derivative: tuple | None = None):
    """(K, ncart_a, ncart_b, nh): the product of the three directions' E at every
    Hermite index; derivative = (direction, its differentiated E) replaces that
    direction's E."""
    ca, cb = np.array(cartesians(la)), np.array(cartesians(lb))
    es = [ex, ey, ez]
    if derivative is not None:
        es[derivative[0]] = derivative[1]
    out = 1.0
    for x in range(3):
        out = out * es[x][:, ca[:, None, None, x], cb[None, :, None, x], herm[None, None, :, x]]
    return out


def build_plan(mol, screen: float = PRIM_SCREEN, derivative: bool = False) -> Plan:
    """The plan of mol's shell pairs (spherical basis functions).

    derivative: instead of nu, the plan of the derivative integrals
    <d_x chi_b | v | chi_d> (`kernels.coulomb_ip_features`): Hermite order
    l_b + l_d + 1, per primitive pair the sets x = 0, 1, 2 differentiating the
    pair's first shell and, for two different shells, x = 0, 1, 2 on its second.
    """
    from pyscf import gto

    shells = _shells(mol)
    by_class: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for i in range(len(shells)):
        for j in range(i + 1):
            by_class.setdefault((shells[i][0], shells[j][0]), []).append((i, j))
    pair_rows, prims, mats = [], [], []
    k_total = m_total = 0
    for (la, lb), members in sorted(by_class.items()):
        L = la + lb + (1 if derivative else 0)
        herm = np.array(hermite_indices(L))
        c2s_a, c2s_b = gto.cart2sph(la), gto.cart2sph(lb)
        nab = c2s_a.shape[1] * c2s_b.shape[1]
        # every primitive pair of every shell pair of the class, shell pair by shell pair
        a_exp, b_exp, coef, a_xyz, b_xyz, owner = [], [], [], [], [], []
        for q, (i, j) in enumerate(members):
            _, A, ea, cfa, _ = shells[i]
            _, B, eb, cfb, _ = shells[j]
            a_exp.append(np.repeat(ea, len(eb)))
            b_exp.append(np.tile(eb, len(ea)))
            coef.append(np.outer(cfa, cfb).ravel())
            a_xyz.append(np.broadcast_to(A, (len(ea) * len(eb), 3)))
            b_xyz.append(np.broadcast_to(B, (len(ea) * len(eb), 3)))
            owner.append(np.full(len(ea) * len(eb), q))
        a_exp, b_exp, coef = np.concatenate(a_exp), np.concatenate(b_exp), np.concatenate(coef)
        a_xyz, b_xyz, owner = np.concatenate(a_xyz), np.concatenate(b_xyz), np.concatenate(owner)
        p = a_exp + b_exp
        centre = (a_exp[:, None] * a_xyz + b_exp[:, None] * b_xyz) / p[:, None]
        k_ab = np.exp(-a_exp * b_exp / p * ((a_xyz - b_xyz) ** 2).sum(axis=1))
        weight = coef * k_ab
        keep = np.abs(weight) * 2 * np.pi / p >= screen
        p, centre, weight, owner = p[keep], centre[keep], weight[keep], owner[keep]
        a_exp, b_exp, a_xyz, b_xyz = a_exp[keep], b_exp[keep], a_xyz[keep], b_xyz[keep]
        extra = 1 if derivative else 0
        e3 = [hermite_e(la + extra, lb + extra, centre[:, x] - a_xyz[:, x], centre[:, x] - b_xyz[:, x],
                        0.5 / p) for x in range(3)]
        if not derivative:
            sets = [_hermite_matrices(la, lb, *e3, herm)]
        else:
            e3 = [e[:, :, :, :L + 1] for e in e3]
            plain = [e[:, :la + 1, :lb + 1] for e in e3]
            sets = [_hermite_matrices(la, lb, *plain, herm, (x, _derivative_e(e3[x], a_exp, True, la, lb)))
                    for x in range(3)]
            two_shells = [members[q][0] != members[q][1] for q in range(len(members))]
            if any(two_shells):  # classes mix pairs of one shell with pairs of two only when la == lb
                sets += [_hermite_matrices(la, lb, *plain, herm,
                                           (x, _derivative_e(e3[x], b_exp, False, la, lb)))
                         for x in range(3)]
        m = np.stack([np.einsum("kabh,am,bn->kmnh", h, c2s_a, c2s_b) for h in sets], axis=1)
        m = m * weight[:, None, None, None, None]  # (K, nset, nsph_a, nsph_b, nh)
        counts = np.bincount(owner, minlength=len(members))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        flat = []
        for q, (i, j) in enumerate(members):
            block = m[starts[q]:starts[q] + counts[q]]
            if derivative and i == j:
                block = block[:, :3]  # one shell: its pairs (b, d) in both orders are all there
            pair_rows.append((shells[i][4], shells[j][4], 2 * la + 1, 2 * lb + 1, L, counts[q],
                              k_total + starts[q], m_total, block.shape[1]))
            flat.append(block.ravel())
            m_total += block.size
        prims.append(np.column_stack([centre, p]))
        mats.append(np.concatenate(flat) if flat else np.zeros(0))
        k_total += len(p)
    return Plan(nao=mol.nao_nr(), pairs=np.array(pair_rows, dtype=np.int64).reshape(-1, 9),
                prim=np.ascontiguousarray(np.concatenate(prims)),
                mmat=np.ascontiguousarray(np.concatenate(mats)),
                lmax=max((r[4] for r in pair_rows), default=0), derivative=derivative)
