"""`validate_job`: the checks of a job that need chemistry, each problem located in the file.

Geometry, electrons against charge, multiplicity and basis capacity, names
PySCF must know, the guess chkfile, cube sizes and the scan section.
"""

from __future__ import annotations

import math
import re

import numpy as np

from dm21cli.core import elements
from dm21cli.core.errors import InputError
from dm21cli.core.units import ANGSTROM_BOHR, BOHR_ANGSTROM
from dm21cli.io.inputs.basis import (
    basis_key_path,
    basis_location,
    basis_problem,
    count_orbitals,
    ecp_map,
    xc_problem,
)
from dm21cli.io.inputs.fields import DM21_FUNCTIONALS
from dm21cli.io.inputs.files import MAX_CHKFILE_BYTES, stat_regular
from dm21cli.io.inputs.models import GUESS_KEYWORDS, JobSpec, SpecMeta
from dm21cli.io.inputs.scan_model import ATOMS_OF
from dm21cli.io.inputs.xyz import Atom

#: atoms closer than this (Angstrom) are an input error.
MIN_DISTANCE_ANGSTROM = 0.1

#: cube files with more grid points than this are refused (about 56 bytes of
#: memory per point while one is computed, 13 bytes per point on disk).
MAX_CUBE_POINTS = 50_000_000

#: bytes per cube point: memory while computing (PySCF's coordinate arrays
#: and the values), and on disk (13 characters per value).
CUBE_BYTES_PER_POINT_MEMORY = 56

CUBE_BYTES_PER_POINT_DISK = 13.2


class _Problems:
    """Problems found by independent checks.

    A check that raises `InputError` has its problem recorded, and validation
    goes on with the next check; a check that needs an earlier one to pass
    (the orbital count needs a known basis) is skipped when it did not.
    """

    def __init__(self):
        self.found: list[InputError] = []

    def run(self, check, *args) -> bool:
        """Run ``check(*args)``; False if it raised InputError (recorded) or added problems."""
        before = len(self.found)
        try:
            check(*args)
        except InputError as exc:
            self.add(exc)
            return False
        return len(self.found) == before

    def add(self, exc: InputError) -> None:
        for problem in exc.problems:
            if all(problem.render() != known.render() for known in self.found):
                self.found.append(problem)

    def raise_any(self) -> None:
        if self.found:
            raise InputError.several(self.found)


def validate_job(spec: JobSpec) -> None:
    """The checks that need chemistry; raises `InputError` naming file, line and field.

    Elements, coordinates, interatomic distances, electron count versus charge
    and multiplicity, functional and warm-start names (libxc), basis coverage
    of every element (PySCF's basis library), effective core potentials
    (`ecp_map`), the electrons against the orbitals the basis gives, the guess
    chkfile, restricted open-shell DM21, requested orbital cubes against the
    number of orbitals, and the size of the cube files.  Every independent
    problem is reported: the InputError raised is the first one and carries
    all of them in ``.problems``.
    """
    problems = _Problems()
    problems.run(_check_geometry, spec, problems)
    electrons_ok = problems.run(_check_electrons, spec)
    covered = _basis_mapping_problems(spec, problems)
    basis_ok = len(covered) == len(set(spec.molecule.symbols))
    _restriction_problems(spec, problems)
    _section_problems(spec, problems)
    _functional_problems(spec, problems)
    names_ok = _basis_name_problems(spec, covered, problems)
    if not (basis_ok and names_ok):
        problems.raise_any()
    if not problems.run(ecp_map, spec):
        problems.raise_any()
    nao = _orbital_count(spec, problems)
    if nao is not None and electrons_ok:
        problems.run(_check_capacity, spec, nao)
        if spec.scf.occupations is not None:
            problems.run(_check_occupations, spec, nao)
    _orbital_index_problems(spec, nao, problems)
    problems.raise_any()


def _basis_mapping_problems(spec: JobSpec, problems: _Problems) -> list[str]:
    """The molecule's elements (each once, in order) that have a basis set; a basis mapping's
    key that is no element symbol or 'default', and an element without a basis, are
    problems."""
    meta: SpecMeta = spec._meta
    covered = list(dict.fromkeys(spec.molecule.symbols))
    if isinstance(spec.basis, dict):
        for key in spec.basis:
            if key != "default" and elements.normalise_symbol(key) != key:
                problems.add(InputError(f"{elements.unknown_element_message(key)}; basis mapping keys are "
                                        f"element symbols or 'default'",
                                        **meta.locate(basis_key_path(meta, key))))
        for symbol in list(covered):
            if spec.basis_for(symbol) is None:
                covered.remove(symbol)
                problems.add(InputError(f"no basis for element {symbol}: add '{symbol}: <basis>' or a "
                                        f"'default' entry", **meta.locate(("basis",))))
    return covered


def _restriction_problems(spec: JobSpec, problems: _Problems) -> None:
    """What a restricted calculation cannot do (no PySCF needed): DM21 for an open shell,
    fixed occupations, and orbital cubes of one spin (``orbital:5a``)."""
    meta: SpecMeta = spec._meta
    mol = spec.molecule
    restricted = spec.resolved_restricted()
    if spec.is_dm21 and restricted and mol.multiplicity > 1:
        problems.add(InputError(f"restricted open-shell DM21 is not supported (multiplicity "
                                f"{mol.multiplicity}); use restricted: false or null",
                                **meta.locate(("scf", "restricted"))))
    if spec.scf.occupations is not None and restricted:
        problems.add(InputError("fixed occupations (scf.occupations) need an unrestricted "
                                "calculation; set scf.restricted to false or null",
                                **meta.locate(("scf", "restricted"))))
    for i, cube in enumerate(spec.outputs.cubes):
        if cube[-1] in "ab" and cube.startswith("orbital:") and restricted:
            problems.add(InputError(f"{cube}: spin suffixes a/b need an unrestricted calculation "
                                    f"(this one is restricted); use orbital:{cube[8:-1]}",
                                    **meta.locate(("outputs", "cubes", i))))


def _section_problems(spec: JobSpec, problems: _Problems) -> None:
    """The checks of the guess chkfile, of the sections given (solvent, scan; opt and freq
    also when the task is theirs) and of the cube files' size."""
    problems.run(_check_guess_chkfile, spec)
    if spec.solvent is not None:
        problems.run(_check_solvent_model, spec)
    if spec.scan is not None:
        problems.run(_validate_scan, spec)
    if spec.opt is not None or spec.job.task == "opt":
        problems.run(_validate_opt, spec, problems)
    if spec.freq is not None or spec.job.task == "freq":
        problems.run(validate_freq, spec)
    problems.run(_check_cube_size, spec)


def _basis_name_problems(spec: JobSpec, covered: list[str], problems: _Problems) -> bool:
    """Whether the basis set of each element in `covered` is one PySCF has for it (each
    problem added)."""
    ok = True
    for symbol in covered:
        problem = basis_problem(spec.basis_for(symbol), symbol)
        if problem:
            ok = False
            problems.add(InputError(problem, **basis_location(spec, symbol)))
    return ok


def _orbital_count(spec: JobSpec, problems: _Problems) -> int | None:
    """The number of orbitals the basis gives the molecule (`count_orbitals`); None after
    adding its problem."""
    try:
        return count_orbitals(spec)
    except InputError as exc:
        problems.add(exc)
    return None


def _orbital_index_problems(spec: JobSpec, nao: int | None, problems: _Problems) -> None:
    """Orbitals asked for (``outputs.cubes`` ``orbital:N``, ``outputs.orbitals``) beyond the
    `nao` the basis gives (not checked when nao is None)."""
    meta: SpecMeta = spec._meta
    wanted = [(("outputs", "cubes", i), int(re.sub(r"[ab]$", "", c[8:])))
              for i, c in enumerate(spec.outputs.cubes) if c.startswith("orbital:")]
    wanted += [(("outputs", "orbitals", i), n) for i, n in enumerate(spec.outputs.orbitals)]
    if nao is not None:
        for path, n in wanted:
            if n > nao:
                problems.add(InputError(f"orbital {n} does not exist: {spec.basis_label()} gives {nao} "
                                        f"orbitals for {spec.molecule.formula()}", **meta.locate(path)))


def _functional_problems(spec, problems: _Problems) -> None:
    """The functional (or DM21's warm-start functional) must be a name PySCF knows."""
    meta: SpecMeta = spec._meta
    if not spec.is_dm21:
        problem = xc_problem(spec.functional)
        if problem:
            problems.add(InputError(problem, **meta.locate(("functional",))))
    elif spec.scf.warm_start is not None:
        problem = xc_problem(spec.scf.warm_start)
        if problem:
            problems.add(InputError(problem.replace("unknown functional", "unknown warm-start functional"),
                                    **meta.locate(("scf", "warm_start"))))


def validate_settings(spec: JobSpec) -> None:
    """The checks of `validate_job` that need no atoms (a calculator's settings before it
    has atoms): the functional's and the warm start's names (libxc), and that each basis
    set is one PySCF knows; which elements it covers waits for the atoms.  Raises
    `InputError` naming the field, every problem in ``.problems``.
    """
    meta: SpecMeta = spec._meta
    problems = _Problems()
    _functional_problems(spec, problems)
    entries = [(("basis",), spec.basis)] if isinstance(spec.basis, str) else \
        [(basis_key_path(meta, key), name) for key, name in spec.basis.items()]
    for path, name in entries:
        problem = basis_problem(name, "H")  # a known set without H says "no functions for H"
        if problem and problem.startswith("unknown basis set"):
            problems.add(InputError(problem, **meta.locate(path)))
    problems.raise_any()


def _check_geometry(spec: JobSpec, problems: _Problems) -> None:
    """Elements, finite coordinates, and atoms closer than MIN_DISTANCE_ANGSTROM (each atom once)."""
    meta: SpecMeta = spec._meta
    mol = spec.molecule
    atoms = mol.atoms

    def atom_error(message: str, atom: Atom) -> InputError:
        return InputError(message, file=mol.source_file, line=atom.line, field=mol._source_field)

    if not atoms:
        raise InputError("the molecule has no atoms", **meta.locate(("molecule",)))
    for n, atom in enumerate(atoms, start=1):
        if elements.normalise_symbol(atom.symbol) != atom.symbol:
            raise atom_error(f"atom {n}: {elements.unknown_element_message(atom.symbol)}", atom)
        if not all(math.isfinite(x) for x in atom.position):
            raise atom_error(f"atom {n} ({atom.symbol}): coordinates are not finite numbers", atom)
    coords = mol.coords_angstrom()
    reported: set[int] = set()
    for i in range(len(atoms) - 1):
        dist = np.sqrt(((coords[i + 1:] - coords[i]) ** 2).sum(axis=1))
        for k in np.flatnonzero(dist < MIN_DISTANCE_ANGSTROM):
            j = i + 1 + int(k)
            if j in reported:
                continue
            reported.add(j)
            hint = " (are the coordinates in bohr? set molecule.units: bohr)" if mol.units == "angstrom" \
                and dist[k] > 0.05 else ""
            problems.add(atom_error(
                f"atoms {i + 1} ({atoms[i].symbol}) and {j + 1} ({atoms[j].symbol}) are "
                f"{dist[k]:.3g} Angstrom apart (minimum {MIN_DISTANCE_ANGSTROM} Angstrom){hint}",
                atoms[j]))


def _charge_blame(spec: JobSpec) -> tuple:
    """The field to name for an electron-count problem: an option first, then a key in the file."""
    meta: SpecMeta = spec._meta
    charge_path, mult_path = ("molecule", "charge"), ("molecule", "multiplicity")

    def given(path: tuple) -> bool:
        return path in meta.overridden or path in meta.lines

    if mult_path in meta.overridden:
        return mult_path
    if charge_path in meta.overridden:
        return charge_path
    if given(mult_path) or not given(charge_path):
        return mult_path
    return charge_path


def _check_electrons(spec: JobSpec) -> None:
    """Electron count (all electrons) against charge and multiplicity."""
    meta: SpecMeta = spec._meta
    mol = spec.molecule
    nelec = mol.nelectron()
    formula = mol.formula()
    if nelec < 1:
        raise InputError(f"charge {mol.charge} leaves {nelec} electrons ({formula} has "
                         f"{mol.nuclear_charge()} protons)", **meta.locate(("molecule", "charge")))
    mult = mol.multiplicity
    if mult - 1 > nelec:
        raise InputError(f"multiplicity {mult} needs at least {mult - 1} unpaired electrons but "
                         f"{formula} with charge {mol.charge} has {nelec}",
                         **meta.locate(("molecule", "multiplicity")))
    if (nelec - (mult - 1)) % 2:
        parity = "odd" if nelec % 2 else "even"
        need = "2, 4, ..." if nelec % 2 else "1, 3, ..."
        raise InputError(f"multiplicity {mult} does not fit {nelec} electrons ({formula}, charge "
                         f"{mol.charge}): an {parity} electron count needs multiplicity {need}",
                         **meta.locate(_charge_blame(spec)))


def _check_capacity(spec: JobSpec, nao: int) -> None:
    """The electrons outside the ECP cores against the spin and the `nao` orbitals of the basis."""
    meta: SpecMeta = spec._meta
    mol = spec.molecule
    ecp = ecp_map(spec)
    core = sum(ecp[s].core_electrons for s in mol.symbols if s in ecp)
    nelec = mol.nelectron() - core
    unpaired = mol.multiplicity - 1
    formula = mol.formula()
    outside = f" outside the ECP cores ({core} core electrons)" if core else ""
    if core:
        if nelec < 1:
            raise InputError(f"charge {mol.charge} leaves {nelec} electrons{outside} ({formula} has "
                             f"{mol.nuclear_charge()} protons)", **meta.locate(("molecule", "charge")))
        if unpaired > nelec:
            raise InputError(f"multiplicity {mol.multiplicity} needs at least {unpaired} unpaired "
                             f"electrons but {formula} with charge {mol.charge} has {nelec}{outside}",
                             **meta.locate(("molecule", "multiplicity")))
        if (nelec - unpaired) % 2:
            raise InputError(f"multiplicity {mol.multiplicity} does not fit the {nelec} electrons{outside}",
                             **meta.locate(_charge_blame(spec)))
    n_alpha, n_beta = (nelec + unpaired) // 2, (nelec - unpaired) // 2
    if n_alpha <= nao:
        return
    charge_path, mult_path = ("molecule", "charge"), ("molecule", "multiplicity")
    given = [p for p in (charge_path, mult_path) if p in meta.overridden or p in meta.lines]
    overridden = [p for p in given if p in meta.overridden]
    blame = (overridden or given or [("basis",)])[0]
    raise InputError(f"{formula} with charge {mol.charge} and multiplicity {mol.multiplicity} has "
                     f"{nelec} electrons{outside} ({n_alpha} alpha, {n_beta} beta), but "
                     f"{spec.basis_label()} gives {nao} orbitals: at most {nao} electrons of each spin fit",
                     **meta.locate(blame))


def _check_occupations(spec: JobSpec, nao: int) -> None:
    """``scf.occupations`` against the orbitals and the molecule's electrons (outside ECP cores).

    At most `nao` numbers per spin; their sum N must satisfy N_mol - 1 < N <= N_mol:
    the molecule's charge is that of the integer state whose electrons they hold
    (for N between two integers, the upper one).
    """
    meta: SpecMeta = spec._meta
    occ = spec.scf.occupations
    for spin in ("alpha", "beta"):
        values = getattr(occ, spin)
        if len(values) > nao:
            raise InputError(f"{len(values)} {spin} occupation numbers, but {spec.basis_label()} "
                             f"gives {nao} orbitals", **meta.locate(("scf", "occupations", spin)))
    ecp = ecp_map(spec)
    mol = spec.molecule
    core = sum(ecp[s].core_electrons for s in mol.symbols if s in ecp)
    nelec = mol.nelectron() - core
    total = occ.total()
    if not nelec - 1 < total <= nelec + 1e-9:
        outside = " outside the ECP cores" if core else ""
        raise InputError(f"the occupation numbers add up to {total:g} electrons, but {mol.formula()} "
                         f"with charge {mol.charge} has {nelec} electrons{outside}: the molecule's "
                         f"charge must be that of the integer electron count at or just above "
                         f"{total:g}", **meta.locate(("scf", "occupations")))


def _size_text(nbytes: float) -> str:
    if not math.isfinite(nbytes):
        return "more bytes than can be counted"
    for unit, scale in (("EB", 1e18), ("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            value = nbytes / scale
            return f"{value:.3g} {unit}" if value < 1e4 else f"{nbytes:.2e} bytes"
    return f"{nbytes:.0f} bytes"


def _check_cube_size(spec: JobSpec) -> None:
    """Refuse cube files whose grid has more than MAX_CUBE_POINTS points (the box as write_cube builds it)."""
    from dm21cli.io.outputs.orbitals import cube_grid_shape

    if not spec.outputs.cube_requests():
        return
    meta: SpecMeta = spec._meta
    out = spec.outputs
    coords = spec.molecule.coords_bohr()
    with np.errstate(over="ignore", invalid="ignore"):
        shape = cube_grid_shape(coords, out.cube_spacing * ANGSTROM_BOHR, out.cube_margin * ANGSTROM_BOHR)
        points = float(np.prod(shape))
        box = (coords.max(axis=0) - coords.min(axis=0)) * BOHR_ANGSTROM + 2 * out.cube_margin
    if points <= MAX_CUBE_POINTS:
        return
    for path in (("outputs", "cube_spacing"), ("outputs", "cube_margin"), ("outputs", "cubes"),
                 ("outputs", "orbitals")):
        if path in meta.overridden or path in meta.lines:
            break
    count = f"{points:.3g}" if math.isfinite(points) else "too many to count"
    raise InputError(
        f"cube files of a grid {out.cube_spacing:g} Angstrom apart over the {box[0]:.3g} x "
        f"{box[1]:.3g} x {box[2]:.3g} Angstrom box (atoms plus cube_margin {out.cube_margin:g}) "
        f"would have {count} points each ({_size_text(points * CUBE_BYTES_PER_POINT_MEMORY)} of "
        f"memory and {_size_text(points * CUBE_BYTES_PER_POINT_DISK)} on disk per cube); at most "
        f"{MAX_CUBE_POINTS:,} points are allowed: raise outputs.cube_spacing or lower outputs.cube_margin",
        **meta.locate(path))


def _check_guess_chkfile(spec: JobSpec) -> None:
    """``scf.guess`` as a path: a regular file, not too large, an HDF5 file with PySCF's SCF record."""
    chk = spec.guess_chkfile()
    if chk is None:
        return
    where = spec._meta.locate(("scf", "guess"))

    def fail(message: str) -> InputError:
        if message == "no such file":
            return InputError(f"guess chkfile not found: {chk} (or use one of "
                              f"{', '.join(GUESS_KEYWORDS)})", **where)
        return InputError(f"guess chkfile {chk}: {message}", **where)

    stat_regular(chk, fail, MAX_CHKFILE_BYTES)
    import h5py

    try:
        if not h5py.is_hdf5(chk):
            raise fail("not a PySCF chkfile (not an HDF5 file)")
        with h5py.File(chk, "r") as h5:
            scf = h5.get("scf")
            if not isinstance(scf, h5py.Group):
                raise fail("not a PySCF chkfile (no 'scf' group)")
            shapes = {}
            for name in ("mo_coeff", "mo_occ"):
                item = scf.get(name)
                if not isinstance(item, h5py.Dataset):
                    raise fail(f"not a PySCF chkfile (no scf/{name})")
                shapes[name] = item.shape
            if not isinstance(h5.get("mol"), h5py.Dataset):
                raise fail("not a PySCF chkfile (no 'mol' record)")
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - h5py raises OSError, KeyError, ... for broken files
        reason = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
        raise fail(f"cannot read it as a PySCF chkfile ({reason})") from None
    coeff, occ = shapes["mo_coeff"], shapes["mo_occ"]
    if not (len(coeff) in (2, 3) and len(occ) == len(coeff) - 1 and coeff[-1] == occ[-1]
            and coeff[:-2] == occ[:-1]):
        raise fail(f"not a PySCF chkfile (scf/mo_coeff has shape {coeff}, scf/mo_occ {occ})")


def _check_solvent_model(spec: JobSpec) -> None:
    """The solvent model must be one this PySCF has: its module, and for SMD the compiled
    library of its cavity-dispersion-solvent-structure term (``libsolvent``, built with
    PySCF's cmake option ENABLE_SMD)."""
    import importlib

    model = spec.solvent.model
    module = {"ddCOSMO": "ddcosmo", "SMD": "smd"}.get(model, "pcm")
    try:
        found = importlib.import_module(f"pyscf.solvent.{module}")
    except ImportError as exc:
        raise InputError(f"this PySCF has no {model} (pyscf.solvent.{module}: {exc})",
                         **spec._meta.locate(("solvent", "model"))) from None
    if model == "SMD" and getattr(found, "libsolvent", None) is None:
        raise InputError("this PySCF has SMD without its compiled library libsolvent (the "
                         "cavity-dispersion-solvent-structure term; PySCF's cmake option "
                         "ENABLE_SMD); choose another model",
                         **spec._meta.locate(("solvent", "model")))


def validate_freq(spec: JobSpec) -> None:
    """The ``freq`` section against the molecule: at least two atoms (an atom has no
    vibrations), and the masses (`dm21cli.vib.masses.atomic_masses`: one per atom, or atom
    numbers that exist; masses > 0; isotope labels of the atom's element)."""
    from dm21cli.vib.masses import atomic_masses

    meta: SpecMeta = spec._meta
    natm = spec.molecule.natm
    if natm < 2:
        where = ("job", "task") if ("job", "task") in meta.lines else ("molecule",)
        raise InputError(f"a frequency calculation needs at least two atoms; the molecule has "
                         f"{natm} (an atom has no vibrations)", **meta.locate(where))
    where = meta.locate(("freq", "masses"))
    atomic_masses(spec.molecule.symbols, spec.freq_settings().masses, field="freq.masses",
                  file=where.get("file"), line=where.get("line"))


def _validate_opt(spec: JobSpec, problems: _Problems) -> None:
    """The ``opt`` section against the molecule: at least two atoms (geomeTRIC's minimum),
    a coordinate system that takes constraints, and the constraints themselves
    (`dm21cli.io.inputs.opt_model.check_constraints`: atoms, conflicts, values), with the
    distance, angle or dihedral a relaxed scan holds itself."""
    from dm21cli.io.inputs.opt_model import CONSTRAINT_COORDSYS, check_constraints

    meta: SpecMeta = spec._meta
    opt = spec.opt_settings()
    natm = spec.molecule.natm
    if natm < 2:
        where = ("job", "task") if ("job", "task") in meta.lines else ("molecule",)
        raise InputError(f"a geometry optimisation needs at least two atoms; the molecule has {natm}",
                         **meta.locate(where))
    scan = spec.scan
    scanned = None
    if scan is not None and scan.relax and (scan.kind or "distance") in ATOMS_OF and \
            len(set(scan.atoms)) == len(scan.atoms) == ATOMS_OF[scan.kind or "distance"] and \
            max(scan.atoms) <= natm:
        scanned = tuple(scan.atoms)
    for problem in check_constraints(opt, spec.molecule.coords_angstrom(), meta.locate,
                                     min_distance_angstrom=MIN_DISTANCE_ANGSTROM,
                                     scanned_atoms=scanned):
        problems.add(problem)
    if opt.hessian_every and not opt.transition:
        problems.add(InputError(
            "hessian_every is a transition-state search's (dm21 opt --ts, job.task: ts, "
            "opt.transition): a minimisation's Hessian is geomeTRIC's own guess, updated",
            **meta.locate(("opt", "hessian_every"))))
    if opt.irc and opt.constraints.lines():
        problems.add(InputError(
            "a reaction path (opt.irc) follows every coordinate: it takes no constraints",
            **meta.locate(("opt", "constraints"))))
    if opt.constraints.lines() and opt.coordsys not in CONSTRAINT_COORDSYS:
        raise InputError(f"constraints need geomeTRIC's delocalised internal coordinates "
                         f"({', '.join(CONSTRAINT_COORDSYS)}), not {opt.coordsys}",
                         **meta.locate(("opt", "coordsys")))


#: keys of the scan section that only scans moving atoms use, with their defaults
_GEOMETRY_ONLY = {"atoms": [1, 2], "fragment": None, "relax": False}
#: keys of the scan section that only distance scans use, with their defaults
_DISTANCE_ONLY = {"broken_symmetry": False, "reference_atoms": False,
                  "reference_charges": None, "reference_multiplicities": None}


def _check_electron_points(spec: JobSpec) -> None:
    """An electron-number scan's points, with the integers around its values added, counted
    (not listed) against MAX_POINTS: 0:1e308:1e307 is eleven values but 10^308 points."""
    from dm21cli.io.inputs.scan_model import electron_points_problem

    problem = electron_points_problem(spec.scan.electrons)
    if problem:
        raise InputError(problem, **spec._meta.locate(("scan", "electrons")))


def _validate_scan(spec: JobSpec) -> None:
    """The ``scan`` section against the molecule: atom numbers, fragment, functionals;
    for each kind of scan, the keys it does not use."""
    meta: SpecMeta = spec._meta
    scan = spec.scan
    natm = spec.molecule.natm
    for k, name in enumerate(scan.functionals or []):
        if name not in DM21_FUNCTIONALS:
            problem = xc_problem(name)
            if problem:
                raise InputError(problem, **meta.locate(("scan", "functionals", k)))
    kind = scan.kind
    if kind == "electrons":
        _check_electron_points(spec)
    if kind in ("electrons", "fractional_spin"):
        key = "electrons" if kind == "electrons" else "fractional_spin"
        for other, default in {**_GEOMETRY_ONLY, **_DISTANCE_ONLY}.items():
            if getattr(scan, other) != default:
                what = ("distance scans" if other in _DISTANCE_ONLY else
                        "distance scans and scans of an angle or dihedral")
                raise InputError(f"{other} is for {what}, not with scan.{key}",
                                 **meta.locate(("scan", other)))
        if kind == "fractional_spin" and scan.multiplicities is not None:
            raise InputError("multiplicities are for electron-number scans (scan.electrons)",
                             **meta.locate(("scan", "multiplicities")))
        if spec.scf.restricted is True:
            raise InputError(f"scan.{key} needs an unrestricted calculation; set scf.restricted to "
                             f"false or null", **meta.locate(("scf", "restricted")))
        return
    if scan.multiplicities is not None:
        raise InputError("multiplicities are for electron-number scans (scan.electrons)",
                         **meta.locate(("scan", "multiplicities")))
    if natm < 2:
        raise InputError(f"a scan needs at least two atoms; the molecule has {natm}",
                         **meta.locate(("scan",)))
    if scan.relax and natm < 3:
        raise InputError(f"a relaxed scan needs at least three atoms: with the scanned distance "
                         f"fixed, {natm} atoms have nothing left to relax (scan them without relax)",
                         **meta.locate(("scan", "relax")))
    if kind in ("angle", "dihedral"):
        _validate_rotation_scan(spec)
        return
    if len(scan.atoms) != 2:
        raise InputError(f"expected two atom numbers for a distance scan, got {len(scan.atoms)} "
                         f"(three are an angle's: scan.angles or --angle; four a dihedral's: "
                         f"scan.dihedrals or --dihedral)", **meta.locate(("scan", "atoms")))
    for k, n in enumerate(scan.atoms):
        if n > natm:
            raise InputError(f"atom {n} does not exist (the molecule has {natm} atoms)",
                             **meta.locate(("scan", "atoms", k)))
    first, second = scan.atoms
    if first == second:
        raise InputError(f"the two atoms of the pair must differ, got {first} twice",
                         **meta.locate(("scan", "atoms")))
    if scan.fragment is not None:
        _check_fragment(scan.fragment, natm, meta, lambda n: (
            f"the moving fragment must not contain atom {first}, the fixed atom of the pair "
            f"scan.atoms" if n == first else None))
        if second not in scan.fragment:
            raise InputError(f"the moving fragment must contain atom {second}, the moving atom of "
                             f"the pair scan.atoms", **meta.locate(("scan", "fragment")))
    restricted = spec.scf.restricted
    if scan.broken_symmetry and (spec.molecule.multiplicity != 1 or restricted):
        raise InputError("broken_symmetry needs a singlet (multiplicity 1) that may be computed "
                         "unrestricted (scf.restricted not true)",
                         **meta.locate(("scan", "broken_symmetry")))


def _check_fragment(fragment: list[int], natm: int, meta: SpecMeta, forbidden) -> None:
    """A scan's moving fragment (1-based atoms): each atom exists and is listed once, and
    forbidden(atom) (the reason it may not move, or None) has nothing against it; the error
    names the entry of scan.fragment."""
    seen: set[int] = set()
    for k, atom in enumerate(fragment):
        where = meta.locate(("scan", "fragment", k))
        if atom > natm:
            raise InputError(f"atom {atom} does not exist (the molecule has {natm} atoms)", **where)
        if atom in seen:
            raise InputError(f"atom {atom} appears twice in the fragment", **where)
        reason = forbidden(atom)
        if reason:
            raise InputError(reason, **where)
        seen.add(atom)


def _validate_rotation_scan(spec: JobSpec) -> None:
    """An angle or dihedral scan (``scan.angles`` / ``scan.dihedrals``): its atoms given, as
    many as the coordinate has, distinct and existing; a moving fragment with K (an angle) or
    L (a dihedral) and without I and J; no keys of distance scans; a relaxed angle that
    geomeTRIC can hold.  (The geometry itself: collinear atoms, a J-K bond in a ring, is
    `dm21cli.jobs.scan.plan`'s.)"""
    from dm21cli.io.inputs.opt_model import SET_ANGLE_DEGREES

    meta: SpecMeta = spec._meta
    scan = spec.scan
    natm = spec.molecule.natm
    kind = scan.kind
    key = "angles" if kind == "angle" else "dihedrals"
    n = ATOMS_OF[kind]
    names = "I J K (J the vertex)" if kind == "angle" else "I J K L (J-K the axis)"
    for other, default in _DISTANCE_ONLY.items():
        if getattr(scan, other) != default:
            raise InputError(f"{other} is for distance scans, not with scan.{key}",
                             **meta.locate(("scan", other)))
    if "atoms" not in scan.model_fields_set:
        raise InputError(f"{'an' if kind == 'angle' else 'a'} {kind} scan needs its {n} atoms "
                         f"{names} in scan.atoms (1-based), "
                         f"or on the command line: --{kind} {' '.join('IJKL'[:n])} VALUES",
                         **meta.locate(("scan", key)))
    if len(scan.atoms) != n:
        raise InputError(f"expected {'three' if n == 3 else 'four'} atom numbers {names} for "
                         f"scan.{key}, got {len(scan.atoms)}", **meta.locate(("scan", "atoms")))
    for k, atom in enumerate(scan.atoms):
        if atom > natm:
            raise InputError(f"atom {atom} does not exist (the molecule has {natm} atoms)",
                             **meta.locate(("scan", "atoms", k)))
        if atom in scan.atoms[:k]:
            raise InputError(f"atom {atom} appears twice in scan.atoms: the {n} atoms of the "
                             f"{kind} must differ", **meta.locate(("scan", "atoms", k)))
    i, j = scan.atoms[:2]
    carried = scan.atoms[-1]  # K of an angle, L of a dihedral
    if scan.fragment is not None:
        _check_fragment(scan.fragment, natm, meta, lambda atom: (
            f"the moving fragment must not contain atom {atom} ({'I' if atom == i else 'J'} of "
            f"the {kind} {_dashed(scan.atoms)}): it is rotated about "
            f"{'J' if kind == 'angle' else 'the J-K axis'}" if atom in (i, j) else None))
        if carried not in scan.fragment:
            raise InputError(f"the moving fragment must contain atom {carried} "
                             f"({'K' if kind == 'angle' else 'L'} of the {kind} "
                             f"{_dashed(scan.atoms)})", **meta.locate(("scan", "fragment")))
    if kind == "angle" and scan.relax:
        low, high = SET_ANGLE_DEGREES
        outside = [a for a in scan.angles if not low <= a <= high]
        if outside:
            raise InputError(f"a relaxed scan holds its angle in geomeTRIC, which cannot hold one "
                             f"below {low:g} or above {high:g} degrees (nearly linear): "
                             f"{', '.join(f'{a:g}' for a in outside)} (scan it rigidly, without "
                             f"relax)", **meta.locate(("scan", key)))


def _dashed(atoms) -> str:
    """``2-1-3``."""
    return "-".join(str(a) for a in atoms)
