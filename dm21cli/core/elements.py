"""Chemical element symbols, atomic numbers, Hill formulas and atomic ground states.

Nothing of PySCF is imported but its table of ground-state configurations
(`ground_state_configuration`, on first use).

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


#: orbital letters by angular momentum l
_L_LETTERS = "spdf"


def _subshells(counts: list[int]) -> list[tuple[int, int, int]]:
    """(n, l, electrons) of every occupied subshell of a configuration given as electrons
    per l (PySCF's ``[s, p, d, f]``): the inner subshells of each l are full, the
    outermost holds the rest (1s2 2s2 2p4 for O's ``[4, 4, 0, 0]``)."""
    shells = []
    for l, count in enumerate(counts):
        capacity = 2 * (2 * l + 1)
        n = l + 1
        while count > 0:
            shells.append((n, l, min(count, capacity)))
            count -= capacity
            n += 1
    return shells


def ground_state_configuration(z: int, n_electrons: int) -> list[tuple[int, int, int]]:
    """(n, l, electrons) per occupied subshell of the atom or atomic ion of element `z` with
    `n_electrons` electrons, the way the ground-state multiplicity is read from it.

    The neutral atom and anions: PySCF's ground-state configuration of the neutral
    atom with as many electrons (C- like N: 2p3; F- like Ne).  Cations: the neutral
    atom's configuration with the outermost electrons removed first (highest n, then
    highest l: Fe 3d6 4s2 -> Fe+ 3d6 4s1 -> Fe2+ 3d6; O+ 2p3).  Raises ValueError for
    an element or electron count PySCF has no configuration for (beyond 118).
    """
    from pyscf.data.elements import CONFIGURATION

    if not 1 <= z < len(CONFIGURATION):
        raise ValueError(f"no ground-state configuration for element {z}")
    if n_electrons <= 0:
        return []
    if n_electrons >= z:
        if n_electrons >= len(CONFIGURATION):
            raise ValueError(f"no ground-state configuration for {n_electrons} electrons "
                             f"(at most {len(CONFIGURATION) - 1})")
        return sorted(_subshells(list(CONFIGURATION[n_electrons])))
    shells = _subshells(list(CONFIGURATION[z]))
    remove = z - n_electrons
    out = []
    for n, l, count in sorted(shells, key=lambda s: (s[0], s[1]), reverse=True):
        taken = min(count, remove)
        remove -= taken
        if count > taken:
            out.append((n, l, count - taken))
    return sorted(out)


def configuration_text(shells: list[tuple[int, int, int]]) -> str:
    """The open subshells of a configuration, e.g. ``2p4``, ``3d6 4s1``; ``closed shells``,
    ``no electrons``."""
    if not shells:
        return "no electrons"
    open_shells = [f"{n}{_L_LETTERS[l]}{count}" for n, l, count in shells
                   if count < 2 * (2 * l + 1)]
    return " ".join(open_shells) if open_shells else "closed shells"


def ground_state_multiplicity(z: int, n_electrons: int) -> int:
    """Hund's-rule multiplicity 2S + 1 of the atom or atomic ion of element `z` with
    `n_electrons` electrons, on `ground_state_configuration`: each open subshell with r
    of its 2(2l + 1) places filled adds min(r, 2(2l + 1) - r) unpaired electrons.

    O: 3 (2p4); O+: 4 (2p3); O-: 2 (2p5); C+: 2; C-: 4; Fe2+: 5 (3d6); no electrons: 1.
    Right for every neutral atom in PySCF's table and for main-group ions; for some
    transition-metal and f-element ions the true ground state has another configuration
    (Co+ is 3d8, triplet, where this gives 3d7 4s1, quintet): give their multiplicity.
    """
    unpaired = 0
    for _, l, count in ground_state_configuration(z, n_electrons):
        capacity = 2 * (2 * l + 1)
        unpaired += min(count, capacity - count)
    return unpaired + 1
