"""Chemical element symbols, atomic numbers and Hill formulas (no PySCF import).

Only plain element symbols (case-insensitive: ``cl`` -> ``Cl``) and atomic
numbers are accepted; ghost atoms, dummy atoms and labelled atoms (``H1``)
are not.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Iterable

#: index = atomic number (index 0 is unused).
SYMBOLS: tuple[str, ...] = (
    "",
    "H", "He",
    "Li", "Be", "B", "C", "N", "O", "F", "Ne",
    "Na", "Mg", "Al", "Si", "P", "S", "Cl", "Ar",
    "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn",
    "Ga", "Ge", "As", "Se", "Br", "Kr",
    "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd",
    "In", "Sn", "Sb", "Te", "I", "Xe",
    "Cs", "Ba", "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy",
    "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt",
    "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn",
    "Fr", "Ra", "Ac", "Th", "Pa", "U", "Np", "Pu", "Am", "Cm", "Bk", "Cf",
    "Es", "Fm", "Md", "No", "Lr", "Rf", "Db", "Sg", "Bh", "Hs", "Mt", "Ds",
    "Rg", "Cn", "Nh", "Fl", "Mc", "Lv", "Ts", "Og",
)

MAX_Z = len(SYMBOLS) - 1
_BY_LOWER = {s.lower(): s for s in SYMBOLS if s}
ATOMIC_NUMBER: dict[str, int] = {s: z for z, s in enumerate(SYMBOLS) if s}


def normalise_symbol(token: str) -> str | None:
    """``"cl"`` -> ``"Cl"``, ``"8"`` -> ``"O"``; None if not an element."""
    token = token.strip()
    if token.isdigit():
        z = int(token)
        return SYMBOLS[z] if 1 <= z <= MAX_Z else None
    return _BY_LOWER.get(token.lower())


def atomic_number(symbol: str) -> int:
    return ATOMIC_NUMBER[symbol]


def unknown_element_message(token: str) -> str:
    """A one-line explanation, with a suggestion when one is plausible."""
    shown = token if len(token) <= 20 else token[:20] + "..."
    low = token.lower()
    if low in ("x", "ghost", "bq", "q") or low.startswith(("x-", "ghost", "x:")) or "@" in low:
        return f"unknown element '{shown}' (ghost and dummy atoms are not supported)"
    if token.isdigit():
        return f"unknown element '{shown}' (atomic numbers go from 1 to {MAX_Z})"
    m = re.fullmatch(r"([A-Za-z]{1,2})[0-9_.:-]+\w*", token)
    if m and normalise_symbol(m.group(1)):
        sym = normalise_symbol(m.group(1))
        return f"unknown element '{shown}' (did you mean '{sym}'? atom labels are not supported)"
    if low in ("d", "t"):
        return f"unknown element '{shown}' (isotopes are not supported; use 'H')"
    cand = difflib.get_close_matches(low, list(_BY_LOWER), n=1, cutoff=0.5)
    if cand:
        return f"unknown element '{shown}' (did you mean '{_BY_LOWER[cand[0]]}'?)"
    return f"unknown element '{shown}'"


def hill_formula(symbols: Iterable[str]) -> str:
    """Hill-order formula: C, then H, then the rest alphabetically (all alphabetical without C)."""
    counts = Counter(symbols)
    order: list[str] = []
    if "C" in counts:
        order.append("C")
        if "H" in counts:
            order.append("H")
    order += sorted(s for s in counts if s not in order)
    return "".join(s + (str(counts[s]) if counts[s] > 1 else "") for s in order)
