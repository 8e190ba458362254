"""Distance scans (dissociation curves): ``dm21 scan`` as a library.

`plan_scan(spec)` turns a validated job with a ``scan:`` section into a
`ScanPlan`: the sorted distances, the atoms that move, the functionals, and one
fully validated single-point `JobSpec` per point and functional.  `run_scan`
computes the points one after another through `dm21cli.runner.run_job`, each in
its own directory ``<scan dir>/<functional>/point-02.500A/`` (named by its
distance), and writes the
curve files ``scan.csv``, ``scan.json`` and ``scan.png`` into the scan
directory.  It returns a `ScanReport` that counts converged, unconverged and
failed points and decides the exit status.

Rules:

* **Geometry.** The distance is the one between the two atoms of
  ``scan.atoms`` (1-based, default ``[1, 2]``).  The moving fragment
  (``scan.fragment``, default: the second atom of the pair alone) is translated
  rigidly along the line from the first to the second atom; every other atom
  stays where it is.
* **Order.** Distances are sorted ascending; a point's index is its position in
  that list.  The walk starts at the distance closest to the sum of the pair's
  covalent radii (PySCF's table, an estimate of the equilibrium distance),
  goes outward to the longest distance, then inward from the start to the
  shortest.  Each point starts from the converged density of its neighbour
  towards the start (``scf.guess`` = the neighbour's ``scf.chk``); the first
  point, and any point whose neighbour did not converge, uses the job's own guess.
* **Broken symmetry** (``scan.broken_symmetry: true``, singlets only): points
  are computed unrestricted; a point beyond 1.5x the equilibrium estimate whose
  neighbour is not also beyond it starts from a *mixed* guess (HOMO and LUMO
  of the converged neighbour, or else of a Hartree-Fock Fock matrix built on the
  minimal-basis atomic guess, rotated by +45 degrees for alpha and -45 degrees
  for beta, as Gaussian's guess=mix).
  Points further out continue from their neighbour's density if that neighbour
  is broken (<S^2> > 0.1); a neighbour that collapsed to the symmetric solution
  is not followed (a symmetric density stays symmetric), the mixed guess is used again.
* **Resume.** A finished point directory holds ``scan-point.json`` with a
  SHA-256 hash of the point's resolved input (molecule, basis, functional,
  SCF and output settings; not the job name, directories, resources or the
  starting guess).  A point whose hash matches and whose ``result.json`` says
  ``success`` or ``not-converged`` is read from disk, not recomputed.  A
  point directory is named by the distance alone, so a point is found again
  whatever the other distances are; directories of distances no longer in
  the scan stay on disk, outside the curve.  The
  scan directory holds ``scan.definition.json`` with a hash of the whole scan
  definition; a different definition is refused (`OutputExistsError`) unless
  ``overwrite`` is given, and even then points with unchanged inputs are reused.
* **Worker processes** (``workers > 1``): processes of our own (`_WorkerProcess`),
  one point at a time each; SIGINT/SIGTERM in the scan's process (or in the
  whole process group) ends them within `WORKER_GRACE_S` seconds, a busy one
  marking its point ``interrupted``.
* **Reference fragments** (``scan.reference_atoms: true``): the fixed part
  (every atom not in the moving fragment) and the moving fragment are computed
  alone.  By default the moving fragment is neutral and the fixed part carries
  the molecule's charge; each takes the lowest multiplicity its electron count
  allows (1 for even, 2 for odd).  ``scan.reference_charges`` and
  ``scan.reference_multiplicities`` (``[fixed, moving]``) override that.  A
  fragment without electrons (a bare proton) has energy 0 and is not computed.
  The sum of the two energies is the dissociation limit.

Library code: no printing (progress goes to a reporter callback), no
``sys.exit``; PySCF and matplotlib are imported inside the functions that use
them.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dm21cli import interrupts
from dm21cli.errors import (ComputeError, ExitStatus, InputError, OutputExistsError,
                             reraise_os_error)

__all__ = [
    "MAX_POINTS", "BROKEN_SYMMETRY_STRETCH", "FILES", "POINT_FILE",
    "parse_distances", "displaced_coords", "equilibrium_estimate_angstrom", "walk_order",
    "plan_scan", "run_scan", "collect_scan", "ScanPlan", "ScanPoint", "ScanReport",
    "render_table_text", "point_hash",
]

#: more points than this is almost certainly a typo in the range.
MAX_POINTS = 200
#: two distances closer than this (Angstrom) would share a directory name.
MIN_SPACING_ANGSTROM = 1e-3
#: broken-symmetry guesses beyond this multiple of the equilibrium estimate.
BROKEN_SYMMETRY_STRETCH = 1.5
#: a neighbour with a smaller <S^2> has collapsed to the symmetric solution: mix again.
BROKEN_SYMMETRY_MIN_S2 = 0.1
#: files in the scan directory.
FILES = {
    "definition": "scan.definition.json",
    "csv": "scan.csv",
    "json": "scan.json",
    "png": "scan.png",
    "log": "scan.log",
}
#: file in each point directory: the point's input hash and where it sits in the scan.
POINT_FILE = "scan-point.json"
#: result.json statuses of a finished point (read back, not recomputed).
FINISHED = ("success", "not-converged")
#: seconds the worker processes of an interrupted scan get to mark their points and end
WORKER_GRACE_S = 5.0

Reporter = Callable[[str], None]


# ----------------------------------------------------------------------
# distances and geometry (pure functions)
# ----------------------------------------------------------------------
def _number(token: Any, what: str) -> float:
    from dm21cli.inputs import _to_float

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


def displaced_coords(coords_angstrom: np.ndarray, pair: tuple[int, int], moving: list[int],
                     distance_angstrom: float) -> np.ndarray:
    """Coordinates with the `moving` atoms (0-based) shifted so that the `pair` is `distance_angstrom` apart.

    The shift is along the unit vector from pair[0] to pair[1]; relative
    positions inside the moving fragment, and all other atoms, are unchanged.
    """
    coords = np.array(coords_angstrom, dtype=float).reshape(-1, 3)
    i, j = pair
    axis = coords[j] - coords[i]
    d0 = float(np.linalg.norm(axis))
    if d0 == 0:
        raise ValueError("the two atoms of the pair sit on the same point")
    coords[list(moving)] += (distance_angstrom - d0) * axis / d0
    return coords


def equilibrium_estimate_angstrom(symbol_a: str, symbol_b: str) -> float:
    """Sum of the two atoms' covalent radii (PySCF's table), in Angstrom."""
    from pyscf.data import radii

    from dm21cli import elements
    from dm21cli.units import BOHR_ANGSTROM

    return float((radii.COVALENT[elements.atomic_number(symbol_a)]
                  + radii.COVALENT[elements.atomic_number(symbol_b)]) * BOHR_ANGSTROM)


def walk_order(distances: list[float], start_near: float) -> list[tuple[int, int | None]]:
    """(index, neighbour index or None) in computing order: outward from the point nearest `start_near`."""
    if not distances:
        return []
    start = min(range(len(distances)), key=lambda k: (abs(distances[k] - start_near), k))
    order: list[tuple[int, int | None]] = [(start, None)]
    order += [(k, k - 1) for k in range(start + 1, len(distances))]
    order += [(k, k + 1) for k in range(start - 1, -1, -1)]
    return order


# ----------------------------------------------------------------------
# hashes
# ----------------------------------------------------------------------
def _digest(obj: Any) -> str:
    from dm21cli.outputs import to_builtin

    text = json.dumps(to_builtin(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _physics(resolved: dict) -> dict:
    """The parts of a resolved input that decide a result (no names, folders, resources, guess)."""
    d = {k: v for k, v in resolved.items() if k not in ("job", "resources")}
    d["scf"] = {k: v for k, v in d.get("scf", {}).items() if k != "guess"}
    return d


def point_hash(spec) -> str:
    """SHA-256 of a point's resolved input, as stored in its `POINT_FILE`."""
    return _digest(_physics(spec.to_resolved_dict()))


# ----------------------------------------------------------------------
# the plan
# ----------------------------------------------------------------------
@dataclasses.dataclass
class ScanPoint:
    """One single point of the curve."""

    functional: str
    index: int
    distance_angstrom: float
    directory: Path
    data: dict  # resolved input of the point, without scf.guess
    hash: str

    @property
    def label(self) -> str:
        return f"{self.functional} {self.distance_angstrom:.3f} A"


@dataclasses.dataclass
class Reference:
    """A separated fragment (the dissociation limit)."""

    functional: str
    role: str  # "fixed" | "moving"
    atoms: list[int]  # 0-based
    charge: int
    multiplicity: int
    nelectron: int
    directory: Path
    data: dict | None  # None: no electrons, energy 0
    hash: str | None


@dataclasses.dataclass
class ScanPlan:
    """Everything `run_scan` needs, fully validated before anything is computed."""

    spec: Any  # the base JobSpec
    scan_dir: Path
    distances: list[float]
    pair: tuple[int, int]  # 0-based
    moving: list[int]  # 0-based
    functionals: list[str]
    equilibrium_angstrom: float
    order: list[tuple[int, int | None]]
    points: dict[str, list[ScanPoint]]
    references: dict[str, list[Reference]]
    broken_symmetry: bool
    definition: dict
    definition_hash: str

    @property
    def fixed(self) -> list[int]:
        return [k for k in range(self.spec.molecule.natm) if k not in self.moving]

    def all_points(self) -> list[ScanPoint]:
        return [p for f in self.functionals for p in self.points[f]]


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "functional"


def point_dirname(distance_angstrom: float) -> str:
    """The directory name of the point at this distance, e.g. ``point-02.500A``.

    Named by the distance alone (not by its index in the sorted list), so a
    point is found again whatever the other distances of the scan are.  Three
    decimals keep distances at least `MIN_SPACING_ANGSTROM` apart (all that
    `parse_distances` accepts) on distinct names; two integer digits make a
    directory listing sort by distance up to 99.999 Angstrom.
    """
    return f"point-{distance_angstrom:06.3f}A"


def _neighbour_text(distance_angstrom: float) -> str:
    return f"point at {distance_angstrom:.3f} A"


def _build_spec(data: dict, base, where: dict, context: str):
    """A validated JobSpec from a resolved-input dict; errors are located at `where`."""
    return _build_spec_from(data, base.source_path, base.job.name, where, context)


def _build_spec_from(data: dict, source_path: Path | None, default_name: str, where: dict,
                     context: str):
    from pydantic import ValidationError

    from dm21cli.inputs import JobSpec, _Meta, validate_job

    ctx = {"base_dir": source_path.parent if source_path else Path("."),
           "file": None, "default_name": default_name}
    try:
        spec = JobSpec.model_validate(data, context=ctx)
        spec._source_path = source_path
        spec._meta = _Meta(file=None)
        validate_job(spec)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise InputError(f"{context}: {first.get('msg', 'invalid')}", **where) from None
    except InputError as exc:
        raise InputError(f"{context}: {exc.message}", **where) from None
    return spec


def _point_data(base, functional: str, coords_angstrom: np.ndarray, name: str, directory: Path,
                broken_symmetry: bool, atoms: list[int] | None = None,
                charge: int | None = None, multiplicity: int | None = None) -> dict:
    """Resolved input of one point (or fragment) derived from the base job."""
    d = base.to_resolved_dict()
    d.pop("scan", None)
    symbols = base.molecule.symbols
    keep = range(len(symbols)) if atoms is None else atoms
    d["job"] = {"name": name, "output_dir": str(directory)}
    d["molecule"] = {
        "xyz": "".join(f"{symbols[k]} {float(coords_angstrom[k][0])!r} "
                       f"{float(coords_angstrom[k][1])!r} {float(coords_angstrom[k][2])!r}\n"
                       for k in keep),
        "units": "angstrom",
        "charge": base.molecule.charge if charge is None else charge,
        "multiplicity": base.molecule.multiplicity if multiplicity is None else multiplicity,
    }
    d["functional"] = functional
    # thresholds as the user gave them: null takes the point functional's own default
    d["scf"]["conv_tol"] = base.scf.conv_tol
    d["scf"]["conv_tol_grad"] = base.scf.conv_tol_grad
    d["scf"]["restricted"] = base.scf.restricted
    if broken_symmetry:
        d["scf"]["restricted"] = False
    if atoms is not None and base.scf.restricted is True:
        d["scf"]["restricted"] = None  # a fragment may be open-shell
    if not base.scf.guess_is_chkfile():
        d["scf"]["guess"] = base.scf.guess
    return d


def plan_scan(spec, *, functionals: list[str] | None = None, output_dir: str | None = None) -> ScanPlan:
    """Validate the scan of `spec` (a JobSpec with a ``scan`` section) and build its plan.

    functionals: overrides ``scan.functionals`` / ``functional``;
    output_dir: the scan directory (default: the job's output path).
    Raises InputError (naming file, line and field) for every problem.
    """
    from dm21cli.inputs import ScanSettings

    meta = spec._meta
    scan = spec.scan if spec.scan is not None else ScanSettings()
    if spec.molecule.natm < 2:
        raise InputError(f"a scan needs at least two atoms; the molecule has {spec.molecule.natm}",
                         **meta.locate(("molecule",)))
    if scan.distances is None:
        raise InputError("no distances to scan: give --distance START:STOP:STEP or a list, or "
                         "scan.distances in the job file", **meta.locate(("scan", "distances")))
    if functionals:
        from dm21cli.inputs import _check_functional, _xc_problem, DM21_FUNCTIONALS

        names = []
        for name in functionals:
            try:
                name = _check_functional(name)
            except ValueError as exc:
                raise InputError(str(exc), field="--functional") from None
            if name not in DM21_FUNCTIONALS and _xc_problem(name):
                raise InputError(_xc_problem(name), field="--functional")
            names.append(name)
    else:
        names = list(scan.functionals or [spec.functional])
    names = list(dict.fromkeys(names))
    dirnames = [_safe_name(n) for n in names]
    if len(set(d.lower() for d in dirnames)) != len(dirnames):
        raise InputError(f"functionals {', '.join(names)} would share a directory name",
                         **meta.locate(("scan", "functionals")))

    pair = (scan.atoms[0] - 1, scan.atoms[1] - 1)
    moving = sorted(k - 1 for k in (scan.fragment or [scan.atoms[1]]))
    symbols = spec.molecule.symbols
    coords = spec.molecule.coords_angstrom()
    r_eq = equilibrium_estimate_angstrom(symbols[pair[0]], symbols[pair[1]])
    distances = list(scan.distances)
    order = walk_order(distances, r_eq)
    scan_dir = Path(output_dir) if output_dir else spec.output_path()
    where = meta.locate(("scan", "distances"))
    names_seen: dict[str, float] = {}
    for dist in distances:  # cannot happen for distances parse_distances accepts; never share one
        other = names_seen.setdefault(point_dirname(dist), dist)
        if other != dist:
            raise InputError(f"distances {other:g} and {dist:g} would share the point directory "
                             f"{point_dirname(dist)} (keep them at least 0.001 Angstrom apart)", **where)

    points: dict[str, list[ScanPoint]] = {}
    for name, dirname in zip(names, dirnames):
        row = []
        for index, dist in enumerate(distances):
            directory = scan_dir / dirname / point_dirname(dist)
            new = displaced_coords(coords, pair, moving, dist)
            data = _point_data(spec, name, new, f"{spec.job.name}-{dirname}-{dist:.3f}A", directory,
                               scan.broken_symmetry)
            pspec = _build_spec(data, spec, where, f"{name} at {dist:g} Angstrom")
            row.append(ScanPoint(name, index, dist, directory, data, point_hash(pspec)))
        points[name] = row

    references: dict[str, list[Reference]] = {}
    if scan.reference_atoms:
        fixed = [k for k in range(len(symbols)) if k not in moving]
        from dm21cli import elements

        for name, dirname in zip(names, dirnames):
            refs = []
            for slot, (role, atoms) in enumerate((("fixed", fixed), ("moving", moving))):
                protons = sum(elements.atomic_number(symbols[k]) for k in atoms)
                if scan.reference_charges is not None:
                    charge = scan.reference_charges[slot]
                else:
                    charge = spec.molecule.charge if role == "fixed" else 0
                nelec = protons - charge
                if scan.reference_multiplicities is not None:
                    mult = scan.reference_multiplicities[slot]
                else:
                    mult = 1 + nelec % 2 if nelec >= 0 else 1
                field = ("scan", "reference_charges" if scan.reference_charges is not None
                         else "reference_atoms")
                if nelec < 0:
                    raise InputError(f"the {role} fragment ({elements.hill_formula([symbols[k] for k in atoms])}) "
                                     f"with charge {charge} has {nelec} electrons", **meta.locate(field))
                if scan.reference_multiplicities is not None:
                    field = ("scan", "reference_multiplicities")
                directory = scan_dir / dirname / f"reference-{role}"
                if nelec == 0:
                    refs.append(Reference(name, role, atoms, charge, mult, 0, directory, None, None))
                    continue
                data = _point_data(spec, name, coords, f"{spec.job.name}-{dirname}-{role}", directory,
                                   False, atoms=atoms, charge=charge, multiplicity=mult)
                rspec = _build_spec(data, spec, meta.locate(field), f"{name}, {role} fragment")
                refs.append(Reference(name, role, atoms, charge, mult, nelec, directory, data,
                                      point_hash(rspec)))
            references[name] = refs

    definition = {
        "input": _physics({k: v for k, v in spec.to_resolved_dict().items() if k != "scan"}),
        "distances_angstrom": distances, "atoms": [pair[0] + 1, pair[1] + 1],
        "fragment": [k + 1 for k in moving], "functionals": names,
        "broken_symmetry": scan.broken_symmetry, "reference_atoms": scan.reference_atoms,
        "reference_charges": scan.reference_charges,
        "reference_multiplicities": scan.reference_multiplicities,
    }
    return ScanPlan(spec=spec, scan_dir=scan_dir, distances=distances, pair=pair, moving=moving,
                    functionals=names, equilibrium_angstrom=r_eq, order=order, points=points,
                    references=references, broken_symmetry=scan.broken_symmetry,
                    definition=definition, definition_hash=_digest(definition))


# ----------------------------------------------------------------------
# records and the report
# ----------------------------------------------------------------------
CSV_COLUMNS = [
    "functional", "index", "distance_angstrom", "status", "converged", "energy_hartree",
    "relative_energy_hartree", "nuclear_repulsion_energy_hartree", "one_electron_energy_hartree",
    "coulomb_energy_hartree", "xc_energy_hartree", "dispersion_energy_hartree",
    "charge_moving_fragment", "charge_fixed_fragment", "s_squared", "homo_lumo_gap_hartree",
    "scf_cycles", "scf_attempts", "wall_time_s", "reused", "guess", "directory",
]


def _record(point: ScanPoint, result: dict | None, moving: list[int], *, reused: bool,
            guess: str | None, status: str | None = None, error: str | None = None) -> dict:
    props = (result or {}).get("properties") or {}
    charges = props.get("mulliken_charges")
    q_moving = q_fixed = None
    if charges:
        q_moving = float(sum(charges[k] for k in moving))
        q_fixed = float(sum(c for k, c in enumerate(charges) if k not in moving))
    return {
        "functional": point.functional, "index": point.index,
        "distance_angstrom": point.distance_angstrom,
        "status": status or (result or {}).get("status") or "failed",
        "converged": bool((result or {}).get("converged", False)),
        "energy_hartree": (result or {}).get("return_energy"),
        "relative_energy_hartree": None,
        "nuclear_repulsion_energy_hartree": props.get("nuclear_repulsion_energy"),
        "one_electron_energy_hartree": props.get("scf_one_electron_energy"),
        "coulomb_energy_hartree": props.get("scf_coulomb_energy"),
        "xc_energy_hartree": props.get("scf_xc_energy"),
        "dispersion_energy_hartree": props.get("dispersion_energy"),
        "charge_moving_fragment": q_moving, "charge_fixed_fragment": q_fixed,
        "s_squared": props.get("s_squared"),
        "homo_lumo_gap_hartree": props.get("homo_lumo_gap_hartree"),
        "scf_cycles": props.get("scf_iterations"),
        "scf_attempts": len(props["scf_attempts"]) if props.get("scf_attempts") else None,
        "wall_time_s": ((result or {}).get("timings_s") or {}).get("total"),
        "reused": reused, "guess": guess,
        "directory": str(point.directory),
        "error": error or (((result or {}).get("error") or {}).get("error_message")
                           if not (result or {}).get("converged") else None),
    }


@dataclasses.dataclass
class ScanReport:
    """Counts of the scan's points; decides the exit status (like black's report)."""

    records: list[dict]
    references: dict[str, dict] = dataclasses.field(default_factory=dict)
    #: points the scan should have (None: as many as records); the rest are missing
    expected: int | None = None

    @property
    def missing(self) -> int:
        return 0 if self.expected is None else max(0, self.expected - len(self.records))

    @property
    def converged(self) -> int:
        return sum(1 for r in self.records if r["converged"])

    @property
    def not_converged(self) -> int:
        return sum(1 for r in self.records if r["status"] == "not-converged")

    @property
    def failed(self) -> int:
        return sum(1 for r in self.records if not r["converged"] and r["status"] != "not-converged")

    @property
    def reused(self) -> int:
        return sum(1 for r in self.records if r["reused"])

    @property
    def exit_status(self) -> ExitStatus:
        if self.failed:
            return ExitStatus.COMPUTE_ERROR
        if self.not_converged or self.missing:
            return ExitStatus.NOT_CONVERGED
        return ExitStatus.SUCCESS

    def summary_line(self) -> str:
        parts = [f"{self.converged} converged"]
        if self.not_converged:
            parts.append(f"{self.not_converged} not converged")
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.missing:
            parts.append(f"{self.missing} missing (not computed yet)")
        text = f"{len(self.records) + self.missing} points: " + ", ".join(parts)
        if self.reused:
            text += f" ({self.reused} read from disk)"
        return text


# ----------------------------------------------------------------------
# running
# ----------------------------------------------------------------------
def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _finished(directory: Path, expected_hash: str) -> dict | None:
    """The stored result of a finished point with this input hash, else None."""
    info = _read_json(directory / POINT_FILE)
    if not info or info.get("hash") != expected_hash or (directory / ".running").exists():
        return None
    result = _read_json(directory / "result.json")
    if not result or result.get("status") not in FINISHED:
        return None
    return result


class _ScanLog:
    def __init__(self, path: Path, reporter: Reporter | None):
        self.path = path
        self.reporter = reporter

    def __call__(self, message: str) -> None:
        import datetime

        stamp = datetime.datetime.now().strftime("%H:%M:%S")
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"[dm21 scan {stamp}] {message}\n")
        if self.reporter is not None:
            self.reporter(message)


def _check_scan_dir(plan: ScanPlan, overwrite: bool) -> None:
    scan_dir = plan.scan_dir
    if not scan_dir.exists():
        return
    if not scan_dir.is_dir():
        raise OutputExistsError(f"scan directory {scan_dir} exists and is not a directory")
    stored = _read_json(scan_dir / FILES["definition"])
    if stored is None:
        # another --point task may be creating the same scan right now: only foreign files count
        ours = set(FILES.values()) | {_safe_name(f) for f in plan.functionals}
        foreign = [p for p in scan_dir.iterdir() if not p.name.startswith(".") and p.name not in ours]
        if foreign and not overwrite:
            raise OutputExistsError(f"output directory {scan_dir} already holds files that are not "
                                    f"from a scan (use --overwrite, or -o / --name for another directory)")
        return
    if stored.get("hash") != plan.definition_hash and not overwrite:
        raise OutputExistsError(
            f"scan directory {scan_dir} holds a scan of a different input (definition hash "
            f"{str(stored.get('hash'))[:12]} != {plan.definition_hash[:12]}); use --overwrite to "
            f"replace it (points with unchanged inputs are kept), or -o for another directory")


def _mixed_guess_chkfile(spec, path: Path, source: Path | None = None) -> None:
    """Write a chkfile with a broken-symmetry (HOMO/LUMO mixed) UHF guess for `spec`.

    The orbitals mixed are those of the chkfile `source` (a converged
    neighbour; its alpha set), else of a Hartree-Fock Fock matrix built on the
    minimal-basis atomic guess.
    """
    from pyscf import scf
    from pyscf.scf import chkfile

    from dm21cli.runner import build_molecule

    if source is not None:
        mol, rec = chkfile.load_scf(str(source))
        mo_coeff, mo_occ = np.asarray(rec["mo_coeff"]), np.asarray(rec["mo_occ"])
        mo_energy = np.asarray(rec["mo_energy"])
        if mo_occ.ndim == 2:  # unrestricted: take the alpha set
            mo_coeff, mo_occ, mo_energy = mo_coeff[0], mo_occ[0], mo_energy[0]
        mo_occ = (mo_occ > 0).astype(float) * 2
    else:
        mol = build_molecule(spec)
        mf = scf.RHF(mol)
        dm = mf.get_init_guess(key="minao")
        mo_energy, mo_coeff = mf.eig(mf.get_fock(dm=dm), mf.get_ovlp())
        mo_occ = mf.get_occ(mo_energy, mo_coeff)
    homo = int(np.flatnonzero(mo_occ > 0)[-1])
    lumo = homo + 1
    occ = (mo_occ > 0).astype(float)
    ca, cb = mo_coeff.copy(), mo_coeff.copy()
    if lumo < mo_coeff.shape[1]:
        h, l = mo_coeff[:, homo], mo_coeff[:, lumo]
        ca[:, homo], ca[:, lumo] = (h + l) / math.sqrt(2), (l - h) / math.sqrt(2)
        cb[:, homo], cb[:, lumo] = (h - l) / math.sqrt(2), (l + h) / math.sqrt(2)
    chkfile.dump_scf(mol, str(path), 0.0, np.array([mo_energy, mo_energy]),
                     np.array([ca, cb]), np.array([occ, occ]))


def _run_one(data: dict, plan: ScanPlan, guess: Path | None, label: str, checkpoints, detail):
    """run_job for one point/fragment; returns (result or None, error message or None)."""
    from dm21cli.runner import run_job

    data = json.loads(json.dumps(data))
    if guess is not None:  # absolute: relative guess paths are read against the input's folder
        data["scf"]["guess"] = str(Path(guess).resolve())
    spec = _build_spec(data, plan.spec, plan.spec._meta.locate(("scan", "distances")), label)
    try:
        # PySCF prints a warning to stdout when a chkfile guess comes from another
        # geometry (always the case here); stdout must stay clean for --json.
        with contextlib.redirect_stdout(io.StringIO()):
            return run_job(spec, checkpoints=checkpoints, overwrite=True, reporter=detail), None
    except ComputeError as exc:
        return _read_json(spec.output_path() / "result.json"), str(exc)


def run_scan(plan: ScanPlan, *, checkpoints=None, overwrite: bool = False,
             reporter: Reporter | None = None, detail: Reporter | None = None,
             plot: bool = True, workers: int = 1, point: int | None = None,
             dask: str | None = None) -> ScanReport:
    """Compute the plan's points (reusing finished ones) and write the curve files.

    reporter: one line per point; detail: every log line of every point's run
    (serial runs only).  workers > 1: the points run in that many processes,
    each from its own default guess, with the threads and memory divided among
    them.  point: compute only the point with this index (0-based, in the
    sorted distance list) for every functional, from its default guess; index
    0 also computes the reference fragments; the curve files are not written
    (`collect_scan` assembles them).  dask: address of a Dask scheduler that
    computes the points (independent guesses; each worker resolves its own
    threads and memory unless the job sets them).  A point that does not converge, or fails
    inside PySCF, is recorded and the scan goes on.  KeyboardInterrupt
    (SIGINT/SIGTERM) stops it: the curve files are written for the finished
    points and the exception propagates.
    """
    from dm21cli import outputs as out

    if point is not None and not 0 <= point < len(plan.distances):
        raise InputError(f"point {point} does not exist: the scan has {len(plan.distances)} "
                         f"distances (indices 0 to {len(plan.distances) - 1})", field="--point")
    if workers < 1:
        raise InputError(f"must be at least 1, got {workers}", field="--workers")
    if workers > 1 and point is None and not dask and not hasattr(os, "posix_spawn"):
        raise InputError("worker processes need os.posix_spawn (Linux, macOS); use --point or --dask",
                         field="--workers")
    _check_scan_dir(plan, overwrite)
    try:
        plan.scan_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # read-only, no permission, a file in the way, disk full
        reraise_os_error(exc, plan.scan_dir, "creating")
    log = _ScanLog(plan.scan_dir / FILES["log"], reporter)
    out.write_json_atomic(plan.scan_dir / FILES["definition"],
                          {"hash": plan.definition_hash, "definition": plan.definition})
    if point is not None:
        targets = [(f, point, None) for f in plan.functionals]
    elif workers > 1 or dask:
        targets = [(f, k, None) for f in plan.functionals for k, _ in plan.order]
    else:
        targets = [(f, k, nb) for f in plan.functionals for k, nb in plan.order]
    log(f"scan of {plan.spec.molecule.formula()}: {len(plan.distances)} distances x "
        f"{len(plan.functionals)} functional(s) in {plan.scan_dir}"
        + (f"; point {point} only" if point is not None else
           f"; Dask scheduler {dask}" if dask else
           f"; {workers} workers" if workers > 1 else
           f"; starting at {plan.distances[plan.order[0][0]]:g} A (covalent-radius estimate "
           f"{plan.equilibrium_angstrom:.3f} A)"))
    records: dict[tuple[str, int], dict] = {}
    references: dict[str, dict] = {}
    progress = _Progress(len(targets), log)
    try:
        pending = []
        for functional, index, neighbour in targets:
            pt = plan.points[functional][index]
            if _reuse(plan, pt, records, progress):
                continue
            pending.append((pt, neighbour))
            if workers == 1 and not dask:
                _serial_point(plan, pt, neighbour, records, checkpoints, detail, progress)
        if dask and pending:
            _dask_points(plan, [p for p, _ in pending], records, dask, checkpoints, progress)
        elif workers > 1 and pending:
            _parallel_points(plan, [p for p, _ in pending], records, workers, checkpoints, progress)
        if point is None or point == 0:
            for functional in plan.functionals:
                references[functional] = _run_references(plan, functional, checkpoints, detail, log)
    except KeyboardInterrupt:
        with interrupts.deferred():  # a second signal waits for the curve files
            interrupts.acknowledge()
            log("interrupted: finished points are kept; run the same command again to continue")
            if point is None:
                report = ScanReport(_ordered(plan, records), references)
                _write_curves(plan, report, plot=False)
        raise
    report = ScanReport(_ordered(plan, records), references)
    if point is None:
        _write_curves(plan, report, plot=plot)
    log(f"scan finished: {report.summary_line()}")
    return report


class _Progress:
    def __init__(self, total: int, log):
        self.total, self.done, self.log = total, 0, log

    def __call__(self, label: str, message: str, count: bool = True) -> None:
        if count:
            self.done += 1
        self.log(f"[{self.done + (0 if count else 1)}/{self.total}] {label}: {message}")


def _reuse(plan: ScanPlan, pt: ScanPoint, records: dict, progress: _Progress) -> bool:
    stored = _finished(pt.directory, pt.hash)
    if stored is None:
        return False
    info = _read_json(pt.directory / POINT_FILE) or {}
    records[(pt.functional, pt.index)] = _record(pt, stored, plan.moving, reused=True,
                                                 guess=info.get("guess"))
    progress(pt.label, f"read from disk ({'converged' if stored.get('converged') else 'NOT converged'})")
    return True


def _point_info(pt: ScanPoint, guess: str) -> dict:
    """The `POINT_FILE` of a point, without its status.

    No index: the same directory serves every scan definition that holds
    this distance, at whatever position in its sorted list.
    """
    return {"hash": pt.hash, "functional": pt.functional, "distance_angstrom": pt.distance_angstrom,
            "guess": guess}


def _store(plan: ScanPlan, pt: ScanPoint, result: dict | None, error: str | None, guess: str,
           records: dict, progress: _Progress, seconds: float) -> None:
    from dm21cli import outputs as out

    rec = _record(pt, result, plan.moving, reused=False, guess=guess,
                  status=None if error is None else "failed", error=error)
    records[(pt.functional, pt.index)] = rec
    if pt.directory.is_dir():  # (not when a worker died before run_job made it)
        out.write_json_atomic(pt.directory / POINT_FILE, {**_point_info(pt, guess), "status": rec["status"]})
    energy = "n/a" if rec["energy_hartree"] is None else f"{rec['energy_hartree']:.8f} Ha"
    progress(pt.label, f"{rec['status']}, E = {energy} ({seconds:.1f} s)")


def _serial_point(plan, pt, neighbour, records, checkpoints, detail, progress) -> None:
    guess_path, guess = _choose_guess(plan, pt, neighbour, records)
    progress(pt.label, f"computing (guess: {guess})", count=False)
    t0 = time.perf_counter()
    with _scratch_guess(plan, pt, guess_path, guess) as usable:
        result, error = _run_one(pt.data, plan, usable, pt.label, checkpoints, detail)
    _store(plan, pt, result, error, guess, records, progress, time.perf_counter() - t0)


def _parallel_points(plan, pending, records, workers, checkpoints, progress) -> None:
    """Run `pending` points in `workers` processes of our own, each from its default guess.

    Each worker process (`_WorkerProcess`, running `_worker_main`) takes one
    point at a time over a pipe and answers with its result; a worker with
    no point left is told to end.  Any exception here, above all the
    KeyboardInterrupt of SIGINT/SIGTERM, stops the workers (`_stop_workers`:
    a busy one marks its point ``interrupted``, the others end; points that
    finish meanwhile are stored; whatever has not ended after
    `WORKER_GRACE_S` is killed) and then propagates.
    """
    from dm21cli import resources

    res = resources.resolve(plan.spec.resources.threads, plan.spec.memory_mb())
    workers = min(workers, len(pending))
    threads = max(1, res["threads"] // workers)
    memory = max(1, res["memory_mb"] // workers)
    progress.log(f"{len(pending)} points on {workers} worker processes, {threads} thread(s) and "
                 f"{memory} MB each")
    source = str(plan.spec.source_path) if plan.spec.source_path else None
    queue = list(pending)
    procs: list[_WorkerProcess] = []

    def store(proc: _WorkerProcess, reply: tuple) -> None:
        pt, t0 = proc.point, proc.started
        proc.point = None
        if reply[0] == "done":
            _store(plan, pt, reply[1], reply[2], "default", records, progress, time.monotonic() - t0)

    def next_point(proc: _WorkerProcess) -> None:
        if not queue:
            proc.close_tasks()  # nothing left: the worker ends
            return
        pt = queue.pop(0)
        data = json.loads(json.dumps(pt.data))
        data["resources"] = {"threads": threads, "memory": memory}
        proc.give(pt, (data, source, plan.spec.job.name, pt.label, checkpoints, _point_info(pt, "default")))
        progress.log(f"{pt.label}: computing in worker process {proc.slot} (pid {proc.pid})")

    def start(slot: int) -> None:
        proc = _WorkerProcess(slot)
        procs.append(proc)  # before the process exists: its pipes are closed whatever happens
        proc.start()

    try:
        for slot in range(1, workers + 1):
            start(slot)
        while any(p.alive for p in procs):
            for proc in _ready(procs, None):
                reply = proc.receive()
                if reply is None:  # the process ended
                    why = proc.reap()
                    if proc.stopped_by_signal() and (proc.point is not None or not proc.was_ready):
                        raise KeyboardInterrupt(f"worker process {proc.slot} {why}")
                    if not proc.was_ready:
                        raise ComputeError(f"worker process {proc.slot} could not start ({why})")
                    if proc.point is not None:  # killed (out of memory?) or crashed: the point failed
                        store(proc, ("done", None, f"worker process {proc.slot} {why} during the point"))
                        if queue:
                            start(proc.slot)
                elif reply[0] == "ready":
                    next_point(proc)
                elif reply[0] == "raise":
                    raise reply[1]
                elif reply[0] == "interrupted":  # the worker itself got SIGINT/SIGTERM
                    raise KeyboardInterrupt(f"worker process {proc.slot} was interrupted")
                else:
                    store(proc, reply)
                    next_point(proc)
    except BaseException:
        _stop_workers(procs, store)
        raise
    finally:
        for proc in procs:
            proc.close()


def _ready(procs: list, timeout: float | None) -> list:
    """The live worker processes with a reply (or their end) to read."""
    from multiprocessing.connection import wait

    by_conn = {p.results: p for p in procs if p.alive}
    return [by_conn[c] for c in wait(list(by_conn), timeout)] if by_conn else []


def _stop_workers(procs: list, store) -> None:
    """End every worker process within about `WORKER_GRACE_S` seconds, whatever happens.

    SIGTERM to each: a busy worker raises KeyboardInterrupt inside run_job
    (which writes ``status: interrupted``, or the point's result if it had
    finished) and answers; an idle or starting one ends at once (a starting
    one has SIGTERM blocked until its handler is in place, so it is not
    lost).  Finished points that arrive meanwhile go to `store`.  After the
    grace time, or at once on another SIGINT/SIGTERM here, the rest are
    killed (SIGKILL); their points stay unfinished (``.running``) and are
    recomputed by the next run.
    """
    import signal

    for proc in procs:
        proc.close_tasks()
        proc.kill(signal.SIGTERM)
    deadline = time.monotonic() + WORKER_GRACE_S
    while any(p.alive for p in procs):
        try:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                for proc in procs:
                    proc.kill(signal.SIGKILL)
                for proc in procs:
                    proc.reap(timeout=5.0)
                return
            for proc in _ready(procs, min(remaining, 0.5)):
                reply = proc.receive()
                if reply is None:
                    proc.reap(timeout=5.0)
                elif reply[0] == "done":
                    store(proc, reply)
        except KeyboardInterrupt:
            deadline = 0.0  # a second signal: do not wait any longer


class _WorkerProcess:
    """One worker process of `_parallel_points`, as seen from the scan's process.

    Started with ``os.posix_spawn`` (a fresh Python running `_worker_main`,
    SIGINT and SIGTERM blocked until the worker's own handler is installed),
    in the scan's process group, talking over two pipes: tasks in, replies
    out (pickled by multiprocessing's Connection).  The scan reaps it itself,
    so its pid is never signalled after it has been reused.
    """

    def __init__(self, slot: int):
        from multiprocessing.connection import Connection

        self.slot = slot
        self.pid: int | None = None
        self.point: ScanPoint | None = None
        self.started = 0.0
        self.was_ready = False
        self.alive = True  # until its end has been seen (end of the reply pipe)
        self.returncode: int | None = None  # -N: killed by signal N
        task_r, task_w = os.pipe()
        self.tasks = Connection(task_w, readable=False)
        self._child_fds = [task_r]
        reply_r, reply_w = os.pipe()
        self.results = Connection(reply_r, writable=False)
        self._child_fds.append(reply_w)

    def start(self) -> None:
        import signal
        import sys

        task_r, reply_w = self._child_fds
        code = ("import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
                "from dm21cli.scan import _worker_main; "
                "sys.exit(_worker_main(*map(int, sys.argv[2:])))")
        try:
            for fd in self._child_fds:  # only for this spawn (other workers must not hold them)
                os.set_inheritable(fd, True)
            self.pid = os.posix_spawn(
                sys.executable, [sys.executable, "-c", code, json.dumps([str(p) for p in sys.path]), str(task_r), str(reply_w),
                                 str(os.getpid())],
                os.environ, file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)],
                setsigmask={signal.SIGINT, signal.SIGTERM})
        finally:
            self._close_child_fds()

    def _close_child_fds(self) -> None:
        while self._child_fds:
            with contextlib.suppress(OSError):
                os.close(self._child_fds.pop())

    def give(self, pt: ScanPoint, task: tuple) -> None:
        self.point, self.started = pt, time.monotonic()
        with contextlib.suppress(OSError):  # it has just died: its end shows on the reply pipe
            self.tasks.send(task)

    def receive(self) -> tuple | None:
        """The next reply; None once the process has ended (its reply pipe closed)."""
        try:
            reply = self.results.recv()
        except (EOFError, OSError):
            self.alive = False
            return None
        if reply[0] == "ready":
            self.was_ready = True
            self.pid = self.pid or reply[1]
        return reply

    def close_tasks(self) -> None:
        """No more points: the worker ends once it has read everything sent."""
        with contextlib.suppress(OSError):
            self.tasks.close()

    def kill(self, signum: int) -> None:
        if self.pid is not None and self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def reap(self, timeout: float = 5.0) -> str:
        """Wait (at most `timeout` s) for the process to end; says how it ended."""
        self.alive = False
        deadline = time.monotonic() + timeout
        while self.pid is not None and self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() >= deadline:
                return "still running"
            time.sleep(0.01)
        code = self.returncode
        if code is None:
            return "ended"
        if code < 0:
            import signal

            return f"killed by signal {signal.Signals(-code).name}"
        return f"ended with exit status {code}"

    def stopped_by_signal(self) -> bool:
        """Ended by SIGINT or SIGTERM (directly, or in its handler: exit status 128 + N)."""
        import signal

        stops = (signal.SIGINT, signal.SIGTERM)
        return self.returncode is not None and (-self.returncode in stops
                                                or self.returncode - 128 in stops)

    def close(self) -> None:
        self._close_child_fds()
        for conn in (self.tasks, self.results):
            with contextlib.suppress(OSError):
                conn.close()


def _store_finished(plan, futures: dict, finished, records, progress, who: str) -> None:
    """Store each point as its Dask future finishes (futures: future -> (point, start time)).

    finished: the as-completed iterator; who names the workers in the
    KeyboardInterrupt raised when one of them was interrupted.
    """
    for future in finished:
        pt, t0 = futures[future]
        result, error = future.result()
        if error == "interrupted":
            raise KeyboardInterrupt(f"{who} was interrupted")
        _store(plan, pt, result, error, "default", records, progress, time.perf_counter() - t0)


def _dask_points(plan, pending, records, address, checkpoints, progress) -> None:
    """Send `pending` points to the Dask scheduler at `address`; each from its default guess."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise InputError("needs the 'distributed' package: pip install 'dask[distributed]'",
                         field="--dask") from None
    try:
        client = Client(address, timeout="30s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(f"cannot connect to the Dask scheduler at {address}: {exc}",
                         field="--dask") from None
    futures: dict = {}
    try:
        workers = len(client.scheduler_info().get("workers", {}))
        progress.log(f"{len(pending)} points on the Dask scheduler {address} ({workers} workers)")
        source = str(plan.spec.source_path) if plan.spec.source_path else None
        chk = str(Path(checkpoints).absolute()) if checkpoints else None
        for pt in pending:
            data = json.loads(json.dumps(pt.data))
            data["job"]["output_dir"] = str(pt.directory.absolute())  # workers have their own cwd
            future = client.submit(_worker_run, data, source, plan.spec.job.name, pt.label, chk, False,
                                   _point_info(pt, "default"), pure=False,
                                   key=f"dm21-scan-{pt.functional}-{pt.index}-{pt.hash[:16]}")
            futures[future] = (pt, time.perf_counter())
        _store_finished(plan, futures, as_completed(list(futures)), records, progress, "a Dask worker")
    except BaseException:
        with contextlib.suppress(Exception):
            client.cancel(list(futures))
        raise
    finally:
        with contextlib.suppress(Exception):
            client.close()


#: a worker process's state, for its signal handler (see `_worker_main`)
_WORKER = {"idle": True, "stop": 0, "interrupted": False}


class _WorkerStop(BaseException):
    """SIGINT/SIGTERM in an idle worker process: it ends."""


def _inside_run_job(frame) -> bool:
    import sys

    runner = sys.modules.get("dm21cli.runner")  # (no import in a signal handler)
    if runner is None:
        return False
    code = runner.run_job.__code__
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def _worker_signal(signum, frame) -> None:
    """SIGINT/SIGTERM in a worker process.

    Idle: the worker ends.  Busy: the first signal raises KeyboardInterrupt if
    it lands inside run_job (which then marks the point ``interrupted``);
    one landing outside it (the point not yet started, or finished and being
    reported) only asks the worker to end after the point (`_worker_check`
    raises it at run_job's first log line).  Further signals change nothing:
    they must not break the writing of the interrupted status.
    """
    _WORKER["stop"] = _WORKER["stop"] or signum
    if _WORKER["idle"]:
        raise _WorkerStop
    if not _WORKER["interrupted"] and _inside_run_job(frame):
        _WORKER["interrupted"] = True
        raise KeyboardInterrupt(f"terminated by signal {signum}")


def _worker_check(message: str) -> None:
    """Reporter of run_job in a worker process: a stop asked before run_job began takes effect."""
    if _WORKER["stop"] and not _WORKER["interrupted"]:
        _WORKER["interrupted"] = True
        raise KeyboardInterrupt(f"terminated by signal {_WORKER['stop']}")


def _worker_main(task_fd: int, reply_fd: int, scan_pid: int) -> int:
    """A worker process of `_parallel_points`: points from `task_fd`, replies to `reply_fd`.

    Replies: ("ready", pid) once; then per point ("done", result, error)
    or ("interrupted",), or ("raise", exception) for an error that stops
    the scan.  Ends at the end of the task pipe, or on SIGINT/SIGTERM
    (exit status 128 + the signal).  The process starts with both signals
    blocked; they are unblocked once the handler is in place, so a signal
    that arrived while Python was starting is handled now.  A signal the
    scan's process ignores (SIG_IGN is inherited) stays ignored.  If the
    scan's process `scan_pid` dies (SIGKILL), the worker sends itself
    SIGTERM within a second: its point is marked interrupted, not computed
    on for nobody.
    """
    import signal
    import threading
    from multiprocessing.connection import Connection

    def watch_scan_process() -> None:
        while os.getppid() == scan_pid:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    tasks = Connection(task_fd, writable=False)
    replies = Connection(reply_fd, readable=False)
    stops = {signal.SIGINT, signal.SIGTERM}
    try:
        for signum in stops:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, _worker_signal)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
        threading.Thread(target=watch_scan_process, name="dm21-scan-watch", daemon=True).start()
        replies.send(("ready", os.getpid()))
        while not _WORKER["stop"]:
            try:
                task = tasks.recv()
            except EOFError:
                return 0
            _WORKER["idle"] = False
            replies.send(_worker_task(task))
            _WORKER["idle"] = True
    except _WorkerStop:
        pass
    except (BrokenPipeError, EOFError):  # the scan's process has gone
        return 1
    return 128 + int(_WORKER["stop"])


def _worker_task(task: tuple) -> tuple:
    data, source, default_name, label, checkpoints, point_file = task
    if _WORKER["stop"]:
        return ("interrupted",)
    try:
        result, error = _worker_run(data, source, default_name, label, checkpoints,
                                    point_file=point_file, reporter=_worker_check)
    except Exception as exc:  # noqa: BLE001 - sent to the scan's process, which raises it
        import pickle

        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:  # noqa: BLE001
            exc = ComputeError(f"{label}: {exc.__class__.__name__}: {exc}")
        return ("raise", exc)
    return ("interrupted",) if error == "interrupted" else ("done", result, error)


def _worker_run(data: dict, source: str | None, default_name: str, label: str, checkpoints,
                quiet_stdout: bool = True, point_file: dict | None = None, reporter=None):
    """One point in a worker: (result dict or None, error message or None).

    (None, "interrupted") if it was interrupted before it finished.
    point_file: the point's `POINT_FILE` (without status), written as soon
    as the point has finished, so that it is kept even if the scan's process
    never hears of it.  reporter: run_job's reporter.
    """
    from dm21cli.errors import Interrupted
    from dm21cli.runner import run_job

    spec = _build_spec_from(data, Path(source) if source else None, default_name, {}, label)
    began = [False]  # run_job logged a line: the point directory is this run's (an old one moved aside)

    def report(message: str) -> None:
        began[0] = True
        if reporter is not None:
            reporter(message)

    try:
        # (not in Dask's threaded workers: redirect_stdout is process-wide)
        with contextlib.redirect_stdout(io.StringIO()) if quiet_stdout else contextlib.nullcontext():
            result, error = run_job(spec, checkpoints=checkpoints, overwrite=True, reporter=report), None
    except ComputeError as exc:
        result, error = _read_json(spec.output_path() / "result.json"), str(exc)
    except (KeyboardInterrupt, Interrupted):
        # interrupted after run_job had finished the point (on its way out): keep the point
        result = _read_json(spec.output_path() / "result.json") if began[0] else None
        if not result or result.get("status") not in FINISHED or \
                (spec.output_path() / ".running").exists():
            return None, "interrupted"
        error = None
    if point_file is not None:
        from dm21cli import outputs as out

        status = "failed" if error is not None else (result or {}).get("status") or "failed"
        out.write_json_atomic(spec.output_path() / POINT_FILE, {**point_file, "status": status})
    return result, error


def _choose_guess(plan: ScanPlan, point: ScanPoint, neighbour: int | None,
                  records: dict) -> tuple[Path | None, str]:
    """(chkfile or None, description) of the starting guess of `point`."""
    stretched = point.distance_angstrom > BROKEN_SYMMETRY_STRETCH * plan.equilibrium_angstrom
    nb_stretched = neighbour is not None and \
        plan.distances[neighbour] > BROKEN_SYMMETRY_STRETCH * plan.equilibrium_angstrom
    nb_record = records.get((point.functional, neighbour), {}) if neighbour is not None else {}
    nb_ok = bool(nb_record.get("converged"))
    nb_broken = (nb_record.get("s_squared") or 0.0) > BROKEN_SYMMETRY_MIN_S2
    if plan.broken_symmetry and stretched and not (nb_stretched and nb_ok and nb_broken):
        chk = plan.points[point.functional][neighbour].directory / "scf.chk" if nb_ok else None
        if chk is not None and chk.is_file():  # mix the neighbour's converged orbitals
            return chk, f"broken-symmetry from {_neighbour_text(plan.distances[neighbour])}"
        return None, "broken-symmetry"
    if nb_ok:
        chk = plan.points[point.functional][neighbour].directory / "scf.chk"
        if chk.is_file():
            return chk, _neighbour_text(plan.distances[neighbour])
    return None, "default"


class _scratch_guess:
    """Context: the chkfile to start from (a temporary broken-symmetry one if asked)."""

    def __init__(self, plan, point, guess_path, guess):
        self.plan, self.point, self.guess_path, self.guess = plan, point, guess_path, guess
        self._tmp = None

    def __enter__(self):
        if not self.guess.startswith("broken-symmetry"):
            return self.guess_path
        import tempfile

        self._tmp = tempfile.TemporaryDirectory(prefix="dm21-scan-")
        path = Path(self._tmp.name) / "mixed.chk"
        data = json.loads(json.dumps(self.point.data))
        spec = _build_spec(data, self.plan.spec, {}, self.point.label)
        _mixed_guess_chkfile(spec, path, source=self.guess_path)
        return path

    def __exit__(self, *exc):
        if self._tmp is not None:
            self._tmp.cleanup()
        return False


def _run_references(plan: ScanPlan, functional: str, checkpoints, detail, log) -> dict:
    refs = plan.references.get(functional)
    if not refs:
        return {}
    out_refs: dict[str, Any] = {}
    limit = 0.0
    for ref in refs:
        entry = {"atoms": [k + 1 for k in ref.atoms], "charge": ref.charge,
                 "multiplicity": ref.multiplicity, "nelectron": ref.nelectron,
                 "energy_hartree": 0.0, "converged": True, "directory": None, "reused": False}
        if ref.data is not None:
            entry["directory"] = str(ref.directory)
            stored = _finished(ref.directory, ref.hash)
            if stored is not None:
                result, entry["reused"] = stored, True
            else:
                from dm21cli import outputs as out

                log(f"{functional} {ref.role} fragment: computing")
                result, _ = _run_one(ref.data, plan, None, f"{functional} {ref.role} fragment",
                                     checkpoints, detail)
                out.write_json_atomic(ref.directory / POINT_FILE, {
                    "hash": ref.hash, "functional": functional, "reference": ref.role})
            entry["energy_hartree"] = (result or {}).get("return_energy")
            entry["converged"] = bool((result or {}).get("converged"))
        out_refs[ref.role] = entry
        limit = None if limit is None or entry["energy_hartree"] is None else limit + entry["energy_hartree"]
    out_refs["limit_energy_hartree"] = limit
    out_refs["converged"] = all(out_refs[r.role]["converged"] for r in refs)
    log(f"{functional} dissociation limit: "
        f"{'n/a' if limit is None else f'{limit:.8f} Ha'}")
    return out_refs


def _ordered(plan: ScanPlan, records: dict) -> list[dict]:
    return [records[(f, k)] for f in plan.functionals for k in range(len(plan.distances))
            if (f, k) in records]


def collect_scan(plan: ScanPlan, *, plot: bool = True) -> ScanReport:
    """Assemble the curve files from the finished points on disk, computing nothing.

    For ``dm21 scan --collect`` after ``--point`` runs (e.g. a Slurm job array).
    Points not (yet) finished are counted as missing; refuses a scan directory
    holding another scan definition (`OutputExistsError`).
    """
    if not (plan.scan_dir / FILES["definition"]).is_file():
        raise InputError(f"nothing to collect: {plan.scan_dir} holds no scan (run the points first)",
                         field="--collect")
    _check_scan_dir(plan, overwrite=False)
    records = {}
    for pt in plan.all_points():
        stored = _finished(pt.directory, pt.hash)
        if stored is not None:
            info = _read_json(pt.directory / POINT_FILE) or {}
            records[(pt.functional, pt.index)] = _record(pt, stored, plan.moving, reused=True,
                                                         guess=info.get("guess"))
    references = {}
    for functional, refs in plan.references.items():
        entry: dict[str, Any] = {}
        limit: float | None = 0.0
        for ref in refs:
            stored = None if ref.data is None else _finished(ref.directory, ref.hash)
            energy = 0.0 if ref.data is None else (stored or {}).get("return_energy")
            entry[ref.role] = {"atoms": [k + 1 for k in ref.atoms], "charge": ref.charge,
                               "multiplicity": ref.multiplicity, "nelectron": ref.nelectron,
                               "energy_hartree": energy,
                               "converged": ref.data is None or bool((stored or {}).get("converged")),
                               "directory": None if ref.data is None else str(ref.directory),
                               "reused": stored is not None}
            limit = None if limit is None or energy is None else limit + energy
        entry["limit_energy_hartree"] = limit
        entry["converged"] = all(entry[r.role]["converged"] for r in refs)
        references[functional] = entry
    report = ScanReport(_ordered(plan, records), references, expected=len(plan.all_points()))
    _write_curves(plan, report, plot=plot)
    return report


# ----------------------------------------------------------------------
# curve files
# ----------------------------------------------------------------------
def _write_curves(plan: ScanPlan, report: ScanReport, plot: bool = True) -> None:
    from dm21cli import outputs as out

    for rec in report.records:
        limit = (report.references.get(rec["functional"]) or {}).get("limit_energy_hartree")
        if limit is not None and rec["energy_hartree"] is not None:
            rec["relative_energy_hartree"] = rec["energy_hartree"] - limit
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for rec in report.records:
        writer.writerow({k: ("" if rec.get(k) is None else rec.get(k)) for k in CSV_COLUMNS})
    out.write_text_atomic(plan.scan_dir / FILES["csv"], buf.getvalue())
    doc = {
        "schema_name": "dm21cli_scan", "schema_version": 1,
        "definition_hash": plan.definition_hash,
        "molecule": {"formula": plan.spec.molecule.formula(), "symbols": plan.spec.molecule.symbols,
                     "charge": plan.spec.molecule.charge,
                     "multiplicity": plan.spec.molecule.multiplicity},
        "atoms": [plan.pair[0] + 1, plan.pair[1] + 1], "fragment": [k + 1 for k in plan.moving],
        "functionals": plan.functionals, "distances_angstrom": plan.distances,
        "equilibrium_estimate_angstrom": plan.equilibrium_angstrom,
        "references": report.references,
        "counts": {"points": len(plan.all_points()), "finished": len(report.records),
                   "converged": report.converged, "not_converged": report.not_converged,
                   "failed": report.failed, "read_from_disk": report.reused},
        "points": report.records,
    }
    out.write_json_atomic(plan.scan_dir / FILES["json"], out.finite(doc))
    if plot and report.records:
        write_plot(plan.scan_dir / FILES["png"], report, plan.functionals)


def write_plot(path: Path, report: ScanReport, functionals: list[str]) -> None:
    """Energy (relative to the dissociation limit if known) and fragment charge vs distance."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from dm21cli import outputs as out

    fig = Figure(figsize=(6.4, 7.2))
    FigureCanvasAgg(fig)
    ax_e, ax_q = fig.subplots(2, 1, sharex=True)
    relative = all(r["relative_energy_hartree"] is not None for r in report.records
                   if r["energy_hartree"] is not None)
    for name in functionals:
        rows = [r for r in report.records if r["functional"] == name and r["energy_hartree"] is not None]
        if not rows:
            continue
        x = [r["distance_angstrom"] for r in rows]
        if relative:
            y = [r["relative_energy_hartree"] * 1000 for r in rows]
        else:
            y = [r["energy_hartree"] for r in rows]
        line, = ax_e.plot(x, y, "o-", label=name)
        bad = [(xi, yi) for xi, yi, r in zip(x, y, rows) if not r["converged"]]
        if bad:
            ax_e.plot(*zip(*bad), "x", color="red", markersize=10)
        qx = [r["distance_angstrom"] for r in rows if r["charge_moving_fragment"] is not None]
        qy = [r["charge_moving_fragment"] for r in rows if r["charge_moving_fragment"] is not None]
        ax_q.plot(qx, qy, "o-", color=line.get_color(), label=name)
    if relative:
        ax_e.axhline(0.0, color="grey", linestyle="--", linewidth=1, label="separated fragments")
        ax_e.set_ylabel("E - E(fragments) / mHa")
    else:
        ax_e.set_ylabel("E / Ha")
    ax_e.legend()
    ax_e.set_title("dm21 scan" + ("" if not any(not r["converged"] for r in report.records)
                                  else " (x: not converged)"))
    ax_q.set_xlabel("distance / Angstrom")
    ax_q.set_ylabel("Mulliken charge of the moving fragment / e")
    ax_q.axhline(0.0, color="grey", linewidth=0.5)
    fig.tight_layout()
    with out.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def render_table_text(report: ScanReport) -> str:
    """The curve as aligned plain text (one row per point and functional)."""
    from dm21cli.units import HARTREE_EV

    head = ["functional", "d/A", "E/Ha", "dE/mHa", "q(moving)", "<S^2>", "gap/eV", "cycles", "status"]
    rows = [head]
    for name in dict.fromkeys(r["functional"] for r in report.records):
        rows_f = [r for r in report.records if r["functional"] == name]
        energies = [r["energy_hartree"] for r in rows_f if r["energy_hartree"] is not None]
        limit = (report.references.get(name) or {}).get("limit_energy_hartree")
        zero = limit if limit is not None else (min(energies) if energies else None)
        for r in rows_f:
            e = r["energy_hartree"]

            def f(x, spec):
                return "-" if x is None else format(x, spec)

            rows.append([name, f"{r['distance_angstrom']:.3f}", f(e, ".8f"),
                         f(None if e is None or zero is None else (e - zero) * 1000, ".2f"),
                         f(r["charge_moving_fragment"], "+.3f"), f(r["s_squared"], ".3f"),
                         f(None if r["homo_lumo_gap_hartree"] is None
                           else r["homo_lumo_gap_hartree"] * HARTREE_EV, ".2f"),
                         f(r["scf_cycles"], "d"),
                         r["status"] + (" (disk)" if r["reused"] else "")])
    widths = [max(len(row[c]) for row in rows) for c in range(len(head))]
    lines = ["  ".join(cell.ljust(w) if c in (0, 8) else cell.rjust(w)
                       for c, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in rows]
    note = ("dE: relative to the separated fragments" if report.references and
            any(v.get("limit_energy_hartree") is not None for v in report.references.values())
            else "dE: relative to the lowest point of each curve")
    return "\n".join(lines) + f"\n{note}"
