"""Atom lines and XYZ files: ``El x y z`` (optionally after a count and a comment line)."""

from __future__ import annotations

import math
import re
from typing import NamedTuple

from dm21cli.core import elements
from dm21cli.core.errors import InputError
from dm21cli.core.units import BOHR_ANGSTROM
from dm21cli.io.inputs.fields import show_value

#: coordinates larger than this (Angstrom) are an input error (typo guard).
MAX_COORDINATE_ANGSTROM = 1.0e5


class Atom(NamedTuple):
    """One atom as written in the input (position in the molecule's input units)."""

    symbol: str
    position: tuple[float, float, float]
    line: int | None  # 1-based line in `Molecule.source_file` (or in the YAML file)


def parse_xyz(text: str, *, file: str | None = None, field: str | None = None,
              first_line: int | None = 1, step: int = 1, units: str = "angstrom",
              empty_line: int | None = None) -> list[Atom]:
    """Parse atom lines ``El x y z``, optionally preceded by an XYZ count and comment line.

    Line ``i`` (0-based) of ``text`` is reported as ``first_line + step * i``
    in ``file`` (no line if `first_line` is None).  Raises `InputError` for
    anything malformed.
    """
    scale = 1.0 if units == "angstrom" else BOHR_ANGSTROM
    lines = text.splitlines()

    def line_of(i: int) -> int | None:
        return None if first_line is None else first_line + step * i

    def where(i: int | None) -> dict:
        line = empty_line if i is None else line_of(i)
        return {"file": file, "line": line, "field": field}

    body = [i for i, ln in enumerate(lines) if ln.strip()]
    if not body:
        raise InputError("the molecule has no atoms", **where(None))
    start = body[0]
    head = lines[start].split()
    atom_rows: list[int]
    if len(head) == 1 and re.fullmatch(r"[+-]?[0-9]+", head[0]):
        count = int(head[0])
        if count < 0:
            raise InputError(f"negative atom count {count} in the XYZ count line", **where(start))
        if count == 0:
            raise InputError("the molecule has no atoms (the XYZ count line says 0)", **where(start))
        rest = [i for i in range(start + 2, len(lines)) if lines[i].strip()]
        if len(rest) < count:
            hint = ""
            if start + 1 < len(lines) and len(lines[start + 1].split()) == 4:
                hint = " (the line after the count line is a comment line, not an atom)"
            raise InputError(f"the XYZ count line announces {count} atoms but {len(rest)} atom lines "
                             f"follow{hint}", **where(start))
        if len(rest) > count:
            raise InputError(f"unexpected line after the {count} atoms announced by the count line "
                             f"(multi-frame XYZ files are not supported)", **where(rest[count]))
        atom_rows = rest
    else:
        atom_rows = [i for i in body if not lines[i].lstrip().startswith("#")]
        if not atom_rows:
            raise InputError("the molecule has no atoms", **where(None))

    atoms: list[Atom] = []
    for n, i in enumerate(atom_rows, start=1):
        tokens = lines[i].replace(",", " ").split()
        if len(tokens) != 4:
            raise InputError(f"atom {n}: expected 'Element x y z', got {len(tokens)} fields: "
                             f"{show_value(lines[i].strip())}", **where(i))
        symbol = elements.normalise_symbol(tokens[0])
        if symbol is None:
            raise InputError(f"atom {n}: {elements.unknown_element_message(tokens[0])}", **where(i))
        xyz = []
        for axis, token in zip("xyz", tokens[1:]):
            try:
                value = float(token.replace("d", "e").replace("D", "E"))
            except ValueError:
                raise InputError(f"atom {n} ({symbol}): {axis} coordinate {show_value(token)} is not a number",
                                 **where(i)) from None
            if not math.isfinite(value):
                raise InputError(f"atom {n} ({symbol}): {axis} coordinate {show_value(token)} is not a finite number",
                                 **where(i))
            if abs(value * scale) > MAX_COORDINATE_ANGSTROM:
                limit = (f"{MAX_COORDINATE_ANGSTROM:g} Angstrom" if units == "angstrom" else
                         f"{MAX_COORDINATE_ANGSTROM / BOHR_ANGSTROM:.6g} bohr = "
                         f"{MAX_COORDINATE_ANGSTROM:g} Angstrom")
                raise InputError(f"atom {n} ({symbol}): {axis} coordinate {show_value(token)} is too large "
                                 f"(limit {limit})", **where(i))
            xyz.append(value)
        atoms.append(Atom(symbol, (xyz[0], xyz[1], xyz[2]), line_of(i)))
    return atoms
