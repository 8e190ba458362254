"""`plan_scan`: a job with a ``scan:`` section -> a `ScanPlan`, every point validated.

The plan holds the sorted values (distances, angles, dihedrals, electron numbers or
fractions), the moving fragment, the functionals, one resolved single-point input per
point and functional (with its input hash, which decides reuse) and the reference fragments.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from dm21cli.core import elements
from dm21cli.core.errors import InputError

#: broken-symmetry guesses beyond this multiple of the equilibrium estimate.
BROKEN_SYMMETRY_STRETCH = 1.5

#: a neighbour with a smaller <S^2> has collapsed to the symmetric solution: mix again.
BROKEN_SYMMETRY_MIN_S2 = 0.1

#: files in the scan directory (`ScanPlan.files`: another campaign of points, a Hessian's
#: displacements, names its own).
FILES = {
    "definition": "scan.definition.json",
    "csv": "scan.csv",
    "json": "scan.json",
    "png": "scan.png",
    "log": "scan.log",
}

#: how an interrupted scan continues: its own command again (the message of an interruption,
#: also inside a relaxed point's optimisation, whose own hint would be 'dm21 opt --restart')
RESUME_HINT = "finished points are kept: run the same dm21 scan command again to continue"


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

    from dm21cli.core.units import BOHR_ANGSTROM

    return float((radii.COVALENT[elements.atomic_number(symbol_a)]
                  + radii.COVALENT[elements.atomic_number(symbol_b)]) * BOHR_ANGSTROM)


def refuse_shared_directories(values: list[float], dirname, where: dict, *, what: str = "",
                              advice: str = "") -> None:
    """InputError (at `where`) if two of `values` would share a point directory
    (`dirname(value)`: values at least 0.001 apart never do): "{what}A and B would share the
    point directory D{advice}"."""
    seen: dict[str, float] = {}
    for value in values:
        other = seen.setdefault(dirname(value), value)
        if other != value:
            raise InputError(f"{what}{other:g} and {value:g} would share the point directory "
                             f"{dirname(value)}{advice}", **where)


def walk_order(distances: list[float], start_near: float) -> list[tuple[int, int | None]]:
    """(index, neighbour index or None) in computing order: outward from the point nearest `start_near`."""
    if not distances:
        return []
    start = min(range(len(distances)), key=lambda k: (abs(distances[k] - start_near), k))
    order: list[tuple[int, int | None]] = [(start, None)]
    order += [(k, k - 1) for k in range(start + 1, len(distances))]
    order += [(k, k + 1) for k in range(start - 1, -1, -1)]
    return order


def input_digest(obj: Any) -> str:
    from dm21cli.io.outputs.atomic import to_builtin

    text = json.dumps(to_builtin(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def physics_of(resolved: dict) -> dict:
    """The parts of a resolved input that decide a result (no names, folders, resources, guess).

    ``scf.occupations: null`` (aufbau) is left out, so that integer points
    keep the hashes they had before fixed occupations existed.
    """
    d = {k: v for k, v in resolved.items() if k not in ("job", "resources")}
    d["scf"] = {k: v for k, v in d.get("scf", {}).items()
                if k != "guess" and not (k == "occupations" and v is None)}
    return d


def point_hash(spec) -> str:
    """SHA-256 of a point's resolved input, as stored in its `POINT_FILE`."""
    return input_digest(physics_of(spec.to_resolved_dict()))


@dataclasses.dataclass(frozen=True)
class Coordinate:
    """What a scan varies: its name in the records, its unit, how points are named."""

    kind: str  # "distance" | "angle" | "dihedral" | "electrons" | "fractional_spin"
    key: str  # the key of the scan: section ("distances", "angles", "dihedrals", ...)
    column: str  # the record's field ("distance_angstrom", "angle_degree", "electrons", ...)
    short: str  # table header
    axis: str  # plot axis
    option: str  # the command-line option

    @property
    def moves_atoms(self) -> bool:
        """A distance, angle or dihedral scan (each point its own geometry)."""
        return self.kind in ("distance", "angle", "dihedral")

    def text(self, value: float) -> str:
        """``2.500 A``, ``104.500 deg``, ``N = 5.500``, ``f = 0.250``; a Hessian's
        ``displacement 7``."""
        if self.kind == "distance":
            return f"{value:.3f} A"
        if self.kind in ("angle", "dihedral"):
            return f"{value:.3f} deg"
        if self.kind == "displacement":
            return "reference geometry" if value == 0 else f"displacement {int(value)}"
        return f"{'N' if self.kind == 'electrons' else 'f'} = {value:.3f}"

    def dirname(self, value: float) -> str:
        """The point directory: ``point-02.500A``, ``point-104.500deg``, ``N-05.500``,
        ``f-0.250``."""
        if self.kind == "distance":
            return point_dirname(value)
        if self.kind in ("angle", "dihedral"):
            return degree_dirname(value)
        if self.kind == "electrons":
            return f"N-{value:06.3f}"
        return f"f-{value:.3f}"


COORDINATES = {
    "distance": Coordinate("distance", "distances", "distance_angstrom", "d/A", "distance / Angstrom",
                           "--distance"),
    "angle": Coordinate("angle", "angles", "angle_degree", "angle/deg", "angle / degree", "--angle"),
    "dihedral": Coordinate("dihedral", "dihedrals", "dihedral_degree", "dihedral/deg",
                           "dihedral / degree", "--dihedral"),
    "electrons": Coordinate("electrons", "electrons", "electrons", "N", "electron number N",
                            "--electrons"),
    "fractional_spin": Coordinate("fractional_spin", "fractional_spin", "fractional_spin", "f",
                                  "fraction f of an electron moved from alpha to beta",
                                  "--fractional-spin"),
    # a Hessian's displaced geometries (`dm21cli.jobs.freq`): 0 the reference, 1 .. 6N
    "displacement": Coordinate("displacement", "displacements", "displacement", "disp",
                               "displaced geometry", "--point"),
}


@dataclasses.dataclass
class ScanPoint:
    """One single point of the curve."""

    functional: str
    index: int
    value: float  # the scan coordinate (Angstrom, degrees, electrons, fraction)
    directory: Path
    data: dict | None  # resolved input of the point, without scf.guess; None: no electrons
    hash: str | None
    coordinate: Coordinate = COORDINATES["distance"]
    #: electron-number and fractional-spin points: electrons, charge, multiplicity,
    #: occupations (None: aufbau), and for a point without electrons its energy
    state: dict | None = None
    #: angle and dihedral points: the coordinate's atoms (0-based), measured in the computed
    #: geometry for the record (`dm21cli.jobs.scan.records.make_record`)
    atoms: tuple[int, ...] | None = None

    @property
    def distance_angstrom(self) -> float:
        return self.value

    @property
    def label(self) -> str:
        return f"{self.functional} {self.coordinate.text(self.value)}"


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
    values: list[float]  # the scan coordinate of each point, sorted
    pair: tuple[int, int] | None  # 0-based (distance scans)
    moving: list[int]  # 0-based (distance, angle and dihedral scans; else empty)
    functionals: list[str]
    equilibrium_angstrom: float | None  # distance scans
    order: list[tuple[int, int | None]]
    points: dict[str, list[ScanPoint]]
    references: dict[str, list[Reference]]
    broken_symmetry: bool
    definition: dict
    definition_hash: str
    coordinate: Coordinate = COORDINATES["distance"]
    #: electron-number scans: the multiplicity of each integer electron number
    states: dict[int, int] | None = None
    #: electron-number scans: where each integer state's multiplicity came from
    #: ("scan.multiplicities", "the job's", "Hund's rule, 2p3", "the lowest")
    state_reasons: dict[int, str] | None = None
    #: a relaxed scan: every point (and fragment of two atoms or more) a geometry
    #: optimisation with the scanned distance, angle or dihedral frozen
    relax: bool = False
    #: angle and dihedral scans: the coordinate's atoms (0-based: I J K, I J K L)
    atoms: tuple[int, ...] | None = None
    #: angle and dihedral scans: the coordinate's value in the job's geometry, where the
    #: walk starts (degrees)
    start_degree: float | None = None
    #: the names of the files in the scan directory (`FILES`)
    files: dict = dataclasses.field(default_factory=lambda: dict(FILES))
    #: the folders the scan writes in its directory (None: one per functional)
    folders: list[str] | None = None

    @property
    def distances(self) -> list[float]:
        return self.values

    @property
    def kind(self) -> str:
        return self.coordinate.kind

    @property
    def field(self) -> tuple[str, str]:
        """The scan section's key of the values, for error messages."""
        return ("scan", self.coordinate.key)

    @property
    def fixed(self) -> list[int]:
        return [k for k in range(self.spec.molecule.natm) if k not in self.moving]

    def all_points(self) -> list[ScanPoint]:
        return [p for f in self.functionals for p in self.points[f]]


def default_multiplicity(symbols: list[str], n_electrons: int) -> int:
    """The multiplicity of a fragment the input gave none for: a lone atom's (or atomic
    ion's) ground state (`dm21cli.core.elements.ground_state_multiplicity`: an O atom is
    a triplet), else the lowest for its electron count (1 or 2)."""
    if len(symbols) == 1 and 0 <= n_electrons <= elements.MAX_Z:
        return elements.ground_state_multiplicity(elements.atomic_number(symbols[0]), n_electrons)
    return 1 + n_electrons % 2 if n_electrons >= 0 else 1


def safe_name(text: str) -> str:
    """`text` as a folder name: runs of characters outside ``A-Za-z0-9._-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "functional"


def point_dirname(distance_angstrom: float) -> str:
    """The directory name of the point at this distance, e.g. ``point-02.500A``.

    Named by the distance alone (not by its index in the sorted list), so a
    point is found again whatever the other distances of the scan are.  Three
    decimals keep distances at least `MIN_SPACING` apart (all that
    `parse_distances` accepts) on distinct names; two integer digits make a
    directory listing sort by distance up to 99.999 Angstrom.
    """
    return f"point-{distance_angstrom:06.3f}A"


def degree_dirname(value_degree: float) -> str:
    """The directory name of an angle or dihedral point, e.g. ``point-104.500deg``.

    Three decimals keep values at least `MIN_SPACING` (0.001 degrees) apart on distinct
    names; three integer digits and no sign (angles lie in (0, 180), dihedrals in
    [0, 360)) make a listing sort by value.
    """
    return f"point-{value_degree:07.3f}deg"


def neighbour_text(value: float, coordinate: Coordinate = COORDINATES["distance"]) -> str:
    """How a log names the scan point at `value` (in the coordinate's unit): ``point at 1.200 A``."""
    return f"point at {coordinate.text(value)}"


def build_spec(data: dict, base, where: dict, context: str):
    """A validated JobSpec from a resolved-input dict; errors are located at `where`."""
    return build_spec_from(data, base.source_path, base.job.name, where, context)


def build_spec_from(data: dict, source_path: Path | None, default_name: str, where: dict,
                     context: str):
    from pydantic import ValidationError

    from dm21cli.io.inputs.models import JobSpec, SpecMeta
    from dm21cli.io.inputs.validate import validate_job

    ctx = {"base_dir": source_path.parent if source_path else Path("."),
           "file": None, "default_name": default_name}
    try:
        spec = JobSpec.model_validate(data, context=ctx)
        spec._source_path = source_path
        spec._meta = SpecMeta(file=None)
        validate_job(spec)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise InputError(f"{context}: {first.get('msg', 'invalid')}", **where) from None
    except InputError as exc:
        raise InputError(f"{context}: {exc.message}", **where) from None
    return spec


def point_data(base, functional: str, coords_angstrom: np.ndarray, name: str, directory: Path,
                broken_symmetry: bool, atoms: list[int] | None = None,
                charge: int | None = None, multiplicity: int | None = None,
                relax: tuple[int, ...] | bool | None = None) -> dict:
    """Resolved input of one point (or fragment) derived from the base job.

    relax: a relaxed point: the 0-based atoms whose distance (two), angle (three) or
    dihedral (four) geomeTRIC keeps frozen (``task: opt``, the job's ``opt`` settings and
    constraints plus ``distance i j``, ``angle i j k`` or ``dihedral i j k l``); True for a
    fragment optimised whole (the job's criteria, no constraints); else a single point (no
    ``opt`` section).
    """
    d = base.to_resolved_dict()
    d.pop("scan", None)
    opt = d.pop("opt", None) or base.opt_settings().resolved()
    symbols = base.molecule.symbols
    keep = range(len(symbols)) if atoms is None else atoms
    d["job"] = {"name": name, "output_dir": str(directory)}
    if relax:
        d["job"]["task"] = "opt"
        d["opt"] = json.loads(json.dumps(opt))
        if relax is True:
            d["opt"]["constraints"] = {"freeze": [], "set": []}
        else:
            kind = {2: "distance", 3: "angle", 4: "dihedral"}[len(relax)]
            d["opt"]["constraints"]["freeze"].append(f"{kind} {' '.join(str(a + 1) for a in relax)}")
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


def _functional_names(spec, scan, functionals: list[str] | None) -> tuple[list[str], list[str]]:
    """(names, directory names) of the scan's functionals, checked."""
    meta = spec._meta
    if functionals:
        from dm21cli.io.inputs.basis import xc_problem
        from dm21cli.io.inputs.fields import DM21_FUNCTIONALS, check_functional

        names = []
        for name in functionals:
            try:
                name = check_functional(name)
            except ValueError as exc:
                raise InputError(str(exc), field="--functional") from None
            if name not in DM21_FUNCTIONALS and xc_problem(name):
                raise InputError(xc_problem(name), field="--functional")
            names.append(name)
    else:
        names = list(scan.functionals or [spec.functional])
    names = list(dict.fromkeys(names))
    dirnames = [safe_name(n) for n in names]
    if len(set(d.lower() for d in dirnames)) != len(dirnames):
        raise InputError(f"functionals {', '.join(names)} would share a directory name",
                         **meta.locate(("scan", "functionals")))
    return names, dirnames


def plan_scan(spec, *, functionals: list[str] | None = None, output_dir: str | None = None) -> ScanPlan:
    """Validate the scan of `spec` (a JobSpec with a ``scan`` section) and build its plan.

    A distance scan (`_plan_distance`), an angle or dihedral scan (``scan.angles``,
    ``scan.dihedrals``: `_plan_rotation`), an electron-number scan (``scan.electrons``) or a
    fractional-spin scan (``scan.fractional_spin``: `_plan_fractional`).  functionals: overrides
    ``scan.functionals`` / ``functional``; output_dir: the scan directory
    (default: the job's output path).  Raises InputError (naming file, line
    and field) for every problem.
    """
    from dm21cli.io.inputs.scan_model import ScanSettings

    scan = spec.scan if spec.scan is not None else ScanSettings()
    names, dirnames = _functional_names(spec, scan, functionals)
    scan_dir = Path(output_dir) if output_dir else spec.output_path()
    if scan.kind in ("electrons", "fractional_spin"):
        return _plan_fractional(spec, scan, names, dirnames, scan_dir)
    _check_geometric_scan(spec, scan)
    if scan.kind in ("angle", "dihedral"):
        return _plan_rotation(spec, scan, names, dirnames, scan_dir)
    return _plan_distance(spec, scan, names, dirnames, scan_dir)


def _check_geometric_scan(spec, scan) -> None:
    """Raise InputError if the molecule has a single atom (no distance, angle or dihedral to
    scan), or if a relaxed scan's job sets ``opt.transition`` or ``opt.irc``."""
    meta = spec._meta
    if spec.molecule.natm < 2:
        raise InputError(f"a scan needs at least two atoms; the molecule has {spec.molecule.natm} "
                         f"(or scan electron numbers or fractional spins: --electrons, "
                         f"--fractional-spin)", **meta.locate(("molecule",)))
    settings = spec.opt_settings()
    if scan.relax and (settings.transition or settings.irc):
        key = "transition" if settings.transition else "irc"
        raise InputError(f"a relaxed scan's points are minimisations with the "
                         f"{scan.kind or 'distance'} held; "
                         f"opt.{key} (job.task {'ts' if key == 'transition' else 'irc'}) is "
                         f"dm21 opt --{'ts' if key == 'transition' else 'irc'}'s: leave it out "
                         f"of a relaxed scan",
                         **meta.locate(("opt", key) if ("opt", key) in meta.lines
                                       else ("job", "task")))


def _plan_distance(spec, scan, names: list[str], dirnames: list[str], scan_dir: Path) -> ScanPlan:
    """The plan of a distance scan (``scan.distances``, Angstrom).

    The moving fragment (``scan.fragment``, else the second atom of ``scan.atoms``) is
    shifted along the pair's axis so that the pair is each distance apart; the walk starts at
    the distance nearest the covalent-radius estimate; with ``scan.reference_atoms``, the two
    fragments apart are the references (`_references`).
    """
    meta = spec._meta
    if scan.distances is None:
        raise InputError("no distances to scan: give --distance START:STOP:STEP or a list, or "
                         "scan.distances in the job file (or --angle, --dihedral, --electrons, "
                         "--fractional-spin)",
                         **meta.locate(("scan", "distances")))

    pair = (scan.atoms[0] - 1, scan.atoms[1] - 1)
    moving = sorted(k - 1 for k in (scan.fragment or [scan.atoms[1]]))
    symbols = spec.molecule.symbols
    coords = spec.molecule.coords_angstrom()
    r_eq = equilibrium_estimate_angstrom(symbols[pair[0]], symbols[pair[1]])
    distances = list(scan.distances)
    order = walk_order(distances, r_eq)
    where = meta.locate(("scan", "distances"))
    # (cannot happen for distances parse_distances accepts; never share one)
    refuse_shared_directories(distances, point_dirname, where, what="distances ",
                              advice=" (keep them at least 0.001 Angstrom apart)")

    points: dict[str, list[ScanPoint]] = {}
    for name, dirname in zip(names, dirnames):
        points[name] = _distance_points(spec, scan, name, dirname, scan_dir, coords, distances,
                                        pair, moving, where)
    references: dict[str, list[Reference]] = {}
    if scan.reference_atoms:
        references = _references(spec, scan, names, dirnames, scan_dir, coords, moving)

    definition = {
        "input": physics_of({k: v for k, v in spec.to_resolved_dict().items() if k != "scan"}),
        "distances_angstrom": distances, "atoms": [pair[0] + 1, pair[1] + 1],
        "fragment": [k + 1 for k in moving], "functionals": names,
        "broken_symmetry": scan.broken_symmetry, "reference_atoms": scan.reference_atoms,
        "reference_charges": scan.reference_charges,
        "reference_multiplicities": scan.reference_multiplicities,
    }
    if scan.relax:  # (only then: the definitions, and hashes, of rigid scans stay as they were)
        definition["relax"] = True
    return ScanPlan(spec=spec, scan_dir=scan_dir, values=distances, pair=pair, moving=moving,
                    functionals=names, equilibrium_angstrom=r_eq, order=order, points=points,
                    references=references, broken_symmetry=scan.broken_symmetry,
                    definition=definition, definition_hash=input_digest(definition),
                    coordinate=COORDINATES["distance"], relax=scan.relax)


def _distance_points(spec, scan, name: str, dirname: str, scan_dir: Path, coords: np.ndarray,
                     distances: list[float], pair: tuple[int, int], moving: list[int],
                     where: dict) -> list[ScanPoint]:
    """The points of functional `name` (its folder `dirname` in `scan_dir`) in a distance
    scan, one per distance (Angstrom, in the order given), each with the `moving` atoms
    displaced (`displaced_coords`; coords in Angstrom, shape (natm, 3)) and its input
    validated (`build_spec`, problems located at `where`)."""
    row = []
    for index, dist in enumerate(distances):
        directory = scan_dir / dirname / point_dirname(dist)
        new = displaced_coords(coords, pair, moving, dist)
        data = point_data(spec, name, new, f"{spec.job.name}-{dirname}-{dist:.3f}A", directory,
                          scan.broken_symmetry, relax=pair if scan.relax else None)
        pspec = build_spec(data, spec, where, f"{name} at {dist:g} Angstrom")
        row.append(ScanPoint(name, index, dist, directory, data, point_hash(pspec),
                             COORDINATES["distance"]))
    return row


def _references(spec, scan, names: list[str], dirnames: list[str], scan_dir: Path,
                coords: np.ndarray, moving: list[int]) -> dict[str, list[Reference]]:
    """{functional: [fixed fragment's, moving fragment's `Reference`]} of a distance scan with
    ``scan.reference_atoms``: each fragment alone at the job's geometry (coords in Angstrom,
    shape (natm, 3))."""
    fixed = [k for k in range(len(spec.molecule.symbols)) if k not in moving]
    references: dict[str, list[Reference]] = {}
    for name, dirname in zip(names, dirnames):
        references[name] = [
            _reference(spec, scan, name, dirname, scan_dir, coords, slot, role, atoms)
            for slot, (role, atoms) in enumerate((("fixed", fixed), ("moving", moving)))]
    return references


def _reference(spec, scan, name: str, dirname: str, scan_dir: Path, coords: np.ndarray,
               slot: int, role: str, atoms: list[int]) -> Reference:
    """The `Reference` of one fragment (`role` ``fixed`` or ``moving``, `slot` 0 or 1 in
    ``scan.reference_charges`` / ``reference_multiplicities``; `atoms` 0-based) for
    functional `name`: its charge (default: the molecule's for the fixed fragment, 0 for the
    moving one), multiplicity (`default_multiplicity`) and, when it has electrons, its
    validated input.  Raises InputError for a negative electron count."""
    meta = spec._meta
    symbols = spec.molecule.symbols
    protons = sum(elements.atomic_number(symbols[k]) for k in atoms)
    if scan.reference_charges is not None:
        charge = scan.reference_charges[slot]
    else:
        charge = spec.molecule.charge if role == "fixed" else 0
    nelec = protons - charge
    if scan.reference_multiplicities is not None:
        mult = scan.reference_multiplicities[slot]
    else:
        mult = default_multiplicity([symbols[k] for k in atoms], nelec)
    field = ("scan", "reference_charges" if scan.reference_charges is not None
             else "reference_atoms")
    if nelec < 0:
        raise InputError(f"the {role} fragment ({elements.hill_formula([symbols[k] for k in atoms])}) "
                         f"with charge {charge} has {nelec} electrons", **meta.locate(field))
    if scan.reference_multiplicities is not None:
        field = ("scan", "reference_multiplicities")
    directory = scan_dir / dirname / f"reference-{role}"
    if nelec == 0:
        return Reference(name, role, atoms, charge, mult, 0, directory, None, None)
    data = point_data(spec, name, coords, f"{spec.job.name}-{dirname}-{role}",
                      directory, False, atoms=atoms, charge=charge, multiplicity=mult,
                      relax=scan.relax and len(atoms) >= 2)
    rspec = build_spec(data, spec, meta.locate(field), f"{name}, {role} fragment")
    return Reference(name, role, atoms, charge, mult, nelec, directory, data, point_hash(rspec))


def _plan_rotation(spec, scan, names: list[str], dirnames: list[str], scan_dir: Path) -> ScanPlan:
    """The plan of an angle or dihedral scan (``scan.angles``, ``scan.dihedrals``).

    The moving fragment (``scan.fragment``, else the atoms bonded to K once the J-K bond is
    cut, `geometry.side_of`) is rotated rigidly so that the coordinate takes each value
    exactly (`geometry.rotated_coords`); the walk starts at the value nearest the job's own
    geometry's (for dihedrals the short way round).  Refused, located at ``scan.atoms``: a
    dihedral over collinear atoms, and a default fragment that holds J (the J-K bond in a
    ring) or I, or (a dihedral) lacks L.
    """
    from dm21cli.jobs.scan import geometry

    meta = spec._meta
    kind = scan.kind
    coordinate = COORDINATES[kind]
    where = meta.locate(("scan", coordinate.key))
    atoms_where = meta.locate(("scan", "atoms"))
    atoms = tuple(a - 1 for a in scan.atoms)
    symbols = spec.molecule.symbols
    coords = spec.molecule.coords_angstrom()
    dashed = "-".join(str(a) for a in scan.atoms)
    if kind == "dihedral":
        for first, vertex, last in (atoms[:3], atoms[1:]):
            angle = geometry.angle_degrees(coords, first, vertex, last)
            if min(angle, 180.0 - angle) < geometry.COLLINEAR_DEGREES:
                raise InputError(f"the dihedral {dashed} is not defined: atoms {first + 1}-{vertex + 1}-"
                                 f"{last + 1} are collinear ({angle:.2f} degrees; both angles of a "
                                 f"dihedral must lie at least {geometry.COLLINEAR_DEGREES:g} degree "
                                 f"from 0 and 180)", **atoms_where)
    if scan.fragment is not None:
        moving = sorted(a - 1 for a in scan.fragment)
    else:
        i, j, k = atoms[:3]
        moving = geometry.side_of(geometry.bonds(symbols, coords), len(symbols), (j, k), k)
        hint = "; list the atoms to move in scan.fragment"
        if j in moving:
            raise InputError(f"atom {k + 1} reaches atom {j + 1} through other atoms (the bond "
                             f"{j + 1}-{k + 1} is in a ring, or the two are not bonded): no side "
                             f"of it can be rotated alone{hint}", **atoms_where)
        if i in moving:
            raise InputError(f"atom {i + 1} is bonded to atom {k + 1}'s side of the {j + 1}-{k + 1} "
                             f"bond: rotating that side would carry it along{hint}", **atoms_where)
        if atoms[-1] not in moving:
            raise InputError(f"atom {atoms[-1] + 1} is not bonded to atom {k + 1}'s side of the "
                             f"{j + 1}-{k + 1} bond, which would be rotated without it{hint}",
                             **atoms_where)
    start = geometry.measure_degrees(coords, atoms)
    values = list(scan.angles if kind == "angle" else scan.dihedrals)
    if kind == "dihedral":  # the value nearest the start, the short way round
        nearest = min(values, key=lambda v: abs(geometry.turn_between(start, v)))
    else:
        nearest = min(values, key=lambda v: abs(v - start))
    order = walk_order(values, nearest)
    refuse_shared_directories(values, coordinate.dirname, where)
    points: dict[str, list[ScanPoint]] = {}
    for name, dirname in zip(names, dirnames):
        row = []
        for index, value in enumerate(values):
            directory = scan_dir / dirname / coordinate.dirname(value)
            new = geometry.rotated_coords(coords, atoms, moving, value)
            data = point_data(spec, name, new, f"{spec.job.name}-{dirname}-{value:.3f}deg",
                              directory, False, relax=atoms if scan.relax else None)
            pspec = build_spec(data, spec, where, f"{name} at {value:g} degrees")
            row.append(ScanPoint(name, index, value, directory, data, point_hash(pspec), coordinate,
                                 atoms=atoms))
        points[name] = row
    definition = {
        "kind": kind,
        "input": physics_of({k: v for k, v in spec.to_resolved_dict().items() if k != "scan"}),
        f"{coordinate.key}_degree": values, "atoms": list(scan.atoms),
        "fragment": [a + 1 for a in moving], "functionals": names,
        **({"relax": True} if scan.relax else {}),
    }
    return ScanPlan(spec=spec, scan_dir=scan_dir, values=values, pair=None, moving=moving,
                    functionals=names, equilibrium_angstrom=None, order=order, points=points,
                    references={}, broken_symmetry=False, definition=definition,
                    definition_hash=input_digest(definition), coordinate=coordinate,
                    relax=scan.relax, atoms=atoms, start_degree=start)


def _nuclear_repulsion_hartree(spec) -> float:
    """Sum over atom pairs of Z_A Z_B / R_AB (bohr): the energy without electrons."""
    coords = spec.molecule.coords_bohr()
    charges = [elements.atomic_number(s) for s in spec.molecule.symbols]
    return float(sum(charges[a] * charges[b] / np.linalg.norm(coords[a] - coords[b])
                     for a in range(len(charges)) for b in range(a)))


def _plan_fractional(spec, scan, names: list[str], dirnames: list[str], scan_dir: Path) -> ScanPlan:
    """The plan of an electron-number or fractional-spin scan (see `dm21cli.jobs.scan.fractional`)."""
    from dm21cli.io.inputs.basis import ecp_map
    from dm21cli.jobs.scan import fractional

    meta = spec._meta
    kind = scan.kind
    coordinate = COORDINATES[kind]
    where = meta.locate(("scan", coordinate.key))
    mol = spec.molecule
    ecp = ecp_map(spec)
    core = sum(ecp[s].core_electrons for s in mol.symbols if s in ecp)
    job_n = mol.nelectron()
    states = None
    reasons: dict[int, str] = {}
    if kind == "electrons":
        try:
            values = fractional.electron_values(scan.electrons)
        except ValueError as exc:  # (validate_job refuses these first)
            raise InputError(str(exc), **where) from None
        if core and values[0] <= core:  # (with the integer below the range added)
            raise InputError(f"N = {values[0]:g} leaves no electrons outside the ECP cores "
                             f"({core} core electrons)", **where)
        numbers = list(range(round(values[0]), round(values[-1]) + 1))
        try:
            states = fractional.integer_states(
                numbers, job_electrons=job_n, job_multiplicity=mol.multiplicity,
                atom_z=elements.atomic_number(mol.symbols[0]) if mol.natm == 1 else None,
                given=scan.multiplicities, core=core, reasons=reasons)
        except ValueError as exc:
            field = ("scan", "multiplicities") if scan.multiplicities else ("scan", coordinate.key)
            raise InputError(str(exc), **meta.locate(field)) from None
        point_states = [fractional.electron_point(v, states, mol.nuclear_charge(), core) for v in values]
        start_near = float(job_n)
    else:
        values = sorted(set(scan.fractional_spin) | {0.0})
        n_alpha, n_beta = fractional.spins(job_n, mol.multiplicity, core)
        if n_alpha == n_beta:
            raise InputError(f"{mol.formula()} with charge {mol.charge} and multiplicity "
                             f"{mol.multiplicity} has no unpaired electron to move from alpha to "
                             f"beta (a fractional-spin scan needs multiplicity 2 or more)",
                             **meta.locate(("molecule", "multiplicity")) if
                             ("molecule", "multiplicity") in meta.lines else where)
        point_states = []
        for f in values:
            occ = fractional.spin_point(f, n_alpha, n_beta)
            point_states.append({"fraction": f, "electrons": float(job_n), "charge": mol.charge,
                                 "multiplicity": mol.multiplicity, "occupations": occ,
                                 "used_occupations": occ or {"alpha": [1.0] * n_alpha,
                                                             "beta": [1.0] * n_beta}})
        start_near = 0.0
    refuse_shared_directories(values, coordinate.dirname, where)
    coords = mol.coords_angstrom()
    points: dict[str, list[ScanPoint]] = {}
    for name, dirname in zip(names, dirnames):
        row = []
        for index, (value, state) in enumerate(zip(values, point_states)):
            directory = scan_dir / dirname / coordinate.dirname(value)
            if state["electrons"] == 0:  # no electrons: the nuclei's repulsion, nothing to compute
                state = {**state, "energy_hartree": _nuclear_repulsion_hartree(spec)}
                row.append(ScanPoint(name, index, value, directory, None, None, coordinate, state))
                continue
            data = point_data(spec, name, coords, f"{spec.job.name}-{dirname}-{coordinate.dirname(value)}",
                               directory, False, charge=state["charge"],
                               multiplicity=state["multiplicity"])
            data["scf"]["restricted"] = False
            data["scf"]["occupations"] = state["occupations"]
            pspec = build_spec(data, spec, where, f"{name} at {coordinate.text(value)}")
            row.append(ScanPoint(name, index, value, directory, data, point_hash(pspec), coordinate,
                                 state))
        points[name] = row
    definition = {
        "kind": kind,
        "input": physics_of({k: v for k, v in spec.to_resolved_dict().items() if k != "scan"}),
        coordinate.key: values, "functionals": names,
        **({"multiplicities": {str(n): m for n, m in states.items()}} if states else {}),
    }
    return ScanPlan(spec=spec, scan_dir=scan_dir, values=values, pair=None, moving=[],
                    functionals=names, equilibrium_angstrom=None,
                    order=walk_order(values, start_near), points=points, references={},
                    broken_symmetry=False, definition=definition,
                    definition_hash=input_digest(definition), coordinate=coordinate, states=states,
                    state_reasons=reasons or None)

