"""The ``opt:`` section of a job file: a geometry optimisation with geomeTRIC (``dm21 opt``).

Every key is the geomeTRIC option of the same name (``maxiter``, ``convergence_set``,
``convergence_energy`` ... ``convergence_dmax``, ``coordsys``), and the constraints are
geomeTRIC's constraint lines: ``freeze:`` and ``set:`` hold what geomeTRIC's ``$freeze``
and ``$set`` blocks hold, one constraint per list item (``xyz 1``, ``distance 1 2``,
``angle 2 1 3 104.5``, ``dihedral 1 2 3 4 180``).  The syntax of each line is checked
here; the atom numbers against the molecule in `dm21cli.io.inputs.validate`.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from dm21cli.io.inputs.fields import _describe, _float_range, _int_range, _Section

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
_SELECTION = re.compile(r"[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*")


def atom_selection(text: str) -> list[int]:
    """geomeTRIC's atom selection ``1``, ``1-3``, ``1,3,5-7`` -> 1-based atom numbers."""
    if not _SELECTION.fullmatch(text):
        raise ValueError(f"expected atom numbers such as 1, 1-3 or 1,3,5-7, got {text!r}")
    atoms: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        lo, hi = int(first), int(last or first)
        if lo < 1:
            raise ValueError("atom numbers start at 1, got 0")
        if hi < lo:
            raise ValueError(f"the range {part} runs backwards")
        atoms.extend(range(lo, hi + 1))
    return atoms


def parse_constraint(value: Any, mode: str) -> dict:
    """One constraint line of ``freeze`` or ``set`` -> {'kind', 'atoms' (1-based), 'value'}.

    ``value`` is None for ``freeze``; for ``set`` the target in Angstrom (distance) or
    degrees (angle, dihedral).  A YAML list (``[distance, 1, 2]``) is read as its words.
    """
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a constraint line such as 'distance 1 2', got {_describe(value)}")
    words = value.split("#")[0].split()
    kind = words[0].lower()
    known = (*_CARTESIAN, *_GEOMETRIC) if mode == "freeze" else tuple(_GEOMETRIC)
    if kind not in known:
        raise ValueError(f"unknown {mode} constraint {words[0]!r} (geomeTRIC's {mode} "
                         f"constraints here: {', '.join(known)})")
    if kind in _CARTESIAN:
        if len(words) != 2:
            raise ValueError(f"'{kind}' takes one atom selection (e.g. '{kind} 1' or '{kind} 1-3'), "
                             f"got {len(words) - 1} words")
        return {"kind": kind, "atoms": atom_selection(words[1]), "value": None}
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
        try:
            target = float(words[-1])
        except ValueError:
            raise ValueError(f"expected a target value, got {words[-1]!r}") from None
        if not math.isfinite(target):
            raise ValueError(f"expected a finite target value, got {words[-1]!r}")
        if kind == "distance" and not target > 0:
            raise ValueError(f"a distance must be positive (Angstrom), got {target:g}")
        if kind == "angle" and not 0 < target < 180:
            raise ValueError(f"an angle must lie between 0 and 180 degrees (exclusive), got {target:g}")
        if kind == "dihedral" and not -180 <= target <= 180:
            raise ValueError(f"a dihedral must lie between -180 and 180 degrees, got {target:g}")
    return {"kind": kind, "atoms": atoms, "value": target}


def constraint_text(constraint: dict) -> str:
    """A parsed constraint as geomeTRIC's line (1-based atoms; Angstrom, degrees)."""
    kind, atoms = constraint["kind"], constraint["atoms"]
    if kind in _CARTESIAN:
        return f"{kind} {','.join(map(str, atoms))}"
    text = f"{kind} {' '.join(map(str, atoms))}"
    return text if constraint["value"] is None else f"{text} {constraint['value']:.10g}"


def _freeze(value: Any) -> str:
    return constraint_text(parse_constraint(value, "freeze"))


def _set(value: Any) -> str:
    return constraint_text(parse_constraint(value, "set"))


def _line_list(value: Any) -> Any:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ValueError(f"expected a list of constraint lines, got {_describe(value)}")
    return value


class Constraints(_Section):
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

    def lines(self) -> list[tuple[str, str]]:
        """(mode, line) of every constraint, freeze first."""
        return [("freeze", line) for line in self.freeze] + [("set", line) for line in self.set]

    def geometric_text(self) -> str:
        """The constraints as a geomeTRIC constraints file ('' without constraints)."""
        text = ""
        if self.freeze:
            text += "$freeze\n" + "".join(f"{line}\n" for line in self.freeze)
        if self.set:
            text += "$set\n" + "".join(f"{line}\n" for line in self.set)
        return text

    def atoms(self) -> list[tuple[str, int, list[int]]]:
        """(mode, index in its list, 1-based atoms) of every constraint."""
        out = []
        for mode in ("freeze", "set"):
            for k, line in enumerate(getattr(self, mode)):
                out.append((mode, k, parse_constraint(line, mode)["atoms"]))
        return out


def _convergence_set(value: Any) -> str:
    if isinstance(value, str) and value.strip().upper() in CONVERGENCE_SETS:
        return value.strip().upper()
    raise ValueError(f"unknown convergence set {_describe(value)} (geomeTRIC's sets: "
                     f"{', '.join(CONVERGENCE_SETS)})")


def _coordsys(value: Any) -> str:
    if isinstance(value, str) and value.strip().lower() in COORDSYS:
        return value.strip().lower()
    raise ValueError(f"unknown coordinate system {_describe(value)} (geomeTRIC's: {', '.join(COORDSYS)})")


_Criterion = Annotated[float | None, _float_range(gt=0, optional=True)]


class OptSettings(_Section):
    """Section ``opt``: the geometry optimisation of ``dm21 opt`` (geomeTRIC's option names)."""

    maxiter: Annotated[int, _int_range(lo=1)] = Field(
        100, description="Most optimisation steps (geomeTRIC's maxiter); not converged by then "
                         "= not a success.")
    convergence_set: Annotated[str, BeforeValidator(_convergence_set)] = Field(
        "GAU", description=f"geomeTRIC's named set of criteria: {', '.join(CONVERGENCE_SETS)}.")
    convergence_energy: _Criterion = Field(
        None, description="Energy change between steps [Ha]; null = the set's.")
    convergence_grms: _Criterion = Field(None, description="RMS gradient [Ha/bohr]; null = the set's.")
    convergence_gmax: _Criterion = Field(
        None, description="Largest gradient component [Ha/bohr]; null = the set's.")
    convergence_drms: _Criterion = Field(
        None, description="RMS displacement [Angstrom]; null = the set's.")
    convergence_dmax: _Criterion = Field(
        None, description="Largest displacement [Angstrom]; null = the set's.")
    coordsys: Annotated[str, BeforeValidator(_coordsys)] = Field(
        "tric", description=f"geomeTRIC's coordinate system: {', '.join(COORDSYS)} (constraints "
                            f"need {', '.join(CONSTRAINT_COORDSYS)}).")
    constraints: Constraints = Field(
        default_factory=Constraints, description="geomeTRIC's freeze and set constraints.")

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
        return {"maxiter": self.maxiter, **self.criteria(), "coordsys": self.coordsys,
                "constraints": {"freeze": list(self.constraints.freeze),
                                "set": list(self.constraints.set)}}

