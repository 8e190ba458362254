"""A small Gaussian cube reader shared by the tests (independent of the writer)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np


class Cube(NamedTuple):
    comment: str
    origin: np.ndarray  # (3,) bohr
    axes: np.ndarray  # (3, 3) step vectors, bohr
    shape: tuple  # points along each axis
    atoms: list  # one list of strings per atom line
    values: np.ndarray  # shape `shape`


def read_cube(path: Path) -> Cube:
    """Parse a cube file: 2 comment lines, natoms + origin, 3 axis lines, atoms, values."""
    lines = Path(path).read_text().splitlines()
    head = lines[2].split()
    natm = int(head[0])
    assert natm > 0, f"{path}: natoms {natm} (negative = MO-index header, not expected)"
    origin = np.array([float(x) for x in head[1:4]])
    shape, axes = [], []
    for line in lines[3:6]:
        parts = line.split()
        shape.append(int(parts[0]))
        axes.append([float(x) for x in parts[1:4]])
    atoms = [line.split() for line in lines[6:6 + natm]]
    values = np.array(" ".join(lines[6 + natm:]).split(), dtype=float)
    assert values.size == np.prod(shape), f"{path}: {values.size} values for a {shape} grid"
    return Cube(lines[0], origin, np.array(axes), tuple(shape), atoms, values.reshape(shape))
