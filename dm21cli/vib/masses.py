"""Atomic masses for the harmonic analysis: the most abundant isotope, or the user's.

By default every atom gets the mass of its element's most abundant isotope (as
Gaussian, ORCA and Psi4 do for frequencies), from PySCF's table
``pyscf.data.elements.COMMON_ISOTOPE_MASSES`` (PySCF is already a dependency; its
values agree with NIST's atomic-mass evaluation AME2016, as qcelemental carries it,
within 2e-5 u up to Bi; `tests/test_vib.py` checks H to Kr).  Masses are in
unified atomic mass units (u, "amu", 1/12 of a carbon-12 atom).

Per-atom overrides make isotopologues free (the Hessian does not depend on the
masses): a list with one entry per atom, or a mapping from atom numbers
(counted from 1, as everywhere in the input) to an entry.  An entry is a mass in
u (a number > 0), ``None`` (keep the default), the element symbol itself, or an
isotope label: ``D`` or ``2H`` (deuterium), ``T`` or ``3H``, and the mass number
before the symbol for the isotopes in `ISOTOPE_MASSES_AMU` (``13C``, ``18O``, ...);
the most abundant isotope's own mass number (``12C``, ``1H``) is accepted for
every element.  Other isotopes: give the mass in u.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np

from dm21cli.core.elements import ATOMIC_NUMBER, normalise_symbol
from dm21cli.core.errors import InputError

#: stable (and a few long-lived) isotopes other than the most abundant one, in u:
#: NIST "Atomic Weights and Isotopic Compositions" (AME2016 masses)
ISOTOPE_MASSES_AMU: dict[str, float] = {
    "2H": 2.01410177812, "3H": 3.0160492779,
    "6Li": 6.0151228874, "10B": 10.01293695,
    "13C": 13.00335483507, "14C": 14.0032419884,
    "15N": 15.00010889888,
    "17O": 16.9991317565, "18O": 17.99915961286,
    "29Si": 28.9764946649, "30Si": 29.973770136,
    "33S": 32.9714589098, "34S": 33.967867004,
    "37Cl": 36.965902602, "81Br": 80.9162897,
}
#: the usual names of hydrogen's heavy isotopes
ISOTOPE_ALIASES = {"D": "2H", "T": "3H"}

_LABEL = re.compile(r"([0-9]+)([A-Za-z]{1,2})")


def most_abundant_mass_amu(symbol: str) -> float:
    """Mass (u) of the most abundant isotope of element `symbol` ("O" -> 15.994915)."""
    from pyscf.data.elements import COMMON_ISOTOPE_MASSES

    return float(COMMON_ISOTOPE_MASSES[ATOMIC_NUMBER[symbol]])


def default_masses_amu(symbols: Sequence[str]) -> np.ndarray:
    """(N,) most-abundant-isotope masses in u for element symbols (case as in the input)."""
    out = []
    for symbol in symbols:
        element = normalise_symbol(str(symbol))
        if element is None:
            raise InputError(f"unknown element {symbol!r}", field="symbols")
        out.append(most_abundant_mass_amu(element))
    return np.array(out, dtype=float)


def isotope_mass_amu(label: str, element: str) -> float | None:
    """The mass in u that the label `label` means for an atom of `element`; None if the
    label names no isotope known here.  Raises ValueError if it names another element's."""
    text = label.strip()
    text = ISOTOPE_ALIASES.get(text, ISOTOPE_ALIASES.get(text.upper(), text))
    if normalise_symbol(text) is not None and not text.isdigit():
        other = normalise_symbol(text)
        if other != element:
            raise ValueError(f"{label!r} is {other}, but the atom is {element}")
        return most_abundant_mass_amu(element)
    match = _LABEL.fullmatch(text)
    if match is None:
        return None
    number, symbol = int(match.group(1)), normalise_symbol(match.group(2))
    if symbol is None:
        return None
    if symbol != element:
        raise ValueError(f"{label!r} is an isotope of {symbol}, but the atom is {element}")
    key = f"{number}{symbol}"
    if key in ISOTOPE_MASSES_AMU:
        return ISOTOPE_MASSES_AMU[key]
    default = most_abundant_mass_amu(element)
    return default if round(default) == number else None


def _entry_mass(entry, element: str, where: str, file, line) -> float | None:
    """The mass in u of one override entry (None: keep the default)."""
    if entry is None:
        return None
    if isinstance(entry, str):
        try:
            mass = isotope_mass_amu(entry, element)
        except ValueError as exc:
            raise InputError(str(exc), file=file, line=line, field=where) from None
        if mass is None:
            known = ", ".join(["D", "T"] + sorted(ISOTOPE_MASSES_AMU, key=_isotope_order))
            raise InputError(f"unknown isotope {entry!r} (known labels: {known}; or give the "
                             f"mass in u)", file=file, line=line, field=where)
        return mass
    if isinstance(entry, bool) or not isinstance(entry, (int, float, np.floating, np.integer)):
        raise InputError(f"a mass must be a number in u or an isotope label, not "
                         f"{type(entry).__name__}", file=file, line=line, field=where)
    mass = float(entry)
    if not math.isfinite(mass) or mass <= 0:
        raise InputError(f"a mass must be a positive number (u), not {entry!r}",
                         file=file, line=line, field=where)
    return mass


def _isotope_order(label: str) -> tuple[int, int]:
    match = _LABEL.fullmatch(label)
    return ATOMIC_NUMBER[match.group(2)], int(match.group(1))


def atomic_masses(symbols: Sequence[str], overrides=None, *, field: str = "masses",
                  file: str | None = None, line: int | None = None) -> np.ndarray:
    """(N,) atomic masses in u: the most abundant isotopes, with `overrides` applied.

    overrides: None; a list of N entries (one per atom, in the molecule's order); or a
    mapping {atom number (from 1): entry}.  An entry is a mass in u (> 0), None (the
    default), or an isotope label (see the module docstring).  A wrong length, an atom
    number that does not exist, a mass <= 0 and an unknown or mismatched label raise
    InputError naming `field` (and `file`/`line` when given), e.g. ``masses[2]``.
    """
    elements = []
    for symbol in symbols:
        element = normalise_symbol(str(symbol))
        if element is None:
            raise InputError(f"unknown element {symbol!r}", file=file, line=line, field=field)
        elements.append(element)
    masses = default_masses_amu(elements)
    n = len(elements)
    if overrides is None:
        return masses
    if isinstance(overrides, Mapping):
        items = []
        for key, entry in overrides.items():
            if isinstance(key, str) and key.strip().isdigit():
                key = int(key)
            if isinstance(key, bool) or not isinstance(key, (int, np.integer)) \
                    or not 1 <= int(key) <= n:
                raise InputError(f"atom {key!r} does not exist (atoms are numbered from 1; the "
                                 f"molecule has {n} atoms)", file=file, line=line, field=field)
            items.append((int(key) - 1, entry, f"{field}[{int(key)}]"))
    elif isinstance(overrides, Sequence) and not isinstance(overrides, str):
        if len(overrides) != n:
            given = f"{len(overrides)} mass{'es' if len(overrides) != 1 else ''}"
            raise InputError(f"{given} given for {n} atoms (give one per atom, or a mapping "
                             f"from atom numbers)", file=file, line=line, field=field)
        items = [(i, entry, f"{field}[{i + 1}]") for i, entry in enumerate(overrides)]
    else:
        raise InputError(f"masses must be a list (one per atom) or a mapping from atom numbers, "
                         f"not {type(overrides).__name__}", file=file, line=line, field=field)
    for index, entry, where in items:
        mass = _entry_mass(entry, elements[index], where, file, line)
        if mass is not None:
            masses[index] = mass
    return masses
