"""The ``scan:`` section of a job file and the grammar of its values (distances, angles,
dihedrals, electron numbers, fractions of an electron)."""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Annotated, Any, Callable

from pydantic import BeforeValidator, Field, model_validator

from dm21cli.io.inputs.fields import (
    SectionModel,
    YamlBool,
    as_list,
    check_functional,
    describe_value,
    int_range,
    or_none,
    to_int,
)

#: more points than this is almost certainly a typo in the range.
MAX_POINTS = 200

#: two values closer than this (Angstrom, degrees, electrons, fractions) would share a
#: directory name.
MIN_SPACING = 1e-3


def normalise_dihedral(value_degree: float) -> float:
    """A dihedral in [0, 360), the range of a dihedral scan's values (-120 -> 240, 360 -> 0;
    no sign, so that point names sort by value), rounded to 1e-9 degrees: 359.9999999999
    is 0, and no value is -0.0."""
    value = round(float(value_degree) % 360.0, 9) + 0.0
    return 0.0 if value >= 360.0 else value


def _number(token: Any, what: str) -> float:
    from dm21cli.io.inputs.fields import to_float

    try:
        return to_float(token.strip() if isinstance(token, str) else token)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


@dataclasses.dataclass(frozen=True)
class _Grammar:
    """What a list of scan values is called, and the range it must lie in."""

    plural: str  # "distances"
    noun: str  # "distance"
    example: str  # "2.0,2.5,3"
    unit: str  # " Angstrom"
    bound: Callable[[float], str | None]  # message for a value out of range, else None
    #: the canonical form of a value (dihedrals: in [0, 360)); values that become equal
    #: are one point (0 and 360, -180 and 180)
    normalise: Callable[[float], float] | None = None


DISTANCES = _Grammar("distances", "distance", "2.0,2.5,3", " Angstrom",
                     lambda x: None if x > 0 else f"distances must be positive (Angstrom), got {x:g}")
ANGLES = _Grammar("angles", "angle", "90,104.5,120", " degrees",
                  lambda x: None if 0 < x < 180 else f"angles must lie between 0 and 180 degrees "
                                                     f"(both excluded), got {x:.10g}")
DIHEDRALS = _Grammar("dihedrals", "dihedral", "0,60,120,180", " degrees",
                     lambda x: None if -180 <= x <= 360 else f"dihedrals must lie between -180 and "
                                                             f"360 degrees, got {x:.10g}",
                     normalise_dihedral)
ELECTRONS = _Grammar("electron numbers", "electron number", "5,5.5,6", " electrons",
                     lambda x: None if x >= 0 else f"electron numbers must be at least 0, got {x:g}")
FRACTIONS = _Grammar("fractions", "fraction", "0,0.25,0.5", "",
                     lambda x: None if 0 <= x <= 1 else f"the fraction f of an electron moved from "
                                                          f"alpha to beta must be from 0 to 1, got {x:g}")


def _range_values(value: str, g: _Grammar) -> list[float]:
    """The values of a range ``'start:stop:step'`` (stop included, unsorted, unrounded).
    Raises ValueError for anything but three numbers, a zero step, a step away from the
    stop, or more than `MAX_POINTS` points."""
    parts = value.split(":")
    if len(parts) != 3:
        raise ValueError(f"expected a range 'start:stop:step' (three numbers), got {value.strip()!r}")
    start, stop, step = (_number(p, n) for p, n in zip(parts, ("start", "stop", "step")))
    if step == 0:
        raise ValueError(f"the step of {value.strip()!r} must not be zero")
    if (stop - start) * step < 0:
        raise ValueError(f"the step {step:g} of {value.strip()!r} goes away from the stop value "
                         f"(use a {'negative' if step > 0 else 'positive'} step)")
    span = (stop - start) / step  # inf when the range overflows a float
    if not math.isfinite(span) or span + 1 > MAX_POINTS + 1e-9:
        count = (f"{int(span + 1e-9) + 1} points" if span < 1e15 else
                 f"about {span:.3g} points" if math.isfinite(span) else "more points than a float counts")
        raise ValueError(f"{value.strip()!r} gives {count}; at most "
                         f"{MAX_POINTS} are allowed")
    n = int(math.floor(span + 1e-9)) + 1
    return [start + k * step for k in range(n)]


def _comma_values(value: str, g: _Grammar) -> list[float]:
    """The values of a comma-separated string ``'2,2.5,3'``, in its order.  Raises ValueError
    for an empty string or item, or an item that is no number."""
    tokens = [t for t in value.split(",")]
    if not value.strip() or any(not t.strip() for t in tokens):
        raise ValueError(f"expected a comma-separated list of {g.plural}, got {value.strip()!r}")
    return [_number(t, f"{g.noun} {t.strip()!r}") for t in tokens]


def _raw_values(value: Any, g: _Grammar) -> list[float]:
    """The values as given (unsorted, unrounded): of a range (`_range_values`), a
    comma-separated string (`_comma_values`), a number or a list.  Raises ValueError for any other value, an
    empty item or list, or an item that is no number."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"expected {g.plural} as 'start:stop:step', '{g.example}' or a list of numbers")
    if isinstance(value, str) and ":" in value:
        return _range_values(value, g)
    if isinstance(value, str):
        return _comma_values(value, g)
    if isinstance(value, (int, float)):
        return [_number(value, g.noun)]
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"the list of {g.plural} is empty")
        return [_number(v, f"{g.noun} {k + 1}") for k, v in enumerate(value)]
    raise ValueError(f"expected {g.plural} as 'start:stop:step', '{g.example}' or a list of numbers")


def _sorted_in_range(raw: list[float], g: _Grammar) -> list[float]:
    """`raw` rounded to 1e-9 and sorted ascending (no -0.0).  Raises ValueError for no values,
    more than `MAX_POINTS`, a value outside the grammar's range, or two values closer than
    `MIN_SPACING`."""
    if not raw:
        raise ValueError(f"no {g.plural}")
    if len(raw) > MAX_POINTS:
        raise ValueError(f"{len(raw)} {g.plural}; at most {MAX_POINTS} are allowed")
    out = sorted(round(x, 9) + 0.0 for x in raw)  # (+ 0.0: no -0.0)
    for x in out:
        problem = g.bound(x)
        if problem:
            raise ValueError(problem)
    for a, b in zip(out, out[1:]):
        if b - a < MIN_SPACING:
            raise ValueError(f"{g.plural} {a:g} and {b:g} are closer than {MIN_SPACING:g}{g.unit}")
    return out


def _normalised(given: list[float], g: _Grammar) -> list[float]:
    """The sorted values `given` in the grammar's canonical form (dihedrals in [0, 360)),
    values that become equal kept once.  Raises ValueError for two canonical values closer
    than `MIN_SPACING`, also around the circle (360 degrees on)."""
    out = sorted({g.normalise(x) for x in given})
    for a, b in itertools.pairwise(out):
        if b - a < MIN_SPACING:
            raise ValueError(f"{g.plural} {a:.10g} and {b:.10g} (in 0 to 360; given as "
                             f"{', '.join(f'{x:.10g}' for x in given if g.normalise(x) in (a, b))}) "
                             f"are closer than {MIN_SPACING:g}{g.unit}")
    if len(out) > 1 and out[0] + 360 - out[-1] < MIN_SPACING:  # (around the circle)
        raise ValueError(f"{g.plural} {out[-1]:.10g} and {out[0]:.10g} are closer than "
                         f"{MIN_SPACING:g}{g.unit} (360 degrees on, the same dihedral)")
    return out


def parse_values(value: Any, grammar: _Grammar) -> list[float]:
    """Scan values from ``'start:stop:step'`` (stop included), ``'2,2.5,3'``, a number or a list.

    Returns them sorted ascending (dihedrals: normalised to [0, 360) first, values that
    name the same dihedral kept once).  Raises ValueError (one line) for a zero
    or wrong-sign step, values outside the grammar's range, no points, more
    than `MAX_POINTS`, or two values closer than `MIN_SPACING` (0.001).
    """
    out = _sorted_in_range(_raw_values(value, grammar), grammar)
    if grammar.normalise is not None:
        out = _normalised(out, grammar)
    return out


def electron_points(values: list[float]) -> int:
    """How many points an electron-number scan of `values` has: its fractional values and
    the integers from the one at or below the smallest to the one at or above the largest
    (counted, never listed: 0:1e308:1e307 is eleven values but 10^308 points)."""
    lo, hi = math.floor(min(values) + 1e-9), math.ceil(max(values) - 1e-9)
    fractions = {round(v, 9) for v in values if abs(v - round(v)) > 1e-9}
    return (hi - lo + 1) + len(fractions)


def electron_points_problem(values: list[float]) -> str | None:
    """The message when an electron-number scan of `values` has more than MAX_POINTS
    points, integers included (`electron_points`), else None."""
    count = electron_points(values)
    if count <= MAX_POINTS:
        return None
    return (f"electron numbers from {min(values):g} to {max(values):g} with the integers "
            f"between them give {count:.3g} points; at most {MAX_POINTS} are allowed")


def parse_distances(value: Any) -> list[float]:
    """Distances in Angstrom (`parse_values` with the distances' grammar: all > 0)."""
    return parse_values(value, DISTANCES)


def _check_distances(value: Any) -> list[float] | None:
    if value is None:
        return None
    from dm21cli.io.inputs.scan_model import parse_distances

    return parse_distances(value)


def _check_angles(value: Any) -> list[float] | None:
    return None if value is None else parse_values(value, ANGLES)


def _check_dihedrals(value: Any) -> list[float] | None:
    return None if value is None else parse_values(value, DIHEDRALS)


def _check_electrons(value: Any) -> list[float] | None:
    return None if value is None else parse_values(value, ELECTRONS)


def _check_fractions(value: Any) -> list[float] | None:
    return None if value is None else parse_values(value, FRACTIONS)


def _check_multiplicities(value: Any) -> dict[int, int] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        raise ValueError(f"expected a mapping electron number: multiplicity (e.g. {{5: 2, 6: 3, 7: 4}}), "
                         f"got {describe_value(value)}")
    out: dict[int, int] = {}
    for key, mult in value.items():
        try:
            n = to_int(key)
        except ValueError:
            raise ValueError(f"electron numbers (the keys) are integers, got {describe_value(key)}") from None
        if n < 0:
            raise ValueError(f"electron numbers (the keys) are at least 0, got {n}")
        m = to_int(mult)
        if m < 1:
            raise ValueError(f"the multiplicity of {n} electrons must be at least 1, got {m}")
        out[n] = m
    return out


def _check_atom_index(value: Any) -> int:
    n = to_int(value)
    if n < 1:
        raise ValueError(f"atom numbers start at 1, got {n}")
    return n


def _check_atoms(value: Any) -> Any:
    if isinstance(value, list) and not 2 <= len(value) <= 4:
        raise ValueError(f"expected two atom numbers (1-based; a distance), three (an angle) or "
                         f"four (a dihedral), got {len(value)}")
    return value


def _check_functional_list(value: Any) -> Any:
    value = as_list(value)
    if not value:
        raise ValueError("the list of functionals is empty")
    return value


def _check_fragment_numbers(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(f"expected a list of two values [fixed, moving], got {describe_value(value)}")
    return value


#: the kinds of scan: the key of the ``scan:`` section that gives the values, per kind
KINDS = {"distance": "distances", "angle": "angles", "dihedral": "dihedrals", "electrons": "electrons",
         "fractional_spin": "fractional_spin"}

#: the kinds of scan that move atoms, and how many atoms (``scan.atoms``) their coordinate has
ATOMS_OF = {"distance": 2, "angle": 3, "dihedral": 4}


class ScanSettings(SectionModel):
    """Section ``scan``: a distance, angle, dihedral, electron-number or fractional-spin scan
    (``dm21 scan``); ignored by ``dm21 run``."""

    distances: Annotated[list[float] | None, BeforeValidator(_check_distances)] = Field(
        None, description="Distances [Angstrom]: 'start:stop:step' (stop included), a comma "
                          "list '2.0,2.5,3' or a YAML list; null = give --distance.")
    angles: Annotated[list[float] | None, BeforeValidator(_check_angles)] = Field(
        None, description="Angles I-J-K [degrees] of the three scan.atoms (J the vertex), "
                          "between 0 and 180 excluded: 'start:stop:step' (stop included), a comma "
                          "list or a YAML list; null = give --angle I J K VALUES.")
    dihedrals: Annotated[list[float] | None, BeforeValidator(_check_dihedrals)] = Field(
        None, description="Dihedrals I-J-K-L [degrees] of the four scan.atoms (IUPAC's sign), "
                          "-180 to 360, kept as their value in [0, 360) (-120 is 240; 0 and 360 "
                          "are one point); null = give --dihedral I J K L VALUES.")
    atoms: Annotated[list[Annotated[int, BeforeValidator(_check_atom_index)]],
                     BeforeValidator(_check_atoms)] = Field(
        default_factory=lambda: [1, 2],
        description="The atoms (1-based) of the scanned coordinate: the pair of a distance "
                    "(default [1, 2]), I J K of an angle, I J K L of a dihedral (no default).")
    fragment: Annotated[list[Annotated[int, BeforeValidator(_check_atom_index)]] | None,
                        BeforeValidator(or_none(as_list))] = Field(
        None, description="Atoms (1-based) moved rigidly: a distance along the pair's axis (with "
                          "the second atom, not the first; null = the second atom alone); an "
                          "angle I-J-K rotated about J in the plane (with K, not I or J), a "
                          "dihedral I-J-K-L about the J-K axis (with L, not I or J); null = the "
                          "atoms bonded to K once the J-K bond is cut.")
    functionals: Annotated[list[Annotated[str, BeforeValidator(check_functional)]] | None,
                           BeforeValidator(or_none(_check_functional_list))] = Field(
        None, description="Functionals computing the same curve; null = the job's functional.")
    broken_symmetry: YamlBool = Field(
        False, description="Distance scans: unrestricted singlet from a broken-symmetry guess "
                           "(HOMO and LUMO mixed by +45 degrees for alpha, -45 for beta) beyond "
                           "1.5x the equilibrium estimate.")
    reference_atoms: YamlBool = Field(
        False, description="Distance scans: also compute the separated fragments (the "
                           "dissociation limit).")
    relax: YamlBool = Field(
        False, description="Relaxed scan: at each value optimise everything else (dm21 opt, the "
                           "scanned distance, angle or dihedral frozen); needs three atoms or more.")
    reference_charges: Annotated[list[Annotated[int, int_range()]] | None,
                                 BeforeValidator(_check_fragment_numbers)] = Field(
        None, description="[fixed, moving] fragment charges; null = moving fragment neutral, "
                          "the fixed fragment carries the molecule's charge.")
    reference_multiplicities: Annotated[list[Annotated[int, int_range(lo=1)]] | None,
                                        BeforeValidator(_check_fragment_numbers)] = Field(
        None, description="[fixed, moving] fragment multiplicities; null = a single atom's "
                          "ground state (Hund's rule), else the lowest fitting the fragment's "
                          "electron count (1 or 2).")
    electrons: Annotated[list[float] | None, BeforeValidator(_check_electrons)] = Field(
        None, description="Electron numbers N (fractional charge): 'start:stop:step' (stop "
                          "included), a comma list or a YAML list; the integers around them are "
                          "added.")
    fractional_spin: Annotated[list[float] | None, BeforeValidator(_check_fractions)] = Field(
        None, description="Fractions f (0 to 1) of one electron moved from alpha to beta "
                          "(fractional spin); f = 0 is added.")
    multiplicities: Annotated[dict[int, int] | None, BeforeValidator(_check_multiplicities)] = Field(
        None, description="Electron-number scans: multiplicity of integer electron numbers "
                          "{N: multiplicity}; null = the job's at its own N, else the ground state "
                          "of the atom or ion with N electrons (Hund's rule; one atom) or the "
                          "lowest (molecules).")

    @model_validator(mode="after")
    def _one_kind(self) -> ScanSettings:
        given = [key for key in KINDS.values() if getattr(self, key) is not None]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(given)} exclude each other: one kind of scan per job "
                             f"({', '.join(KINDS.values())})")
        return self

    @property
    def kind(self) -> str | None:
        """'distance', 'angle', 'dihedral', 'electrons', 'fractional_spin', or None when no
        values are given."""
        for kind, key in KINDS.items():
            if getattr(self, key) is not None:
                return kind
        return None
