"""The ``opt:`` section of a job file: a geometry optimisation with geomeTRIC (``dm21 opt``).

Every key is the geomeTRIC option of the same name (``maxiter``, ``convergence_set``,
``convergence_energy`` ... ``convergence_dmax``, ``coordsys``), and the constraints are
geomeTRIC's constraint lines: ``freeze:`` and ``set:`` hold what geomeTRIC's ``$freeze``
and ``$set`` blocks hold, one constraint per list item (``xyz 1``, ``distance 1 2``,
``angle 2 1 3 104.5``, ``dihedral 1 2 3 4 180``).  The syntax and range of each line is
checked when it is read (`parse_constraint`); the lines against the molecule and against
each other by `check_constraints` (called by `dm21cli.io.inputs.validate`): atoms that
exist, one constraint per coordinate, none fixed by the others, values geomeTRIC can hold.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Annotated, Any

import numpy as np
from pydantic import BeforeValidator, Field

from dm21cli.core.errors import InputError
from dm21cli.core.units import ANGSTROM_BOHR
from dm21cli.io.inputs.fields import YamlBool, describe_value, float_range, int_range, SectionModel

#: geomeTRIC's named convergence sets (`geometric.params.OptParams.convergence_criteria`):
#: energy (Ha), RMS and max gradient (Ha/bohr), RMS and max displacement (Angstrom)
CONVERGENCE_SETS = {
    "GAU": (1e-6, 3e-4, 4.5e-4, 1.2e-3, 1.8e-3),
    "GAU_LOOSE": (1e-6, 1.7e-3, 2.5e-3, 6.7e-3, 1e-2),
    "GAU_TIGHT": (1e-6, 1e-5, 1.5e-5, 4e-5, 6e-5),
    "GAU_VERYTIGHT": (1e-6, 1e-6, 2e-6, 4e-6, 6e-6),
    "NWCHEM_LOOSE": (1e-6, 3e-3, 4.5e-3, 3.6e-3, 5.4e-3),
    "TURBOMOLE": (1e-6, 5e-4, 1e-3, 5.0e-4, 1e-3),
    "INTERFRAG_TIGHT": (1e-6, 1e-5, 1.5e-5, 4.0e-4, 6.0e-4),
}
#: the criteria, in the order of a convergence set, with their units
CRITERIA = (("convergence_energy", "Ha"), ("convergence_grms", "Ha/bohr"),
            ("convergence_gmax", "Ha/bohr"), ("convergence_drms", "Angstrom"),
            ("convergence_dmax", "Angstrom"))
#: geomeTRIC's coordinate systems; constraints need the delocalised ones
COORDSYS = ("tric", "dlc", "hdlc", "tric-p", "prim", "cart")
CONSTRAINT_COORDSYS = ("tric", "dlc", "hdlc")

#: constraint keyword -> number of atoms (Cartesian ones: one atom selection)
_GEOMETRIC = {"distance": 2, "angle": 3, "dihedral": 4}
_CARTESIAN = ("x", "y", "z", "xy", "xz", "yz", "xyz")
#: the same, for other modules: the keywords of ``freeze`` (all) and ``set`` (the
#: geometric ones) (`dm21cli.io.inputs.schema` spells the lines out for editors)
GEOMETRIC_CONSTRAINTS = _GEOMETRIC
CARTESIAN_CONSTRAINTS = _CARTESIAN
_SELECTION = re.compile(r"[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*")

#: the ``set`` angles geomeTRIC can hold: above 175 degrees is what geomeTRIC itself calls
#: nearly linear (`LINEAR_DEGREES`), and near 180 and near 0 its step back to Cartesian
#: coordinates fails ("Cannot continue a constrained optimization": geomeTRIC 1.1.1 on
#: water, driven from 104.5 degrees, failed for 178.5 and 179, and for 5.2 and below;
#: 10 and 175 converge); a ``set`` distance is at most MAX_SET_DISTANCE_ANGSTROM
SET_ANGLE_DEGREES = (10.0, 175.0)
MAX_SET_DISTANCE_ANGSTROM = 1000.0
#: geomeTRIC stops a constrained dihedral whose three consecutive atoms form an angle above
#: this (`geometric.optimize.Optimizer.checkStructure`, LinearTorsionError)
LINEAR_DEGREES = 175.0
#: a constraint whose gradient lies within this of the span of the others' is fixed by them
DEPENDENT_TOLERANCE = 1e-6


def selection_runs(text: str) -> tuple[tuple[int, int], ...]:
    """geomeTRIC's atom selection ``1``, ``1-3``, ``1,3,5-7`` -> sorted runs (first, last),
    1-based, adjacent runs merged; never expanded (``1-3000000000`` is one run)."""
    if not _SELECTION.fullmatch(text):
        raise ValueError(f"expected atom numbers such as 1, 1-3 or 1,3,5-7, got {text!r}")
    runs = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        lo, hi = int(first), int(last or first)
        if lo < 1:
            raise ValueError("atom numbers start at 1, got 0")
        if hi < lo:
            raise ValueError(f"the range {part} runs backwards")
        runs.append((lo, hi))
    runs.sort()
    merged: list[tuple[int, int]] = []
    for lo, hi in runs:
        if merged and lo <= merged[-1][1]:
            raise ValueError(f"atom {lo} appears twice in the selection {text}")
        if merged and lo == merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return tuple(merged)


def selection_text(runs) -> str:
    """Runs (first, last) as geomeTRIC's selection: ``1``, ``1,2``, ``1-3``, ``1,4-6``."""
    parts = []
    for lo, hi in runs:
        parts.append(str(lo) if hi == lo else f"{lo},{hi}" if hi == lo + 1 else f"{lo}-{hi}")
    return ",".join(parts)


@dataclasses.dataclass(frozen=True)
class Constraint:
    """One line of ``freeze`` or ``set``, as geomeTRIC reads it.

    runs: the 1-based atoms as runs (first, last): one run per atom, in the order given, for
    a distance, angle or dihedral; the sorted selection of a Cartesian line, never expanded
    before the atom numbers are checked against the molecule (`highest_atom`).  value: the
    ``set`` target in Angstrom (distance) or degrees (angle, dihedral); None for ``freeze``.
    A comment-only line (``# ...``, which geomeTRIC skips) has kind "" and keeps its text.
    """

    mode: str  # "freeze" | "set"
    kind: str  # "distance", "angle", "dihedral", "x" ... "xyz"; "" for a comment-only line
    runs: tuple[tuple[int, int], ...] = ()
    value: float | None = None
    comment: str = ""

    @property
    def is_comment(self) -> bool:
        return not self.kind

    @property
    def highest_atom(self) -> int:
        return max((hi for _, hi in self.runs), default=0)

    def atoms(self) -> list[int]:
        """The 1-based atom numbers (check `highest_atom` against the molecule first)."""
        return [n for lo, hi in self.runs for n in range(lo, hi + 1)]

    def coordinate(self) -> str:
        """The coordinate without the target: ``distance 1 2``, ``xyz 1-3``."""
        if self.kind in _CARTESIAN:
            return f"{self.kind} {selection_text(self.runs)}"
        return f"{self.kind} {' '.join(str(lo) for lo, _ in self.runs)}"

    def text(self) -> str:
        """The line as geomeTRIC reads it (the canonical form kept in the resolved input)."""
        if self.is_comment:
            return self.comment
        return self.coordinate() if self.value is None else f"{self.coordinate()} {self.value:.10g}"

    def coordinate_keys(self) -> list[tuple]:
        """What it constrains, one hashable key per coordinate, equal for the same coordinate
        however its atoms are ordered (geomeTRIC's own ordering): ("x", atom) ...,
        ("distance", i, j), ("angle", vertex, i, k), ("dihedral", i, j, k, l)."""
        if self.is_comment:
            return []
        if self.kind in _CARTESIAN:
            return [(axis, n) for n in self.atoms() for axis in self.kind]
        atoms = self.atoms()
        if self.kind == "distance":
            return [("distance", *sorted(atoms))]
        if self.kind == "angle":
            return [("angle", atoms[1], *sorted((atoms[0], atoms[2])))]
        return [("dihedral", *min(tuple(atoms), tuple(atoms[::-1])))]


def parse_constraint(value: Any, mode: str) -> Constraint:
    """One constraint line of ``freeze`` or ``set`` -> `Constraint` (its syntax and ranges checked).

    A YAML list (``[distance, 1, 2]``) is read as its words; what follows ``#`` is a comment,
    and a line of nothing but a comment is kept as such and ignored, as geomeTRIC ignores it.
    """
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a constraint line such as 'distance 1 2', got {describe_value(value)}")
    words = value.split("#")[0].split()
    if not words:
        return Constraint(mode, "", comment=value.strip())
    kind = words[0].lower()
    known = (*_CARTESIAN, *_GEOMETRIC) if mode == "freeze" else tuple(_GEOMETRIC)
    if kind not in known:
        raise ValueError(f"unknown {mode} constraint {words[0]!r} (geomeTRIC's {mode} "
                         f"constraints here: {', '.join(known)})")
    if kind in _CARTESIAN:
        if len(words) != 2:
            raise ValueError(f"'{kind}' takes one atom selection (e.g. '{kind} 1' or '{kind} 1-3'), "
                             f"got {len(words) - 1} words")
        return Constraint(mode, kind, selection_runs(words[1]))
    n = _GEOMETRIC[kind]
    want = n + (1 if mode == "set" else 0)
    if len(words) - 1 != want:
        example = {"distance": "1 2", "angle": "2 1 3", "dihedral": "1 2 3 4"}[kind]
        target = {"distance": " 1.5", "angle": " 104.5", "dihedral": " 180"}[kind]
        raise ValueError(f"'{kind}' takes {n} atom numbers{' and a target value' if mode == 'set' else ''} "
                         f"(e.g. '{kind} {example}{target if mode == 'set' else ''}'), "
                         f"got {len(words) - 1} words")
    atoms = []
    for word in words[1:1 + n]:
        if not word.isdigit():
            raise ValueError(f"expected an atom number, got {word!r}")
        if int(word) < 1:
            raise ValueError("atom numbers start at 1, got 0")
        atoms.append(int(word))
    if len(set(atoms)) != n:
        raise ValueError(f"the atoms of a {kind} must differ, got {' '.join(map(str, atoms))}")
    target = None
    if mode == "set":
        target = _target(kind, words[-1])
    return Constraint(mode, kind, tuple((a, a) for a in atoms), target)


def _target(kind: str, word: str) -> float:
    """A ``set`` line's target value, checked against what geomeTRIC can hold."""
    try:
        target = float(word)
    except ValueError:
        raise ValueError(f"expected a target value, got {word!r}") from None
    if not math.isfinite(target):
        raise ValueError(f"expected a finite target value, got {word!r}")
    if kind == "distance" and not 0 < target <= MAX_SET_DISTANCE_ANGSTROM:
        raise ValueError(f"a distance must be positive and at most {MAX_SET_DISTANCE_ANGSTROM:g} "
                         f"Angstrom, got {target:g}")
    low, high = SET_ANGLE_DEGREES
    if kind == "angle" and not low <= target <= high:
        raise ValueError(f"an angle must lie between {low:g} and {high:g} degrees (geomeTRIC cannot "
                         f"hold a nearly linear angle, nor one near 0), got {target:g}")
    if kind == "dihedral" and not -180 <= target <= 180:
        raise ValueError(f"a dihedral must lie between -180 and 180 degrees, got {target:g}")
    return target


def _freeze(value: Any) -> str:
    return parse_constraint(value, "freeze").text()


def _set(value: Any) -> str:
    return parse_constraint(value, "set").text()


def _line_list(value: Any) -> Any:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ValueError(f"expected a list of constraint lines, got {describe_value(value)}")
    return value


class Constraints(SectionModel):
    """``opt.constraints``: geomeTRIC's ``$freeze`` and ``$set`` blocks, one line per item."""

    freeze: Annotated[list[Annotated[str, BeforeValidator(_freeze)]], BeforeValidator(_line_list)] = Field(
        default_factory=list,
        description="Coordinates held at their starting values: 'xyz 1' (atom 1 fixed; also x, y, "
                    "z, xy, xz, yz and selections such as 1-3 or 1,4), 'distance 1 2', "
                    "'angle 2 1 3', 'dihedral 1 2 3 4'.")
    set: Annotated[list[Annotated[str, BeforeValidator(_set)]], BeforeValidator(_line_list)] = Field(
        default_factory=list,
        description="Coordinates driven to a value and held there: 'distance 1 2 1.5' "
                    "(Angstrom), 'angle 2 1 3 104.5', 'dihedral 1 2 3 4 180' (degrees).")

    def parsed(self) -> list[tuple[str, int, Constraint]]:
        """(mode, index in its list, parsed line) of every constraint, freeze first; comment-only
        lines left out."""
        out = []
        for mode in ("freeze", "set"):
            for k, line in enumerate(getattr(self, mode)):
                constraint = parse_constraint(line, mode)
                if not constraint.is_comment:
                    out.append((mode, k, constraint))
        return out

    def lines(self) -> list[tuple[str, str]]:
        """(mode, line) of every constraint, freeze first (comment-only lines left out)."""
        return [(mode, c.text()) for mode, _, c in self.parsed()]

    def listed(self) -> dict[str, list[str]]:
        """{"freeze": [...], "set": [...]}: the lines without the comment-only ones."""
        out: dict[str, list[str]] = {"freeze": [], "set": []}
        for mode, line in self.lines():
            out[mode].append(line)
        return out

    def geometric_text(self) -> str:
        """The constraints as a geomeTRIC constraints file ('' without constraints)."""
        text = ""
        for mode, lines in self.listed().items():
            if lines:
                text += f"${mode}\n" + "".join(f"{line}\n" for line in lines)
        return text


def check_constraints(opt: OptSettings, coords_angstrom, locate, *, min_distance_angstrom: float,
                      scanned_atoms: tuple[int, ...] | None = None,
                      scanned_where: tuple = ("scan", "atoms")) -> list[InputError]:
    """The constraints of `opt` against the molecule: every problem, each an InputError
    located by ``locate(path)`` (`dm21cli.io.inputs.models.SpecMeta.locate`).

    coords_angstrom: (natm, 3) starting geometry.  scanned_atoms: the 1-based atoms (two, three
    or four) whose distance, angle or dihedral a relaxed scan holds itself (``freeze distance
    i j``, ``freeze angle i j k``, ``freeze dihedral i j k l`` at each point), located at
    `scanned_where`.  Refused: atoms that do not exist (checked before any selection is
    expanded); two constraints on the same coordinate (freeze and set, set twice, any order
    of the atoms, the scanned coordinate); a constraint already fixed by the others (its
    gradient in the span of theirs: frozen atoms, the three distances of a triangle and its
    angle, ...), which geomeTRIC would silently give up; ``set`` distances shorter than
    `min_distance_angstrom` or no triangle can have; and a dihedral with three consecutive
    atoms beyond `LINEAR_DEGREES`, which geomeTRIC refuses before its first step.
    """
    coords = np.asarray(coords_angstrom, dtype=float).reshape(-1, 3)
    natm = len(coords)
    problems: list[InputError] = []
    entries: list[_Entry] = []
    if scanned_atoms is not None:
        where = locate(scanned_where)
        kind = {2: "distance", 3: "angle", 4: "dihedral"}[len(scanned_atoms)]
        scanned = Constraint("freeze", kind, tuple((a, a) for a in scanned_atoms))
        entries.append(_Entry(scanned, where, _name(where), scanned=True))
    for mode, k, constraint in opt.constraints.parsed():
        where = locate(("opt", "constraints", mode, k))
        if constraint.highest_atom > natm:
            problems.append(InputError(f"atom {constraint.highest_atom} does not exist (the molecule "
                                       f"has {natm} atoms)", **where))
            continue
        entries.append(_Entry(constraint, where, _name(where)))
    entries = _distinct(entries, problems)
    for entry in entries:
        c = entry.constraint
        if c.kind == "distance" and c.value is not None and c.value < min_distance_angstrom:
            problems.append(entry.error(f"{c.value:g}: a distance below {min_distance_angstrom:g} "
                                        f"Angstrom puts two atoms on top of each other"))
        if c.kind == "dihedral":
            problems.extend(_linear_dihedral(entry, coords))
    problems.extend(_impossible_triangles(entries, coords))
    problems.extend(_dependent(entries, coords))
    return problems


@dataclasses.dataclass
class _Entry:
    """A constraint with where it was given (for messages)."""

    constraint: Constraint
    where: dict  # file / line / field
    label: str  # how another line's message names it
    scanned: bool = False  # the distance, angle or dihedral a relaxed scan holds itself

    def error(self, message: str) -> InputError:
        """A problem of this line: ``<coordinate> <message>``."""
        return InputError(f"{self.constraint.coordinate()} {message}", **self.where)


def _name(where: dict) -> str:
    """``opt.constraints.freeze[0] on line 13``."""
    field = where.get("field") or "?"
    return f"{field} on line {where['line']}" if where.get("line") is not None else field


def _and(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _distinct(entries: list[_Entry], problems: list[InputError]) -> list[_Entry]:
    """The entries without those that constrain a coordinate already constrained (each
    of which is a problem naming both lines)."""
    seen: dict[tuple, _Entry] = {}
    kept = []
    for entry in entries:
        first = next((seen[key] for key in entry.constraint.coordinate_keys() if key in seen), None)
        if first is None:
            seen.update({key: entry for key in entry.constraint.coordinate_keys()})
            kept.append(entry)
            continue
        if first.scanned:
            kind = first.constraint.kind
            problems.append(entry.error(f"is the relaxed scan's own {kind} ({first.label}), "
                                        f"which the scan holds at each of its {kind}s: remove "
                                        f"this constraint"))
            continue
        modes = {first.constraint.mode, entry.constraint.mode}
        why = ("a coordinate cannot be frozen and set at once" if modes == {"freeze", "set"} else
               "a coordinate cannot be set twice" if modes == {"set"} else
               "give each coordinate one constraint")
        problems.append(entry.error(f"is already constrained by {first.label} "
                                    f"('{first.constraint.text()}'): {why}"))
    return kept


def _angle_degrees(coords, a: int, b: int, c: int) -> float:
    """The angle a-b-c (0-based atoms, vertex b) in degrees."""
    u, v = coords[a] - coords[b], coords[c] - coords[b]
    cosine = float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))
    return math.degrees(math.acos(min(1.0, max(-1.0, cosine))))


def _linear_dihedral(entry: _Entry, coords) -> list[InputError]:
    a, b, c, d = (n - 1 for n in entry.constraint.atoms())
    for first, vertex, last in ((a, b, c), (b, c, d)):
        angle = _angle_degrees(coords, first, vertex, last)
        if angle > LINEAR_DEGREES:
            return [entry.error(f"is not defined: atoms {first + 1}-{vertex + 1}-{last + 1} are "
                                f"nearly linear ({angle:.1f} degrees at the start), and geomeTRIC "
                                f"cannot hold a dihedral with an angle above {LINEAR_DEGREES:g} "
                                f"degrees")]
    return []


def _impossible_triangles(entries: list[_Entry], coords) -> list[InputError]:
    """``set`` distances that no triangle can have, with the other two sides held too
    (set, or frozen at their starting length)."""
    held: dict[tuple[int, int], tuple[float, _Entry]] = {}
    for entry in entries:
        c = entry.constraint
        if c.kind == "distance" and not entry.scanned:
            i, j = sorted(c.atoms())
            length = c.value if c.value is not None else float(np.linalg.norm(coords[i - 1] - coords[j - 1]))
            held[(i, j)] = (length, entry)
    problems = []
    atoms = sorted({n for pair in held for n in pair})
    for x in range(len(atoms)):
        for y in range(x + 1, len(atoms)):
            for z in range(y + 1, len(atoms)):
                i, j, k = atoms[x], atoms[y], atoms[z]
                sides = [held.get(p) for p in ((i, j), (i, k), (j, k))]
                if None in sides or all(s[1].constraint.value is None for s in sides):
                    continue
                lengths = sorted(s[0] for s in sides)
                if lengths[2] > lengths[0] + lengths[1] + 1e-9:
                    blamed = [s[1] for s in sides if s[1].constraint.value is not None][-1]
                    others = " and ".join(s[1].label for s in sides if s[1] is not blamed)
                    problems.append(blamed.error(
                        f"{blamed.constraint.value:g} cannot be: with {others} no triangle of atoms "
                        f"{i}, {j}, {k} has sides {lengths[0]:g}, {lengths[1]:g} and "
                        f"{lengths[2]:g} Angstrom"))
    return problems


def _gradient(constraint: Constraint, coords_bohr) -> np.ndarray:
    """The gradient (3 natm,) of the distance, angle or dihedral `constraint` holds, as
    geomeTRIC defines it (`geometric.internal`)."""
    from geometric.internal import Angle, Dihedral, Distance

    atoms = [n - 1 for n in constraint.atoms()]
    primitive = {"distance": Distance, "angle": Angle, "dihedral": Dihedral}[constraint.kind](*atoms)
    return np.asarray(primitive.derivative(coords_bohr.ravel()), dtype=float).ravel()


def _dependent(entries: list[_Entry], coords) -> list[InputError]:
    """Constraints fixed by the others: a distance, angle or dihedral whose gradient at the
    start lies in the span of the frozen Cartesian coordinates and of the earlier ones'.
    Redundant at best; when a ``set`` value disagrees, geomeTRIC holds the others and
    "converges" without meeting it.  (Cartesian lines are independent of each other once
    no atom is frozen twice, `_distinct`.)"""
    coords_bohr = coords * ANGSTROM_BOHR
    frozen: dict[int, _Entry] = {}  # Cartesian component (3 atom + axis) -> its line
    for entry in entries:
        if entry.constraint.kind in _CARTESIAN:
            for n in entry.constraint.atoms():
                frozen.update({3 * (n - 1) + "xyz".index(axis): entry for axis in entry.constraint.kind})
    fixed = np.zeros(3 * len(coords), dtype=bool)
    fixed[list(frozen)] = True
    basis: list[np.ndarray] = []  # orthonormal: the span of the free parts so far
    rows: list[np.ndarray] = []
    owners: list[_Entry] = []
    problems = []
    for entry in entries:
        if entry.constraint.kind in _CARTESIAN:
            continue
        row = _gradient(entry.constraint, coords_bohr)
        norm = np.linalg.norm(row)
        if not np.isfinite(row).all() or norm == 0:
            continue  # (a dihedral over collinear atoms: reported as such)
        free = np.where(fixed, 0.0, row / norm)
        rest = free - sum((q @ free) * q for q in basis) if basis else free
        if np.linalg.norm(rest) > DEPENDENT_TOLERANCE:
            basis.append(rest / np.linalg.norm(rest))
            rows.append(free)
            owners.append(entry)
            continue
        by = [frozen[i] for i in np.flatnonzero(fixed & (np.abs(row) > DEPENDENT_TOLERANCE * norm))]
        if rows:
            weights = np.linalg.lstsq(np.array(rows).T, free, rcond=None)[0]
            by += [o for o, w in zip(owners, weights) if abs(w) > DEPENDENT_TOLERANCE]
        names = list(dict.fromkeys(o.label for o in by))
        problems.append(entry.error(f"is already fixed by {_and(names)}: remove one (constraints "
                                    f"that fix each other are redundant at best; a set value "
                                    f"that disagrees is silently not met)"))
    return problems


def _convergence_set(value: Any) -> str:
    if isinstance(value, str) and value.strip().upper() in CONVERGENCE_SETS:
        return value.strip().upper()
    raise ValueError(f"unknown convergence set {describe_value(value)} (geomeTRIC's sets: "
                     f"{', '.join(CONVERGENCE_SETS)})")


def _coordsys(value: Any) -> str:
    if isinstance(value, str) and value.strip().lower() in COORDSYS:
        return value.strip().lower()
    raise ValueError(f"unknown coordinate system {describe_value(value)} (geomeTRIC's: {', '.join(COORDSYS)})")


_Criterion = Annotated[float | None, float_range(gt=0, optional=True)]


class OptSettings(SectionModel):
    """Section ``opt``: the geometry optimisation of ``dm21 opt`` (geomeTRIC's option names)."""

    maxiter: Annotated[int, int_range(lo=1)] = Field(
        100, description="Most optimisation steps (geomeTRIC's maxiter); not converged by then "
                         "= not a success.")
    convergence_set: Annotated[str, BeforeValidator(_convergence_set)] = Field(
        "GAU", description=f"geomeTRIC's named set of criteria: {', '.join(CONVERGENCE_SETS)}.")
    convergence_energy: _Criterion = Field(
        None, description="Energy change between steps [Ha]; null = the set's.")
    convergence_grms: _Criterion = Field(
        None, description="RMS of the per-atom gradient norms [Ha/bohr]; null = the set's.")
    convergence_gmax: _Criterion = Field(
        None, description="Largest per-atom gradient norm [Ha/bohr]; null = the set's.")
    convergence_drms: _Criterion = Field(
        None, description="RMS displacement [Angstrom]; null = the set's.")
    convergence_dmax: _Criterion = Field(
        None, description="Largest displacement [Angstrom]; null = the set's.")
    coordsys: Annotated[str, BeforeValidator(_coordsys)] = Field(
        "tric", description=f"geomeTRIC's coordinate system: {', '.join(COORDSYS)} (constraints "
                            f"need {', '.join(CONSTRAINT_COORDSYS)}).")
    constraints: Constraints = Field(
        default_factory=Constraints, description="geomeTRIC's freeze and set constraints.")
    transition: YamlBool = Field(
        False, description="Search for a transition state (a first-order saddle point) instead "
                           "of a minimum: geomeTRIC's transition; dm21 opt --ts, job.task: ts.")
    irc: YamlBool = Field(
        False, description="Follow the intrinsic reaction coordinate (geomeTRIC's IRC) down from "
                           "a transition state to the minimum on each side, from the Hessian "
                           "there; with transition: true, from the transition state the search "
                           "finds. dm21 opt --irc, job.task: irc.")
    hessian_every: Annotated[int, int_range(lo=0)] = Field(
        0, description="A transition-state search's Hessian (computed as dm21 freq computes it): "
                       "at the start, and again every N accepted steps at the current geometry "
                       "(N > 0; geomeTRIC updates it in between); 0: at the start only. The "
                       "frequencies at the end are always computed. dm21 opt --hessian-every N.")

    def criteria(self) -> dict[str, float | str]:
        """The effective criteria: the set's, replaced by the ones given (geomeTRIC's names)."""
        values = CONVERGENCE_SETS[self.convergence_set]
        out: dict[str, float | str] = {"convergence_set": self.convergence_set}
        for (name, _), default in zip(CRITERIA, values):
            given = getattr(self, name)
            out[name] = default if given is None else given
        return out

    def resolved(self) -> dict:
        """The section with the criteria filled in (for input.resolved.yaml)."""
        out = {"maxiter": self.maxiter, **self.criteria(), "coordsys": self.coordsys,
               "constraints": self.constraints.listed()}
        if self.transition:  # (only then: the restart keys of minimisations stay as they were)
            out["transition"] = True
            if self.hessian_every:
                out["hessian_every"] = self.hessian_every
        if self.irc:
            out["irc"] = True
        return out

