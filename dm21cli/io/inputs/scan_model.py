"""The ``scan:`` section of a job file and the grammar of its distances."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from dm21cli.io.inputs.fields import (
    _as_list,
    _Bool,
    _check_functional,
    _describe,
    _int_range,
    _optional,
    _Section,
    _to_int,
)

#: more points than this is almost certainly a typo in the range.
MAX_POINTS = 200

#: two distances closer than this (Angstrom) would share a directory name.
MIN_SPACING_ANGSTROM = 1e-3


def _number(token: Any, what: str) -> float:
    from dm21cli.io.inputs.fields import _to_float

    try:
        return _to_float(token.strip() if isinstance(token, str) else token)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


def parse_distances(value: Any) -> list[float]:
    """Distances in Angstrom from ``'start:stop:step'`` (stop included), ``'2,2.5,3'``, a number or a list.

    Returns them sorted ascending.  Raises ValueError (one line) for a zero
    or wrong-sign step, non-positive distances, no points, more than
    `MAX_POINTS`, or two distances closer than 0.001 Angstrom.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError("expected distances as 'start:stop:step', '2.0,2.5,3' or a list of numbers")
    if isinstance(value, str) and ":" in value:
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
        raw = [start + k * step for k in range(n)]
    elif isinstance(value, str):
        tokens = [t for t in value.split(",")]
        if not value.strip() or any(not t.strip() for t in tokens):
            raise ValueError(f"expected a comma-separated list of distances, got {value.strip()!r}")
        raw = [_number(t, f"distance {t.strip()!r}") for t in tokens]
    elif isinstance(value, (int, float)):
        raw = [_number(value, "distance")]
    elif isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("the list of distances is empty")
        raw = [_number(v, f"distance {k + 1}") for k, v in enumerate(value)]
    else:
        raise ValueError("expected distances as 'start:stop:step', '2.0,2.5,3' or a list of numbers")
    if not raw:
        raise ValueError("no distances")
    if len(raw) > MAX_POINTS:
        raise ValueError(f"{len(raw)} distances; at most {MAX_POINTS} are allowed")
    out = sorted(round(x, 9) for x in raw)
    for x in out:
        if x <= 0:
            raise ValueError(f"distances must be positive (Angstrom), got {x:g}")
    for a, b in zip(out, out[1:]):
        if b - a < MIN_SPACING_ANGSTROM:
            raise ValueError(f"distances {a:g} and {b:g} are closer than {MIN_SPACING_ANGSTROM:g} Angstrom")
    return out


def _check_distances(value: Any) -> list[float] | None:
    if value is None:
        return None
    from dm21cli.io.inputs.scan_model import parse_distances

    return parse_distances(value)


def _check_atom_index(value: Any) -> int:
    n = _to_int(value)
    if n < 1:
        raise ValueError(f"atom numbers start at 1, got {n}")
    return n


def _check_pair(value: Any) -> Any:
    if isinstance(value, list) and len(value) != 2:
        raise ValueError(f"expected two atom numbers (1-based), got {len(value)}")
    return value


def _check_functional_list(value: Any) -> Any:
    value = _as_list(value)
    if not value:
        raise ValueError("the list of functionals is empty")
    return value


def _check_fragment_numbers(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(f"expected a list of two values [fixed, moving], got {_describe(value)}")
    return value


class ScanSettings(_Section):
    """Section ``scan``: a distance scan (``dm21 scan``); ignored by ``dm21 run``."""

    distances: Annotated[list[float] | None, BeforeValidator(_check_distances)] = Field(
        None, description="Distances [Angstrom]: 'start:stop:step' (stop included), a comma "
                          "list '2.0,2.5,3' or a YAML list; null = give --distance.")
    atoms: Annotated[list[Annotated[int, BeforeValidator(_check_atom_index)]],
                     BeforeValidator(_check_pair)] = Field(
        default_factory=lambda: [1, 2],
        description="The pair of atoms (1-based) whose distance is scanned.")
    fragment: Annotated[list[Annotated[int, BeforeValidator(_check_atom_index)]] | None,
                        BeforeValidator(_optional(_as_list))] = Field(
        None, description="Atoms (1-based) moved rigidly along the pair's axis; must contain the "
                          "second atom of the pair, not the first; null = the second atom alone.")
    functionals: Annotated[list[Annotated[str, BeforeValidator(_check_functional)]] | None,
                           BeforeValidator(_optional(_check_functional_list))] = Field(
        None, description="Functionals computing the same curve; null = the job's functional.")
    broken_symmetry: _Bool = Field(
        False, description="Unrestricted singlet with a spin-flipped atomic guess beyond 1.5x "
                           "the equilibrium estimate.")
    reference_atoms: _Bool = Field(
        False, description="Also compute the separated fragments (the dissociation limit).")
    reference_charges: Annotated[list[Annotated[int, _int_range()]] | None,
                                 BeforeValidator(_check_fragment_numbers)] = Field(
        None, description="[fixed, moving] fragment charges; null = moving fragment neutral, "
                          "the fixed fragment carries the molecule's charge.")
    reference_multiplicities: Annotated[list[Annotated[int, _int_range(lo=1)]] | None,
                                        BeforeValidator(_check_fragment_numbers)] = Field(
        None, description="[fixed, moving] fragment multiplicities; null = the lowest fitting "
                          "each fragment's electron count (1 or 2).")
