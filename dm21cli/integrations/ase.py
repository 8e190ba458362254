"""`DM21Calculator`: an ASE calculator running DM21 (or any functional a dm21cli job runs).

ASE's optimisers, NEB and molecular dynamics drive it like any other
calculator::

    from ase.build import molecule
    from ase.optimize import BFGS
    from dm21cli.integrations.ase import DM21Calculator

    atoms = molecule("H2O")
    atoms.calc = DM21Calculator(functional="DM21", basis="def2-svp")
    BFGS(atoms).run(fmax=0.05)

Properties, in ASE's units: ``energy`` (eV), ``forces`` (eV/Angstrom),
``dipole`` (e*Angstrom).  The energy is the one ``dm21 run`` reports for the
same job (``return_energy``: the SCF energy, for DM21 with the float64 final
E_xc of precision "mixed", plus D3(BJ) when asked for); the forces are minus
`dm21cli.jobs.gradient.nuclear_gradient` of it, with grid response, so that
they are the derivative of that energy on grids that move with the atoms.
Conversions use ASE's own constants (``ase.units.Hartree``, ``ase.units.Bohr``):
the positions go to PySCF in bohr as ``positions / Bohr``, so energy and forces
are consistent to the last digit.

Each geometry runs dm21cli's own SCF: `build_molecule`, `build_grids`,
`build_scf` and `run_with_escalation` exactly as `dm21cli.jobs.run.run_job`
calls them (warm start, frozen-XC iterations, the escalation ladder), but no
output directory, log or restart file is written.  A new geometry gets a new
molecule, grid and SCF object, hence a new `DM21XC` whose exchange integrals
and AO values are computed for that geometry (its caches are never carried
from one geometry to the next).  What is carried over is the loaded network
and, when the atoms are the same elements in the same order, the converged
orbitals: the next geometry's initial guess (`DM21Calculator._guess`).
Nothing is recomputed while the atoms do not move: the energy and dipole come
from one SCF, the forces from one gradient, each when first asked for.

``calc.info`` describes the latest calculation (guess, SCF attempts and
cycles, DM21 evaluations, energies in hartree, the log lines), ``calc.counts``
how many SCFs and gradients the calculator ran, ``calc.mf`` and ``calc.spec``
are the converged PySCF SCF object and the `JobSpec` of the current geometry.

ASE is an optional dependency: ``pip install -e '.[ase]'`` in a clone of dm21cli.
"""

from __future__ import annotations

import difflib
import os
import time
from collections.abc import Mapping

import numpy as np

try:
    from ase import units as _units
    from ase.calculators.calculator import Calculator, SCFError, all_changes
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError("dm21cli.integrations.ase needs ASE, an optional dependency of dm21cli: "
                      "pip install -e '.[ase]' in a clone of dm21cli") from _exc

from dm21cli.core.errors import ConvergenceError, InputError

__all__ = ["DM21Calculator", "DM21SCFError", "job_atoms"]


class DM21SCFError(ConvergenceError, SCFError):
    """The SCF of a geometry did not converge within its attempts.

    Both ASE's ``SCFError`` (a ``CalculationFailed``, what ASE's optimisers,
    NEB and user scripts catch from any calculator) and dm21cli's
    `ConvergenceError` (exit status 4 if it reaches the command line; a retry
    with other ``scf`` settings may help), so either family of handlers sees it.
    """


#: Job-file settings a `DM21Calculator` takes (ASE parameters), with the job file's
#: defaults.  ``scf`` holds the other keys of the job file's ``scf`` section.
DEFAULT_PARAMETERS = {
    "functional": "DM21",
    "basis": "def2-svp",
    "charge": 0,
    "multiplicity": None,  # as in a job file: 1, or a lone atom's ground state (Hund's rule)
    "dispersion": None,
    "solvent": None,  # a name, a dielectric constant, or the job file's section as a dict
    "grid_level": 3,
    "scf": None,
    "memory": None,
    "threads": None,
}

#: parameters whose change leaves energy and forces as they are (ASE: ``set`` need not
#: reset): they apply from the next calculation on
HARMLESS_PARAMETERS = frozenset({"threads", "memory"})

#: what errors name as their "file": ``DM21Calculator: charge: expected an integer, got 'x'``
LABEL = "DM21Calculator"

#: job-file paths -> the calculator keyword (or ``atoms``) that errors about them name
KEYWORD_FIELDS = {("molecule",): "atoms", ("molecule", "charge"): "charge", ("solvent",): "solvent",
                  ("molecule", "multiplicity"): "multiplicity",
                  ("scf", "grid_level"): "grid_level", ("resources", "threads"): "threads",
                  ("resources", "memory"): "memory"}

#: names other programs give a setting -> the calculator's keyword
_ALIASES = {"xc": "functional", "method": "functional", "mult": "multiplicity",
            "spin": "multiplicity", "basis_set": "basis", "nthreads": "threads",
            "max_memory": "memory"}

#: |sum - nearest integer| below which initial charges or magnetic moments add up to an integer
_WHOLE_TOL = 1e-6


def _load(job):
    from dm21cli.io.inputs.load import load_job
    from dm21cli.io.inputs.models import JobSpec

    if isinstance(job, JobSpec):
        return job
    if not isinstance(job, (str, os.PathLike)):
        raise InputError(f"expected a job file (path) or a JobSpec, got {type(job).__name__}",
                         file=LABEL, field="job")
    return load_job(job)


def job_atoms(job):
    """The molecule of a job file (path) or `JobSpec` as ASE ``Atoms`` (Angstrom; bohr
    coordinates converted with ASE's ``Bohr``, the constant the calculator converts back with)."""
    from ase import Atoms

    mol = _load(job).molecule
    scale = _units.Bohr if mol.units == "bohr" else 1.0
    return Atoms(symbols=mol.symbols, positions=mol.coords() * scale)


def _settings_from_job(job) -> dict:
    """The parameters of a job file (path) or `JobSpec`: everything but its atoms."""
    spec = _load(job)
    scf = spec.scf.model_dump()
    grid_level = scf.pop("grid_level")
    return {"functional": spec.functional,
            "basis": spec.basis if isinstance(spec.basis, str) else dict(spec.basis),
            "charge": spec.molecule.charge,
            # a multiplicity the job file did not give is chosen anew for the atoms ASE gives
            "multiplicity": spec.molecule.multiplicity if spec.molecule.multiplicity_given else None,
            "dispersion": spec.dispersion, "grid_level": grid_level, "scf": scf,
            "solvent": None if spec.solvent is None else spec.solvent.resolved(),
            "memory": spec.resources.memory, "threads": spec.resources.threads}


def _one_error(exc: InputError) -> InputError:
    """`exc` with all its problems on its one line (the job-file message's pointer to
    ``dm21 validate`` means nothing to a calculator)."""
    if len(exc.problems) <= 1:
        return exc
    first, rest = exc.problems[0], exc.problems[1:]
    more = "; ".join(problem.render().removeprefix(f"{LABEL}: ") for problem in rest)
    return InputError(f"{first.message} (and {len(rest)} more: {more})", file=first.file,
                      line=first.line, field=first.field)


def check_parameter_names(names) -> None:
    """`InputError` naming the first of `names` that is not a `DM21Calculator` keyword
    (the message lists all of them, each with a suggestion when one is close)."""
    unknown = [str(name) for name in names if name not in DEFAULT_PARAMETERS]
    if not unknown:
        return
    shown = []
    for name in unknown:
        close = _ALIASES.get(name) or next(iter(difflib.get_close_matches(
            name, list(DEFAULT_PARAMETERS), n=1, cutoff=0.6)), None)
        shown.append(f"{name!r}" + (f" (did you mean {close!r}?)" if close else ""))
    raise InputError(f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(shown)}; "
                     f"{LABEL} takes {', '.join(DEFAULT_PARAMETERS)} and checkpoints",
                     file=LABEL, field=unknown[0])


def scf_settings(scf) -> dict:
    """The ``scf`` parameter as a new dict (None: empty); `InputError` if it is not a
    mapping, or holds ``grid_level`` (a keyword of its own, which would silently win)."""
    if scf is None:
        return {}
    if not isinstance(scf, Mapping):
        raise InputError(f"expected a dict of the job file's scf keys (e.g. {{'conv_tol': 1e-8}}), "
                         f"got {type(scf).__name__} {scf!r:.40}", file=LABEL, field="scf")
    if "grid_level" in scf:
        raise InputError("give the grid level as the keyword grid_level, not in scf",
                         file=LABEL, field="scf.grid_level")
    return dict(scf)


def settings_job_data(parameters: dict, geometry=None) -> dict:
    """Job-file data of calculator `parameters` (all of `DEFAULT_PARAMETERS`) at `geometry`
    ((atomic numbers, positions in Angstrom), or None: one placeholder atom).

    Raises `InputError` for a malformed ``scf`` (`scf_settings`).
    """
    p = parameters
    scf = scf_settings(p.get("scf"))
    if p.get("grid_level") is not None:
        scf["grid_level"] = p["grid_level"]
    if geometry is None:
        xyz = "He 0 0 0\n"
    else:
        from ase.data import chemical_symbols

        numbers, positions = geometry
        bohr = np.asarray(positions, dtype=float) / _units.Bohr
        xyz = "".join(f"{chemical_symbols[z] if 0 < z < len(chemical_symbols) else z} "
                      f"{x!r} {y!r} {w!r}\n" for z, (x, y, w) in zip(numbers.tolist(), bohr.tolist()))
    return {"job": {"name": "ase"},
            "molecule": {"xyz": xyz, "units": "bohr", "charge": p["charge"],
                         "multiplicity": p["multiplicity"]},
            "basis": p["basis"], "functional": p["functional"], "dispersion": p["dispersion"],
            "solvent": solvent_section(p.get("solvent")),
            "scf": scf, "resources": {"threads": p["threads"], "memory": p["memory"]}}


def solvent_section(solvent):
    """The job file's ``solvent`` section of the ``solvent`` parameter: a dict is the section
    itself; a name, a dielectric constant or 'none' is what ``--solvent`` takes
    (`dm21cli.io.inputs.solvent_model.solvent_override`); None: the gas phase."""
    from dm21cli.io.inputs.solvent_model import solvent_override

    if solvent is None or isinstance(solvent, Mapping):
        return None if solvent is None else dict(solvent)
    return solvent_override(solvent)


def calculator_spec(parameters: dict, geometry=None):
    """The `JobSpec` of calculator `parameters` at `geometry` ((atomic numbers, positions in
    Angstrom)), validated as a job file is (`validate_job`); geometry None: the checks that
    need no atoms (the schema, `validate_settings`: functional and basis-set names).

    Raises `InputError` (one line, every problem) naming the calculator's keyword
    (``charge``, ``grid_level``, ``scf.conv_tol``) or ``atoms``.
    """
    from dm21cli.io.inputs.load import load_job_data
    from dm21cli.io.inputs.validate import validate_settings

    try:
        data = settings_job_data(parameters, geometry)
        spec = load_job_data(data, label=LABEL, renamed=KEYWORD_FIELDS, atoms_field="atoms",
                             name="ase", chemistry=geometry is not None)
        if geometry is None:
            validate_settings(spec)
    except InputError as exc:
        raise _one_error(exc) from None
    return spec


def check_atoms(atoms, charge, multiplicity) -> None:
    """`InputError` if ASE `atoms` say what a calculation with `charge` and `multiplicity`
    would ignore: periodic boundaries, initial charges (``atoms.set_initial_charges``)
    that do not add up to `charge`, initial magnetic moments that do not add up to
    multiplicity - 1 unpaired electrons.  All zero (ASE's default) says nothing."""
    from ase import Atoms

    if not isinstance(atoms, Atoms):
        raise InputError(f"expected ASE Atoms, got {type(atoms).__name__}", file=LABEL,
                         field="atoms")
    if atoms.pbc.any():
        raise InputError("periodic systems are not supported (atoms.pbc is set): "
                         "dm21cli computes molecules", file=LABEL, field="atoms.pbc")
    charges = atoms.get_initial_charges()
    if np.any(charges != 0):
        total = float(charges.sum())
        whole = abs(total - round(total)) <= _WHOLE_TOL
        if not whole or round(total) != charge:
            fix = f"pass charge={round(total)}" if whole else "they must add up to a whole charge"
            raise InputError(f"the atoms' initial charges add up to {total:g}, but charge is "
                             f"{charge}: {fix}, or clear them (atoms.set_initial_charges(None))",
                             file=LABEL, field="atoms.initial_charges")
    moments = atoms.get_initial_magnetic_moments()
    if moments.ndim != 1:
        if np.any(moments != 0):
            raise InputError("non-collinear initial magnetic moments are not supported; give the "
                             "spin as multiplicity", file=LABEL, field="atoms.initial_magmoms")
    elif np.any(moments != 0):
        unpaired = abs(float(moments.sum()))
        whole = abs(unpaired - round(unpaired)) <= _WHOLE_TOL
        if not whole or round(unpaired) + 1 != multiplicity:
            fix = (f"pass multiplicity={round(unpaired) + 1}" if whole else
                   "they must add up to a whole number of unpaired electrons")
            raise InputError(f"the atoms' initial magnetic moments add up to {unpaired:g}, "
                             f"but multiplicity is {multiplicity} ({multiplicity - 1} unpaired "
                             f"electrons): {fix}, or clear them "
                             f"(atoms.set_initial_magnetic_moments(None))", file=LABEL,
                             field="atoms.initial_magmoms")


class DM21Calculator(Calculator):
    """An ASE calculator for molecules with DM21 (all four variants) or any PySCF functional.

    job: a job file (path) or `JobSpec` whose settings are the starting
    point (its molecule is ignored: the atoms come from ASE).  Keyword
    parameters, the job file's settings: functional ('DM21', 'DM21m',
    'DM21mc', 'DM21mu' or a PySCF/libxc name), basis (a name or {element:
    name}), charge, multiplicity (None: 1, or for a lone atom its ground state by
    Hund's rule, as in a job file), dispersion (None or 'd3bj'), solvent (None: gas phase;
    a name such as 'water', a dielectric constant, or the job file's section as a dict,
    e.g. ``{"model": "SMD", "name": "water"}``), grid_level
    (0-9), scf (a dict of the job file's other ``scf`` keys, e.g.
    ``{"conv_tol": 1e-8, "precision": "float64"}``; merged into the job's),
    memory (MB, or a string like '4GB': the whole process's budget, as
    ``--memory``), threads.  checkpoints: the DM21 weights folder (else
    dm21's search: ``DM21_CHECKPOINTS``, the user data folder).

    Every keyword is checked here and in `set` (`InputError` naming it:
    unknown names, wrong types or values, functional and basis-set names
    PySCF does not know), and against the atoms (given here, and at each new
    set of atoms) as a job file's are (elements, distances, electrons against
    charge and multiplicity, basis coverage; initial charges and magnetic
    moments of the atoms that contradict charge and multiplicity).  Periodic
    atoms are refused (`InputError`).  The process's thread count is set to
    ``threads`` at each calculation, as ``dm21 run`` does.

    A geometry whose SCF does not converge within ``scf.max_attempts``
    raises `DM21SCFError` (ASE's ``SCFError`` and dm21cli's
    `ConvergenceError`): an optimiser or a dynamics run must stop rather than
    take an unconverged energy or force as a number.  The density of a
    geometry that failed is not used as a guess later.
    """

    implemented_properties = ["energy", "forces", "dipole"]
    #: a molecule has no cell (periodic atoms are refused); a change of the atoms' initial
    #: charges or magnetic moments is checked against charge and multiplicity
    ignored_changes = {"cell"}
    default_parameters = DEFAULT_PARAMETERS
    name = "dm21"

    def __init__(self, job=None, *, checkpoints: str | os.PathLike | None = None,
                 atoms=None, **kwargs):
        _check_checkpoints(checkpoints)
        check_parameter_names(kwargs)
        self.checkpoints = checkpoints
        self.mf = None
        #: the current geometry's `dm21cli.jobs.point.Point` (its SCF, properties, gradient)
        self.point = None
        self.spec = None
        self.info: dict = {}
        self.counts = {"scf": 0, "gradient": 0}
        self._geometry = None  # (numbers, positions) of self.mf
        #: the results computed at self._geometry (ASE may empty self.results while it holds)
        self._computed: dict = {}
        #: the last converged geometry's atomic numbers, orbitals and warm-start orbitals
        self._previous: dict | None = None
        self._network = None  # (key, network)
        if job is not None:
            settings = _settings_from_job(job)
            if kwargs.get("scf") is not None:
                settings["scf"] = {**settings["scf"], **scf_settings(kwargs.pop("scf"))}
            kwargs = {**settings, **kwargs}
        super().__init__(atoms=None, **kwargs)  # ASE calls set(): every keyword checked
        if atoms is not None:
            self._check_atoms(atoms)
            calculator_spec(self.parameters, _geometry_of(atoms))
            self.atoms = atoms.copy()
            atoms.calc = self

    # -- ASE protocol ---------------------------------------------------------
    def set(self, **kwargs):
        """Change parameters (ASE's ``Calculator.set``): {name: new value} of those that changed.

        Every name and value is checked first, with the other parameters
        (`InputError` naming the keyword; then nothing changes).  ``checkpoints``
        may be set too; ``scf`` replaces the whole dict (at construction it is
        merged into a job file's).  A change of anything but ``threads`` and ``memory``
        drops the results, the SCF and the density guess, so that the next
        energy and forces are computed with the new settings; values equal to
        the current ones change nothing and keep the results.
        """
        checkpoints = kwargs.pop("checkpoints", self.checkpoints)
        _check_checkpoints(checkpoints)
        check_parameter_names(kwargs)
        calculator_spec({**self.parameters, **kwargs})  # raises InputError
        changed = super().set(**kwargs)
        if _path_or_none(checkpoints) != _path_or_none(self.checkpoints):
            changed["checkpoints"] = self.checkpoints = checkpoints
        if set(changed) - HARMLESS_PARAMETERS:
            self._drop_results()
        return changed

    def reset(self):
        """Forget the atoms, the results, the SCF and the density (ASE's ``reset``)."""
        super().reset()
        self._drop_results()

    def _drop_results(self) -> None:
        """Forget the results, the SCF and the density guess; the atoms stay, so that
        ``calc.get_potential_energy()`` computes them again."""
        self.results = {}
        self._computed = {}
        self.mf = self.spec = self.point = None
        self._geometry = self._previous = None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """Compute `properties` for `atoms`: one SCF per geometry, one gradient when
        forces are asked for; whatever this geometry already has is not recomputed."""
        if atoms is not None:
            self._check_atoms(atoms)
            self.atoms = atoms.copy()  # (Calculator.calculate would create self.directory)
        elif self.atoms is None:
            raise InputError("no atoms to compute: give them (calc.get_potential_energy(atoms)) "
                             "or attach the calculator (atoms.calc = calc)", file=LABEL,
                             field="atoms")
        else:
            self._check_atoms(self.atoms)
        geometry = _geometry_of(self.atoms)
        if self.mf is None or not _same(geometry, self._geometry):
            self._run_scf(geometry, gradient="forces" in properties)
        self.results = {**self._computed, **self.results}
        if "forces" in properties and "forces" not in self.results:
            self._run_gradient()

    # -- the work -------------------------------------------------------------
    def _check_atoms(self, atoms) -> None:
        """`check_atoms` with this calculator's charge and multiplicity (as validated:
        None is the default)."""
        molecule = calculator_spec(self.parameters).molecule
        multiplicity = molecule.multiplicity
        numbers = getattr(atoms, "numbers", ())
        if self.parameters.get("multiplicity") is None and len(numbers) == 1 and 0 < numbers[0] < 119:
            from dm21cli.core.elements import ground_state_multiplicity

            # a lone atom's ground state, not the placeholder atom's of the settings' check
            multiplicity = ground_state_multiplicity(int(numbers[0]),
                                                     int(numbers[0]) - int(molecule.charge))
        check_atoms(atoms, molecule.charge, multiplicity)

    def _spec(self, geometry):
        """The `JobSpec` of these parameters at `geometry` (numbers, positions in
        Angstrom), validated as a job file is (`calculator_spec`); geometry None:
        the settings alone."""
        from dm21cli.core.resources import check_environment

        check_environment()  # before PySCF is imported
        return calculator_spec(self.parameters, geometry)

    def _load_network(self, spec):
        from dm21cli.jobs.build import load_network

        if not spec.is_dm21:
            return None
        key = (spec.functional, spec.scf.precision, str(self.checkpoints))
        if self._network is None or self._network[0] != key:
            self._network = (key, load_network(spec, self.checkpoints))
        return self._network[1]

    def _run_scf(self, geometry, gradient: bool = False) -> None:
        """The SCF at geometry (numbers, positions in Angstrom), through the one path every
        job takes at a geometry (`dm21cli.jobs.point.compute_point`); gradient: forces
        follow, so DM21 keeps its last exchange features for them.  After a converged
        geometry of the same atoms (elements and order) the SCF starts from its orbitals
        (`Guess.from_point`: with DM21's warm start, from the warm start plus the carried
        DM21 - warm start difference); otherwise as `run_job` starts."""
        from dm21cli.core import resources
        from dm21cli.jobs import memory
        from dm21cli.jobs.build import build_molecule
        from dm21cli.jobs.point import Guess, compute_point

        t0 = time.perf_counter()
        # the previous geometry's SCF (and its DM21 caches) goes before anything new is built
        self.mf = self.spec = self._geometry = self.point = None
        self.results, self._computed = {}, {}
        spec = self._spec(geometry)
        lines: list[str] = []
        log = lines.append
        res = resources.resolve(spec.resources.threads, spec.memory_mb())
        resources.apply_threads(res["threads"])
        from dm21cli.jobs.build import start_notes

        for note in start_notes(spec):
            log(note)
        network = self._load_network(spec)
        if network is not None:
            network.workers = res["threads"]
        mol = build_molecule(spec, max_memory_mb=res["memory_mb"])
        memory.check(res["memory_mb"], memory.estimate(spec, mol, res["threads"]),
                     res["memory_source"])
        previous = self._previous
        if previous is not None and np.array_equal(previous["numbers"], geometry[0]):
            guess = previous["guess"]
        else:
            guess = Guess(chkfile=spec.guess_chkfile() if spec.scf.guess_is_chkfile() else None)
        point = compute_point(spec, mol, network=network, memory_mb=res["memory_mb"], log=log,
                              guess=guess, gradient=gradient)
        mf = point.mf
        cycles = int(point.props["scf_iterations"])
        self.counts["scf"] += 1
        self.info = {"guess": point.guess, "converged": point.converged, "scf_cycles": cycles,
                     "scf_attempts": point.props["scf_attempts"], "warm_start": point.warm,
                     "dm21_evaluations": point.props.get("dm21_evaluations"), "log": lines,
                     "dm21_final_energy": point.final_energy}
        if not point.converged:
            self.info["wall_s"] = time.perf_counter() - t0
            raise DM21SCFError(f"{point.failure} for {spec.molecule.formula()} "
                               f"({spec.functional}/{spec.basis_label()})")
        energy = point.energy_hartree
        dipole_au = np.asarray(point.props["dipole_moment_au"], dtype=float)
        self.mf, self.spec, self._geometry, self.point = mf, spec, geometry, point
        self._previous = {"numbers": geometry[0], "guess": Guess.from_point(point)}
        self.results = {"energy": energy * _units.Hartree, "dipole": dipole_au * _units.Bohr}
        self._computed = dict(self.results)
        self.info.update({"energy_hartree": energy, "scf_energy_hartree": float(mf.e_tot),
                          "dispersion_energy_hartree": point.props["dispersion_energy"],
                          "dipole_au": dipole_au.tolist(), "wall_s": time.perf_counter() - t0})

    def _run_gradient(self) -> None:
        out = self.point.nuclear_gradient(grid_response=True)
        self.counts["gradient"] += 1
        gradient = out["gradient_hartree_per_bohr"]
        self.results["forces"] = self._computed["forces"] = -gradient * (_units.Hartree / _units.Bohr)
        self.info["gradient_hartree_per_bohr"] = gradient.tolist()
        self.info["gradient_wall_s"] = out["wall_s"]


def _check_checkpoints(checkpoints) -> None:
    """`InputError` unless `checkpoints` is None or a folder's path (str or os.PathLike)."""
    if checkpoints is not None and not isinstance(checkpoints, (str, os.PathLike)):
        raise InputError(f"expected the DM21 weights folder (a path), got "
                         f"{type(checkpoints).__name__}", file=LABEL, field="checkpoints")


def _path_or_none(path) -> str | None:
    """A path as a string, for comparing two ``checkpoints`` values."""
    return None if path is None else os.fspath(path)


def _geometry_of(atoms) -> tuple[np.ndarray, np.ndarray]:
    """(atomic numbers, positions in Angstrom) of ASE `atoms`, copies."""
    return atoms.numbers.copy(), np.array(atoms.positions, dtype=float)


def _same(a, b) -> bool:
    """Whether two (numbers, positions) geometries are identical (bit for bit)."""
    return b is not None and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
