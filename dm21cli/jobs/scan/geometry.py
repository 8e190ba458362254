"""The geometry of angle and dihedral scans: measuring, the moving fragment, rigid rotation.

Coordinates are (natm, 3) arrays in Angstrom, atoms 0-based, angles in degrees (the scan's
values are degrees at the edges, and nothing here computes energies, so no radians leak
out).  A dihedral I-J-K-L is IUPAC's (and geomeTRIC's, `geometric.internal.Dihedral`):
positive when, looking from J towards K, the bond J-I turns clockwise (by less than 180
degrees) to cover K-L.  Dihedral values are kept in [0, 360)
(`dm21cli.io.inputs.scan_model.normalise_dihedral`): point names carry no sign and sort by
value.
"""

from __future__ import annotations

import math

import numpy as np

from dm21cli.core import elements
from dm21cli.io.inputs.scan_model import normalise_dihedral

#: two atoms are bonded when closer than this multiple of the sum of their covalent radii
#: (PySCF's table); geomeTRIC's own bond test uses the same factor (`Molecule.build_bonds`)
BOND_FACTOR = 1.2

#: a dihedral whose I-J-K or J-K-L angle lies within this of 0 or 180 degrees is refused as
#: undefined (collinear atoms: the tiniest move turns it by any amount)
COLLINEAR_DEGREES = 1.0


def angle_degrees(coords_angstrom, i: int, j: int, k: int) -> float:
    """The angle I-J-K (vertex J) in degrees, 0 to 180."""
    coords = np.asarray(coords_angstrom, dtype=float)
    u, v = coords[i] - coords[j], coords[k] - coords[j]
    # atan2 of |u x v| and u.v: exact near 0 and 180, where acos of the cosine is not
    return math.degrees(math.atan2(float(np.linalg.norm(np.cross(u, v))), float(u @ v)))


def dihedral_degrees(coords_angstrom, i: int, j: int, k: int, l: int) -> float:
    """The dihedral I-J-K-L in degrees, in [0, 360) (`normalise_dihedral`)."""
    coords = np.asarray(coords_angstrom, dtype=float)
    b1, b2, b3 = coords[j] - coords[i], coords[k] - coords[j], coords[l] - coords[k]
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    value = math.atan2(float(np.linalg.norm(b2) * (b1 @ n2)), float(n1 @ n2))
    return normalise_dihedral(math.degrees(value))


def measure_degrees(coords_angstrom, atoms) -> float:
    """The angle (three atoms) or dihedral (four atoms) of `atoms`, in degrees."""
    if len(atoms) == 3:
        return angle_degrees(coords_angstrom, *atoms)
    return dihedral_degrees(coords_angstrom, *atoms)


def turn_between(a_degree: float, b_degree: float) -> float:
    """The signed rotation b - a of two dihedrals, the short way round: in [-180, 180)."""
    return (b_degree - a_degree + 180.0) % 360.0 - 180.0


def nearest_turn(value_degree: float, target_degree: float) -> float:
    """The representative of the dihedral `value_degree` nearest `target_degree` (a
    measured 359.9996 for a target of 0 is -0.0004, not 359.9996)."""
    return round(target_degree + turn_between(target_degree, value_degree), 9) + 0.0


def bonds(symbols: list[str], coords_angstrom) -> set[tuple[int, int]]:
    """Covalent bonds (i < j, 0-based): atoms closer than `BOND_FACTOR` times the sum of
    their covalent radii (PySCF's table)."""
    from pyscf.data import radii

    from dm21cli.core.units import BOHR_ANGSTROM

    coords = np.asarray(coords_angstrom, dtype=float)
    r = np.array([radii.COVALENT[elements.atomic_number(s)] * BOHR_ANGSTROM for s in symbols])
    d = np.linalg.norm(coords[:, None, :] - coords[None, :, :], axis=-1)
    near = d < BOND_FACTOR * (r[:, None] + r[None, :])
    return {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(near, 1)))}


def side_of(bond_list: set[tuple[int, int]], natm: int, cut: tuple[int, int], start: int) -> list[int]:
    """The atoms (sorted, 0-based) connected to `start` once the bond `cut` is removed (if it
    is a bond at all): the part of the molecule on `start`'s side of it."""
    cut_key = tuple(sorted(cut))
    neighbours: dict[int, list[int]] = {a: [] for a in range(natm)}
    for a, b in bond_list:
        if (a, b) != cut_key:
            neighbours[a].append(b)
            neighbours[b].append(a)
    seen, stack = {start}, [start]
    while stack:
        for b in neighbours[stack.pop()]:
            if b not in seen:
                seen.add(b)
                stack.append(b)
    return sorted(seen)


def rotation_matrix(axis, angle_degree: float) -> np.ndarray:
    """The (3, 3) rotation by `angle_degree` about the unit vector `axis` (right-handed)."""
    x, y, z = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    c, s = math.cos(math.radians(angle_degree)), math.sin(math.radians(angle_degree))
    C = 1.0 - c
    return np.array([[c + x * x * C, x * y * C - z * s, x * z * C + y * s],
                     [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
                     [z * x * C - y * s, z * y * C + x * s, c + z * z * C]])


def bend_axis(coords_angstrom, i: int, j: int, k: int) -> np.ndarray:
    """The unit normal of the plane I-J-K, oriented so that a positive rotation of K about
    it (through J) opens the angle.  Collinear atoms have no plane: then the normal is the
    direction perpendicular to J->K closest to the coordinate axis least along J->K (a
    fixed choice, the same at every point of a scan)."""
    coords = np.asarray(coords_angstrom, dtype=float)
    u, v = coords[i] - coords[j], coords[k] - coords[j]
    n = np.cross(u, v)
    if np.linalg.norm(n) > 1e-8 * np.linalg.norm(u) * np.linalg.norm(v):
        return n / np.linalg.norm(n)
    w = v / np.linalg.norm(v)
    e = np.eye(3)[int(np.argmin(np.abs(w)))]
    n = np.cross(w, e)  # (any perpendicular opens a straight angle)
    return n / np.linalg.norm(n)


def rotated_coords(coords_angstrom, atoms: tuple[int, ...], moving: list[int],
                   value_degree: float) -> np.ndarray:
    """Coordinates with the `moving` atoms (0-based) rotated rigidly so that the angle
    (three `atoms` I J K) or dihedral (four, I J K L) takes `value_degree`.

    An angle: the rotation is about the normal of the plane I-J-K through J (`bend_axis`);
    a dihedral: about the J-K axis.  Every distance inside the moving fragment and inside
    the rest is unchanged; the moving fragment must contain K (an angle) or L (a dihedral)
    and neither I nor J.
    """
    coords = np.array(coords_angstrom, dtype=float).reshape(-1, 3)
    if len(atoms) == 3:
        i, j, k = atoms
        axis = bend_axis(coords, i, j, k)
        turn = value_degree - angle_degrees(coords, i, j, k)
        origin = coords[j]
    else:
        i, j, k, l = atoms
        axis = coords[k] - coords[j]
        turn = turn_between(dihedral_degrees(coords, i, j, k, l), value_degree)
        origin = coords[k]
    rot = rotation_matrix(axis, turn)
    coords[list(moving)] = (coords[list(moving)] - origin) @ rot.T + origin
    return coords
