"""Fractional charge and fractional spin: the states of the points, and the errors measured.

Electron-number scans (``scan.electrons``, ``--electrons``).  N varies at
fixed geometry.  Each integer N has a state (a multiplicity: `integer_states`);
between two integers, N = N0 + x, x electrons occupy the lowest empty orbital
of the spin that the N0 + 1 state has one more electron of
(`electron_point`).  That state must differ from the N0 state by exactly one
electron of one spin.  A point's molecule carries the charge and
multiplicity of the integer state at or just above N, and its fixed
occupations (``scf.occupations``) remove 1 - x from that spin.  Integer
points are the ordinary SCF states (no fixed occupations).  The exact energy
is the straight line between the integer-N energies
(Perdew-Parr-Levy-Balduz); the deviation from it measures the
delocalisation error.

Fractional-spin scans (``scan.fractional_spin``, ``--fractional-spin``).  N
and the molecule stay fixed (n_alpha > n_beta).  A fraction f of one electron
moves from alpha to beta, taken equally from the n_u = n_alpha - n_beta
highest occupied alpha orbitals and put equally into the n_u lowest empty
beta orbitals (`spin_point`): alpha occupations 1 - f/n_u, beta f/n_u.  For
one unpaired electron (the H atom) f = 0.5 is half an electron of each spin.
For n_u unpaired electrons these are the spin densities of the ensemble
(1 - f) |S, M=S> + f |S, M=S-1> of one spin multiplet (the M = S - 1 state,
S_- |S, S>, has each singly occupied orbital 1 - 1/n_u alpha and 1/n_u beta),
so the exact energy is constant in f: the deviation from the f = 0 energy
measures the static-correlation error (Cohen, Mori-Sanchez, Yang,
J. Chem. Phys. 129, 121104 (2008)).

`deviations` and `curves` turn the points' energies into those errors.
"""

from __future__ import annotations

import math

#: electron numbers (and fractions) are rounded to this many decimals
DECIMALS = 9


def spins(n_electrons: int, multiplicity: int, core: int = 0) -> tuple[int, int]:
    """(alpha, beta) electrons outside `core` ECP core electrons."""
    n = n_electrons - core
    return (n + multiplicity - 1) // 2, (n - multiplicity + 1) // 2


def integer_states(numbers: list[int], *, job_electrons: int, job_multiplicity: int,
                   atom_z: int | None, given: dict[int, int] | None, core: int = 0,
                   reasons: dict[int, str] | None = None) -> dict[int, int]:
    """Multiplicity of each integer electron number of an electron-number scan.

    In this order: `given` (``scan.multiplicities``); the job's own
    multiplicity at its own electron count (for a lone atom whose input gave none,
    its ground state already); for a single atom of element `atom_z` the ground
    state of the atom or ion with that many electrons
    (`dm21cli.core.elements.ground_state_multiplicity`: O+ 4, O 3, O- 2); otherwise
    the lowest (1 or 2).  Raises ValueError (one line) when a multiplicity does not
    fit its electrons, a given one is for an electron number outside the scan, or
    two neighbouring states do not differ by one electron of one spin.  `reasons`,
    if given, receives for each electron number where its multiplicity came from.
    """
    from dm21cli.core import elements

    reasons = {} if reasons is None else reasons

    given = dict(given or {})
    outside = sorted(set(given) - set(numbers))
    if outside:
        raise ValueError(f"scan.multiplicities names {outside[0]} electrons, not an integer electron "
                         f"number of the scan ({numbers[0]} to {numbers[-1]})")
    states = {}
    for n in numbers:
        if n in given:
            m, reasons[n] = given[n], "scan.multiplicities"
        elif n == job_electrons:
            m, reasons[n] = job_multiplicity, "the job's"
        elif atom_z is not None and n <= elements.MAX_Z:
            m = elements.ground_state_multiplicity(atom_z, n)
            reasons[n] = ("Hund's rule, " + elements.configuration_text(
                elements.ground_state_configuration(atom_z, n)))
        else:
            m, reasons[n] = 1 + (n - core) % 2, "the lowest"
        valence = n - core
        if m - 1 > valence or (valence - m + 1) % 2:
            raise ValueError(f"multiplicity {m} does not fit {n} electrons"
                             + (f" ({valence} outside the ECP cores)" if core else ""))
        states[n] = m
    for n in numbers[:-1]:
        (a0, b0), (a1, b1) = spins(n, states[n], core), spins(n + 1, states[n + 1], core)
        if (a1 - a0, b1 - b0) not in ((1, 0), (0, 1)):
            raise ValueError(f"the states with {n} electrons (multiplicity {states[n]}) and "
                             f"{n + 1} electrons (multiplicity {states[n + 1]}) do not differ by one "
                             f"electron of one spin; set their multiplicities in scan.multiplicities")
    return states


def electron_values(values: list[float]) -> list[float]:
    """The electron numbers of the scan and the integers that bracket them, sorted.

    Raises ValueError (one line) when they would be more than `MAX_POINTS`
    (`dm21cli.io.inputs.scan_model.electron_points_problem`: the integers are counted
    before any is listed, so 0:1e308:1e307 is refused at once).
    """
    from dm21cli.io.inputs.scan_model import electron_points_problem

    problem = electron_points_problem(values)
    if problem:
        raise ValueError(problem)
    lo, hi = math.floor(min(values) + 1e-9), math.ceil(max(values) - 1e-9)
    out = set(round(v, DECIMALS) for v in values) | {float(n) for n in range(lo, hi + 1)}
    return sorted(out)


def _split(n_electrons: float) -> tuple[int, float]:
    """(N0, x) with N = N0 + x, 0 <= x < 1."""
    n0 = math.floor(n_electrons + 1e-9)
    return n0, round(n_electrons - n0, DECIMALS) if n_electrons - n0 > 1e-9 else 0.0


def electron_point(n_electrons: float, states: dict[int, int], nuclear_charge: int,
                   core: int = 0) -> dict:
    """The state of the point at N electrons: the molecule's charge and multiplicity
    (the integer state at or just above N) and its fixed occupations (None at integer N)."""
    n0, x = _split(n_electrons)
    a0, b0 = spins(n0, states[n0], core)
    if x == 0.0:
        return {"electrons": float(n0), "charge": nuclear_charge - n0, "multiplicity": states[n0],
                "occupations": None, "spin": None,
                "used_occupations": {"alpha": [1.0] * a0, "beta": [1.0] * b0}}
    a1, _ = spins(n0 + 1, states[n0 + 1], core)
    alpha, beta = [1.0] * a0, [1.0] * b0
    spin = "alpha" if a1 == a0 + 1 else "beta"
    (alpha if spin == "alpha" else beta).append(x)
    occupations = {"alpha": alpha, "beta": beta}
    return {"electrons": n_electrons, "charge": nuclear_charge - (n0 + 1),
            "multiplicity": states[n0 + 1], "occupations": occupations, "spin": spin,
            "used_occupations": occupations}


def spin_point(fraction: float, n_alpha: int, n_beta: int) -> dict | None:
    """Fixed occupations with `fraction` of one electron moved from alpha to beta (None at 0)."""
    if fraction == 0.0:
        return None
    n_u = n_alpha - n_beta
    moved = round(fraction / n_u, 12)
    return {"alpha": [1.0] * n_beta + [round(1.0 - moved, 12)] * n_u,
            "beta": [1.0] * n_beta + [moved] * n_u}


# ----------------------------------------------------------------------------
# the errors measured
# ----------------------------------------------------------------------------
def _line(kind: str, value: float, integer_energy: dict) -> float | None:
    """The exact energy at `value` from the curve's own reference energies, or None."""
    if kind == "fractional_spin":
        return integer_energy.get(0.0)
    n0, x = _split(value)
    lo, hi = integer_energy.get(float(n0)), integer_energy.get(float(n0 + 1))
    if x == 0.0:
        return lo
    if lo is None or hi is None:
        return None
    return (1.0 - x) * lo + x * hi


def deviations(records: list[dict], kind: str, column: str) -> None:
    """Set ``line_energy_hartree`` (the exact straight or flat line through the
    curve's own integer-N, or f = 0, energies) and ``deviation_mhartree``
    (E - line, mHa) in every record.  The line needs converged reference points."""
    for name in dict.fromkeys(r["functional"] for r in records):
        rows = [r for r in records if r["functional"] == name]
        refs = {}
        for r in rows:
            v = r[column]
            is_ref = v == 0.0 if kind == "fractional_spin" else _split(v)[1] == 0.0
            if is_ref and r["converged"] and r["energy_hartree"] is not None:
                refs[float(round(v))] = r["energy_hartree"]
        for r in rows:
            line = _line(kind, r[column], refs)
            r["line_energy_hartree"] = line
            r["deviation_mhartree"] = (None if line is None or r["energy_hartree"] is None
                                       else (r["energy_hartree"] - line) * 1000.0)


def _curvature(points: list[tuple[float, float]]) -> float | None:
    """d2E/dv2 of the least-squares parabola through (v, E) points; None for fewer than 3."""
    if len(points) < 3:
        return None
    import numpy as np

    v = np.array([p[0] for p in points])
    e = np.array([p[1] for p in points])
    c2 = np.polyfit(v - v.mean(), e, 2)[0]
    return float(2.0 * c2)


def _largest(rows: list[dict], column: str) -> tuple[float | None, float | None]:
    devs = [(r["deviation_mhartree"], r[column]) for r in rows if r["deviation_mhartree"] is not None]
    if not devs:
        return None, None
    return max(devs, key=lambda d: abs(d[0]))


def curves(records: list[dict], kind: str, column: str) -> dict:
    """Per functional: the largest deviation (mHa, signed, and where) and, per segment
    (integer N to N + 1; the whole f range), its largest deviation and the curvature
    d2E/dN2 (d2E/df2): the second derivative of the least-squares parabola through
    the segment's converged points, in hartree (needs 3 points).  Only converged
    points count."""
    out = {}
    for name in dict.fromkeys(r["functional"] for r in records):
        rows = sorted((r for r in records if r["functional"] == name and r["converged"]
                       and r["energy_hartree"] is not None), key=lambda r: r[column])
        if kind == "fractional_spin":
            bounds = [(0.0, max((r[column] for r in rows), default=0.0))]
        else:
            values = [r[column] for r in records if r["functional"] == name]
            lo, hi = math.floor(min(values) + 1e-9), math.ceil(max(values) - 1e-9)
            bounds = [(float(n), float(n + 1)) for n in range(lo, hi)]
        segments = []
        for a, b in bounds:
            seg = [r for r in rows if a - 1e-9 <= r[column] <= b + 1e-9]
            dev, at = _largest(seg, column)
            segments.append({"from": a, "to": b, "points": len(seg), "max_deviation_mhartree": dev,
                             "at": at, "curvature_hartree": _curvature(
                                 [(r[column], r["energy_hartree"]) for r in seg])})
        dev, at = _largest(rows, column)
        out[name] = {"max_deviation_mhartree": dev, "at": at, "segments": segments}
    return out
