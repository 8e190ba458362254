"""The McMurchie-Davidson plan of a molecule's shell pairs, read by the grid
Coulomb kernel (`_gridcoulomb.c`, called through `kernels.fill_coulomb`,
`kernels.coulomb_features` and `kernels.coulomb_ip_force`).

For every shell pair (b's shell >= d's) and every primitive pair of it, the
Gaussian product chi_b chi_d is a sum of Hermite Gaussians centred at P with
exponent p; M holds its coefficients, one row per AO pair (contraction
coefficients, the product's prefactor K_bd and libcint's Cartesian-to-
spherical transformation folded in), one column per Hermite index (t, u, v)
ordered as the kernel orders them: by t + u + v, then t and u descending.
Generally contracted shells are split into one shell per contraction.

The force plan (`build_plan(mol, derivative=True)`) is read by the kernel that
contracts the gradient's derivative integrals to forces (`kernels.coulomb_ip_force`):
per primitive pair M (set 0, halved for a pair of one shell: its AO pairs appear in
both orders) and, for shells on two atoms, the derivatives of M with respect to
Q = A - B at fixed P and p (sets 1 to 3, the same order as M; with d/dP they give
d/dA and d/dB, see `_gridcoulomb.c`), the ratio a/p per primitive pair and the two
atoms per shell pair.

Primitive pairs whose whole product is below PRIM_SCREEN (|c_b c_d| K_bd
2 pi / p, the largest value its 1/r integral can take for s functions) are
left out.

Every shell pair also gets a bound that holds at every point and for every omega
(`Plan.bound`), for the kernels' density screening.  The Hermite Coulomb integrals are
R_tuv(X) = pref d^t/dX_x d^u/dX_y d^v/dX_z F_0(mu |X|^2) with F_0(mu X^2) = int_0^1
exp(-mu X^2 s^2) ds; by Cramer's inequality for Hermite functions (|H_n(y)| e^(-y^2/2) <=
CRAMER 2^(n/2) sqrt(n!)),

    |R_tuv| <= pref CRAMER^3 (2 mu)^(n/2) sqrt(t! u! v!) / (n + 1),   n = t + u + v,

largest for omega = 0 (mu = p, pref = 2 pi / p; an attenuated operator has a smaller mu
and pref).  nu's plan: bound = max over the pair's AO pairs of sum_k sum_h |M_k,h| times
that, so |nu_bd(r)| <= bound everywhere.  The force plan: bound = sum over the AO pairs
and primitive pairs of 4 sum_h |M_h| max_x |R_(h+x)| + 2 max_x sum_h |dM/dQ_x,h| |R_h|, so
that the pair changes no force component (summed over the atoms, the points' own term
included) by more than bound sum_g |W_bd(g)| for the largest W of its AO pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Primitive pairs below this bound on their integrals are dropped (see the module docstring).
PRIM_SCREEN = 1e-17
#: Cramer's constant: |H_n(y)| e^(-y^2/2) <= CRAMER 2^(n/2) sqrt(n!) for every n and y.
CRAMER = 1.086435


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
    lmax: int  # largest Hermite order: l_b + l_d (+ 1 in the force plan)
    derivative: bool = False  # the force plan (`kernels.coulomb_ip_force`) instead of nu's
    ratio: np.ndarray | None = None  # force plan: (nprim_pairs,) a/p
    atoms: np.ndarray | None = None  # force plan: (npairs, 2) int64, the atoms of the two shells
    bound: np.ndarray | None = None  # (npairs,) float64: see the module docstring


def _shells(mol) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray, int, int]]:
    """(l, centre (3,) bohr, exponents, coefficients, first AO, atom) per contraction, in AO
    order."""
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
                        coef[keep, c], ao_loc[ish] + c * (2 * l + 1), mol.bas_atom(ish)))
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


def _q_derivatives(la: int, lb: int, e3, m_plain: np.ndarray, a_exp: np.ndarray, p: np.ndarray, L: int):
    """d M / dQ_x (x = 0, 1, 2) at fixed P and p, Q = A - B: (K, 3, ncart_a, ncart_b, nh(L)).

    Moving A alone moves P by a/p and Q by one: d/dA = (a/p) d/dP + d/dQ, and d/dP
    raises a Hermite index by one.  So d/dQ = d/dA - (a/p) (M shifted up), with
    d/dA minus the E of (d/dx chi_a) chi_b (`_derivative_e`, d/dx on the electron).
    d/dA and the shifted M have order L + 1; their difference has none (the
    polynomial part loses a degree, K_ab keeps it), and is returned truncated to L.
    """
    herm1 = hermite_indices(L + 1)
    index = {tuv: h for h, tuv in enumerate(hermite_indices(L))}
    plain = [e[:, :la + 1, :lb + 1] for e in e3]
    out = []
    for x in range(3):
        dq = -_hermite_matrices(la, lb, *plain, np.array(herm1),
                                (x, _derivative_e(e3[x], a_exp, True, la, lb)))
        for h1, tuv in enumerate(herm1):
            if tuv[x]:
                lower = list(tuv)
                lower[x] -= 1
                dq[..., h1] -= (a_exp / p)[:, None, None] * m_plain[..., index[tuple(lower)]]
        out.append(dq[..., :len(index)])
    return np.stack(out, axis=1)


def r_bounds(p: np.ndarray, L: int) -> np.ndarray:
    """(K, nh(L)) bounds on |R_tuv| at every point and omega for products of exponents p
    (K,), in the kernel's order of (t, u, v) (see the module docstring)."""
    from math import factorial

    herm = hermite_indices(L)
    n = np.array([sum(tuv) for tuv in herm], dtype=float)
    fact = np.array([np.sqrt(float(factorial(t) * factorial(u) * factorial(v))) for t, u, v in herm])
    return (2 * np.pi / p[:, None] * CRAMER ** 3 * (2 * p[:, None]) ** (n / 2) * fact / (n + 1))


def _pair_bound(block: np.ndarray, rb: np.ndarray, up: np.ndarray | None) -> float:
    """A shell pair's bound (see the module docstring) from its block (nk, nset, na, nb, nh)
    of M and rb (nk, nh(L + 1 if up is given else L)); up (3, nh(L)): the index of each
    Hermite index raised in x, y, z (the force plan), or None (nu's plan)."""
    nh = block.shape[-1]
    mabs = np.abs(block)
    if up is None:
        return float(np.einsum("kabh,kh->ab", mabs[:, 0], rb[:, :nh]).max(initial=0.0))
    raised = rb[:, up].max(axis=1)  # (nk, nh): max over x of |R_(h+x)|
    total = 4 * np.einsum("kabh,kh->", mabs[:, 0], raised)
    if block.shape[1] == 4:
        total += 2 * np.einsum("kxabh,kh->kabx", mabs[:, 1:], rb[:, :nh]).max(axis=-1).sum()
    return float(total)


def build_plan(mol, screen: float = PRIM_SCREEN, derivative: bool = False) -> Plan:
    """The plan of mol's shell pairs (spherical basis functions).

    derivative: instead of nu's plan, the force plan (`kernels.coulomb_ip_force`):
    per primitive pair M (halved for a pair of one shell) and, for two shells on
    two atoms, dM/dQ_x (x = 0, 1, 2); the kernel computes Hermite integrals of
    order l_b + l_d + 1 (the plan's lmax).
    """
    from pyscf import gto

    shells = _shells(mol)
    by_class: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for i in range(len(shells)):
        for j in range(i + 1):
            by_class.setdefault((shells[i][0], shells[j][0]), []).append((i, j))
    pair_rows, pair_atoms, prims, mats, ratios, bounds = [], [], [], [], [], []
    k_total = m_total = 0
    for (la, lb), members in sorted(by_class.items()):
        L = la + lb
        herm = np.array(hermite_indices(L))
        c2s_a, c2s_b = gto.cart2sph(la), gto.cart2sph(lb)
        # every primitive pair of every shell pair of the class, shell pair by shell pair
        a_exp, b_exp, coef, a_xyz, b_xyz, owner = [], [], [], [], [], []
        for q, (i, j) in enumerate(members):
            _, A, ea, cfa, _, _ = shells[i]
            _, B, eb, cfb, _, _ = shells[j]
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
        m_plain = _hermite_matrices(la, lb, *[e[:, :la + 1, :lb + 1] for e in e3], herm)
        if derivative:
            cart = np.concatenate([m_plain[:, None], _q_derivatives(la, lb, e3, m_plain, a_exp, p, L)],
                                  axis=1)
        else:
            cart = m_plain[:, None]
        m = np.einsum("ksabh,am,bn->ksmnh", cart, c2s_a, c2s_b)
        m = m * weight[:, None, None, None, None]  # (K, nset, nsph_a, nsph_b, nh)
        counts = np.bincount(owner, minlength=len(members))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rb = r_bounds(p, L + extra)
        up = None
        if derivative:
            index = {tuv: h for h, tuv in enumerate(hermite_indices(L + 1))}
            up = np.array([[index[tuple(np.add(tuv, np.eye(3, dtype=int)[x]))] for tuv in herm]
                           for x in range(3)])
        flat = []
        for q, (i, j) in enumerate(members):
            block = m[starts[q]:starts[q] + counts[q]]
            atoms = (shells[i][5], shells[j][5])
            if derivative and atoms[0] == atoms[1]:
                # one atom: only d/dA + d/dB = d/dP moves it; a pair of one shell holds
                # its AO pairs in both orders, hence half
                block = block[:, :1] * (0.5 if i == j else 1.0)
            pair_rows.append((shells[i][4], shells[j][4], 2 * la + 1, 2 * lb + 1, L, counts[q],
                              k_total + starts[q], m_total, block.shape[1]))
            pair_atoms.append(atoms)
            bounds.append(_pair_bound(block, rb[starts[q]:starts[q] + counts[q]], up))
            flat.append(block.ravel())
            m_total += block.size
        prims.append(np.column_stack([centre, p]))
        ratios.append(a_exp / p)
        mats.append(np.concatenate(flat) if flat else np.zeros(0))
        k_total += len(p)
    lmax = max((r[4] for r in pair_rows), default=0) + (1 if derivative else 0)
    return Plan(nao=mol.nao_nr(), pairs=np.array(pair_rows, dtype=np.int64).reshape(-1, 9),
                prim=np.ascontiguousarray(np.concatenate(prims)),
                mmat=np.ascontiguousarray(np.concatenate(mats)), lmax=lmax, derivative=derivative,
                ratio=np.ascontiguousarray(np.concatenate(ratios)) if derivative else None,
                atoms=np.array(pair_atoms, dtype=np.int64).reshape(-1, 2) if derivative else None,
                bound=np.array(bounds, dtype=np.float64))
