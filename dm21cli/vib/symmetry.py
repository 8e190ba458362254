"""Point group and rotational symmetry number of a molecule, tolerant of numerical noise.

The rotational symmetry number sigma is the number of proper rotations that map
the molecule onto itself, exchanging only identical atoms (same element and same
mass: HDO has sigma 1, D2O 2).  A geometry from an optimisation is symmetric only
up to its convergence (GAU: 1.8e-3 Angstrom): PySCF's detection
(``pyscf.symm.geom.detect_symm``) works at 1e-5 bohr and calls such a water C1 or
Cs, an ammonia C1.  So the operations are found here first, with a tolerance of
`SYMMETRY_TOLERANCE_BOHR` on every atom's position:

1. candidate operations map two reference atoms a, b (not in line with the centre
   of mass) onto atoms of the same kind at the same distances, with a proper
   (det +1) or improper (det -1) orthogonal matrix;
2. each candidate is refitted to all the atoms it pairs (orthogonal Procrustes with
   the determinant kept) and kept if every atom lands within the tolerance of its
   partner;
3. the operations are closed into a group (`group_operations`); sigma is the number of
   proper ones (the definition); the geometry is symmetrised over them (the average of
   g^-1 r_g(i)) and PySCF names the point group of that exactly symmetric geometry.
   The table `symmetry_number_of` (sigma per group) gives the same sigma for every group
   ``tests/test_vib.py`` tries (C2, C2v, C3v, D2d, D3d, D3h, D6h, Td, Oh, noisy or not).

Linear molecules are D_inf_h (sigma 2) if an inversion through the centre of mass
maps them onto themselves within the tolerance, else C_inf_v (sigma 1); a single
atom is "SO3" (sigma 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

#: how far (bohr) an atom may be from the image of its partner under a symmetry operation
#: (0.01 bohr = 0.0053 Angstrom, three times the max displacement criterion of geomeTRIC's
#: GAU set: within an optimisation's own precision of a symmetric structure)
SYMMETRY_TOLERANCE_BOHR = 0.01
#: a molecule whose atoms all lie within this distance (bohr) of one line is linear
LINEAR_TOLERANCE_BOHR = SYMMETRY_TOLERANCE_BOHR


@dataclass(frozen=True)
class PointGroup:
    """A molecule's point group (Schoenflies symbol as PySCF writes it: ``C2v``, ``Dooh``,
    ``Coov``, ``SO3`` for an atom) and its rotational symmetry number; `n_operations` is the
    order of the group found (proper and improper operations, identity included; 0 for
    linear molecules and atoms, whose groups are infinite)."""

    name: str
    symmetry_number: int
    n_operations: int


def symmetry_number_of(group: str) -> int:
    """Rotational symmetry number of a point group (PySCF's spelling).

    C1, Ci, Cs: 1; Cn, Cnv, Cnh: n; Dn, Dnh, Dnd: 2n; Sn: n/2; T, Td, Th: 12;
    O, Oh: 24; I, Ih: 60; Coov: 1; Dooh: 2; SO3 (an atom): 1.
    """
    fixed = {"C1": 1, "Ci": 1, "Cs": 1, "SO3": 1, "Coov": 1, "Dooh": 2,
             "T": 12, "Td": 12, "Th": 12, "O": 24, "Oh": 24, "I": 60, "Ih": 60}
    if group in fixed:
        return fixed[group]
    match = re.fullmatch(r"([CDS])(\d+)([vhd]?)", group)
    if match is None:
        raise ValueError(f"unknown point group {group!r}")
    kind, n = match.group(1), int(match.group(2))
    if kind == "C":
        return n
    if kind == "D":
        return 2 * n
    return n // 2


def kinds_of(masses_amu) -> np.ndarray:
    """(N,) integer kind per atom: equal for atoms of equal mass (to 1e-6 u), which is the
    same element and isotope (no two nuclides share a mass to 1e-6 u)."""
    keys = [round(float(m), 6) for m in masses_amu]
    table = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    return np.array([table[key] for key in keys])


def centred(coords_bohr, masses_amu) -> np.ndarray:
    """(N, 3) coordinates relative to the centre of mass (bohr)."""
    coords = np.asarray(coords_bohr, dtype=float).reshape(-1, 3)
    masses = np.asarray(masses_amu, dtype=float)
    return coords - masses @ coords / masses.sum()


def is_linear(coords_bohr, masses_amu, tolerance_bohr: float = LINEAR_TOLERANCE_BOHR) -> bool:
    """Whether all atoms lie on one line through the centre of mass within `tolerance_bohr`
    (two atoms always do; a single atom is not linear)."""
    r = centred(coords_bohr, masses_amu)
    if len(r) < 2:
        return False
    axis = principal_axis(r)
    off_axis = r - np.outer(r @ axis, axis)
    return bool(np.linalg.norm(off_axis, axis=1).max() < tolerance_bohr)


def principal_axis(r: np.ndarray) -> np.ndarray:
    """Unit vector along which the centred points `r` (N, 3) spread most."""
    _, _, vt = np.linalg.svd(r, full_matrices=False)
    return vt[0]


def point_group(coords_bohr, masses_amu,
                tolerance_bohr: float = SYMMETRY_TOLERANCE_BOHR) -> PointGroup:
    """The point group and rotational symmetry number of a molecule (see the module
    docstring).  coords_bohr (N, 3), masses_amu (N,): atoms of equal mass are identical."""
    r = centred(coords_bohr, masses_amu)
    kinds = kinds_of(masses_amu)
    if len(r) == 1:
        return PointGroup("SO3", 1, 0)
    if is_linear(r, masses_amu, tolerance_bohr):
        inverted = _match(-r, r, kinds, tolerance_bohr)
        return PointGroup("Dooh", 2, 0) if inverted is not None else PointGroup("Coov", 1, 0)
    operations = group_operations(r, kinds, tolerance_bohr)
    n_proper = sum(1 for rot, _ in operations if np.linalg.det(rot) > 0)
    name = _pyscf_group_name(symmetrised(r, operations), kinds)
    return PointGroup(name, n_proper, len(operations))


def group_operations(r: np.ndarray, kinds: np.ndarray, tolerance_bohr: float):
    """The operations of `find_operations`, closed into a group.

    Near the tolerance some operations of a group may be found and others not: the
    permutations found are then closed under composition, and the closure is kept if each
    of its operations, refitted, maps the atoms within 3 x `tolerance_bohr`.  Otherwise the
    search is repeated with half the tolerance (down to 1/16 of it; then the identity
    alone: C1).
    """
    tolerance = tolerance_bohr
    while tolerance >= tolerance_bohr / 16:
        operations = _closed(r, kinds, find_operations(r, kinds, tolerance), 3 * tolerance)
        if operations is not None:
            return operations
        tolerance /= 2
    return [(np.eye(3), np.arange(len(r)))]


def _closed(r, kinds, operations, tolerance):
    """The group the (R, perm) `operations` generate, each refitted to its permutation; None
    if one of them does not map the atoms within `tolerance`."""
    keys = {(tuple(perm), bool(np.linalg.det(rot) > 0)) for rot, perm in operations}
    frontier = list(keys)
    while frontier:
        new = []
        for perm_a, proper_a in frontier:
            for perm_b, proper_b in list(keys):
                for key in ((tuple(np.array(perm_a)[list(perm_b)]), proper_a == proper_b),
                            (tuple(np.array(perm_b)[list(perm_a)]), proper_a == proper_b)):
                    if key not in keys:
                        keys.add(key)
                        new.append(key)
        frontier = new
        if len(keys) > 240:  # no finite point group of a molecule has more (Ih: 120)
            return None
    closed = []
    for perm, proper in keys:
        perm = np.array(perm)
        rot = _procrustes(r, r[perm], 1.0 if proper else -1.0)
        if np.linalg.norm(r @ rot.T - r[perm], axis=1).max() >= tolerance:
            return None
        closed.append((rot, perm))
    return closed


def find_operations(r: np.ndarray, kinds: np.ndarray, tolerance_bohr: float):
    """[(R (3, 3), permutation (N,))]: the orthogonal R with R r_i = r_perm[i] within
    `tolerance_bohr` for every atom, atoms of a kind mapped onto that kind.  r is centred
    at the centre of mass and not linear.  The identity is always among them."""
    a, b = _reference_atoms(r, kinds)
    loose = 10 * tolerance_bohr
    norms = np.linalg.norm(r, axis=1)
    images_a = np.flatnonzero((kinds == kinds[a]) & (abs(norms - norms[a]) < loose))
    images_b = np.flatnonzero((kinds == kinds[b]) & (abs(norms - norms[b]) < loose))
    frame = _frame(r[a], r[b])
    found: dict[tuple, np.ndarray] = {}
    for ia in images_a:
        for ib in images_b:
            if ia == ib or abs(r[ia] @ r[ib] - r[a] @ r[b]) > loose * (norms[a] + norms[b]):
                continue
            for handedness in (1.0, -1.0):
                image = _frame(r[ia], r[ib])
                image[:, 2] *= handedness
                rot = image @ frame.T
                perm = _match(r @ rot.T, r, kinds, loose)
                if perm is None:
                    continue
                rot = _procrustes(r, r[perm], handedness)
                perm = _match(r @ rot.T, r, kinds, tolerance_bohr)
                if perm is not None:
                    found.setdefault(tuple(perm) + (handedness,), rot)
    return [(rot, np.array(key[:-1])) for key, rot in found.items()]


def symmetrised(r: np.ndarray, operations) -> np.ndarray:
    """(N, 3) the average over the operations of R^T r_perm[i]: exactly symmetric under
    the group the operations form."""
    total = np.zeros_like(r)
    for rot, perm in operations:
        total += r[perm] @ rot
    return total / len(operations)


def _reference_atoms(r: np.ndarray, kinds: np.ndarray) -> tuple[int, int]:
    """Two atoms to build frames from: a far from the centre, b far from the line of a;
    among such, those with the fewest atoms of their kind (fewest candidates)."""
    norms = np.linalg.norm(r, axis=1)
    count = np.bincount(kinds)[kinds]
    a = int(np.lexsort((-norms, count, norms < 0.5 * norms.max()))[0])
    axis = r[a] / norms[a]
    off = np.linalg.norm(r - np.outer(r @ axis, axis), axis=1)
    b = int(np.lexsort((-off, count, off < 0.5 * off.max()))[0])
    return a, b


def _frame(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Right-handed orthonormal frame (columns) from u and the part of v normal to it."""
    e1 = u / np.linalg.norm(u)
    w = v - (v @ e1) * e1
    e2 = w / np.linalg.norm(w)
    return np.column_stack([e1, e2, np.cross(e1, e2)])


def _procrustes(r: np.ndarray, target: np.ndarray, determinant: float) -> np.ndarray:
    """The orthogonal R of determinant `determinant` minimising sum |R r_i - target_i|^2."""
    u, _, vt = np.linalg.svd(target.T @ r)
    d = np.ones(3)
    if np.linalg.det(u @ vt) * determinant < 0:
        d[2] = -1.0
    return u @ np.diag(d) @ vt


def _match(moved: np.ndarray, r: np.ndarray, kinds: np.ndarray, tolerance: float):
    """perm with |moved_i - r_perm[i]| < tolerance and equal kinds, one-to-one; or None."""
    distance = np.linalg.norm(moved[:, None, :] - r[None, :, :], axis=2)
    distance[kinds[:, None] != kinds[None, :]] = np.inf
    perm = distance.argmin(axis=1)
    if distance[np.arange(len(r)), perm].max() >= tolerance:
        return None
    if len(set(perm.tolist())) != len(perm):
        return None
    return perm


def _pyscf_group_name(r: np.ndarray, kinds: np.ndarray) -> str:
    """PySCF's name of the point group of the (symmetrised) geometry; atoms of different
    kinds carry different labels (``He1``, ``He2``, ...: PySCF treats atoms with
    different labels as different)."""
    from pyscf.symm import geom

    atoms = [(f"He{int(k) + 1}", tuple(x)) for k, x in zip(kinds, r)]
    return geom.detect_symm(atoms)[0]
