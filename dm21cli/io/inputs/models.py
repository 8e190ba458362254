"""The job model: one pydantic section per YAML section, and `JobSpec`, the whole job.

Sections reject unknown keys; ``key: null`` takes the default.  `JobSpec` is
what `dm21cli.io.inputs.load_job` returns and the jobs consume: a complete,
validated job with its derived values (effective thresholds, restricted or
not, output path) and its resolved form (`JobSpec.to_resolved_dict`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import BeforeValidator, Field, PrivateAttr, ValidationInfo, model_validator

from dm21cli.core import elements
from dm21cli.core.errors import InputError
from dm21cli.core.resources import MAX_THREADS
from dm21cli.core.units import ANGSTROM_BOHR, BOHR_ANGSTROM
from dm21cli.io.inputs.fields import (
    DM21_BY_LOWER,
    DM21_FUNCTIONALS,
    as_list,
    YamlBool,
    check_functional,
    one_of,
    describe_value,
    dotted_path,
    float_range,
    int_range,
    LocatedError,
    or_none,
    SectionModel,
    show_value,
    to_bool,
    to_int,
    to_name,
    parse_memory,
)
from dm21cli.io.inputs.files import read_text_file
from dm21cli.io.inputs.freq_model import FreqSettings
from dm21cli.io.inputs.opt_model import OptSettings
from dm21cli.io.inputs.scan_model import ScanSettings
from dm21cli.io.inputs.solvent_model import SolventSettings
from dm21cli.io.inputs.xyz import Atom, parse_xyz

#: PySCF initial-guess keywords; anything else is a chkfile path.
GUESS_KEYWORDS = ("auto", "minao", "atom", "huckel", "vsap", "1e")

CUBE_KINDS = ("density", "spin_density", "homo", "lumo")

#: what a job computes (``job.task``): the energy, the energy and its nuclear
#: gradient, or a geometry optimisation (``dm21 opt``)
TASKS = ("energy", "gradient", "opt", "freq", "ts", "irc")

#: orbital-gradient threshold (Ha) of the SCF when a nuclear gradient is wanted
#: (``task: gradient`` or ``opt``) and ``scf.conv_tol_grad`` is not set.  The
#: gradient is first order in the residual orbital gradient; on DM21 water/def2-SVP
#: (grid level 2, against float64 at 1e-8) it is off by 9.5e-6 Ha/bohr at DM21's
#: energy default 1e-3, 1.1e-6 at 1e-5 (one more SCF cycle) and 1.3e-8 at 1e-6
#: (three times the cycles): 1e-5 keeps it 400 times below geomeTRIC's default
#: gmax (4.5e-4 Ha/bohr) and below GAU_TIGHT's (1.5e-5).
GRADIENT_CONV_TOL_GRAD = 1e-5

#: the most SCF iterations per attempt (``scf.max_cycle``) and attempts (``scf.max_attempts``)
#: a job may ask for: beyond the ladder's five rungs an attempt repeats the last one, and
#: an SCF that has not converged in 10,000 iterations will not.
MAX_SCF_CYCLES = 10_000
MAX_SCF_ATTEMPTS = 100
#: the largest ``scf.small_rho_cutoff``: the points PySCF's pruning drops hold at most
#: this many electrons in all.  Measured on B3LYP water/def2-SVP: the energy moves by
#: 1.6e-8 Ha at 1e-5, 5.8e-6 Ha at 1e-3, 5e-5 Ha at 1e-2 and 1e-2 Ha at 1; 1e10 dropped
#: every point (an IndexError).
MAX_SMALL_RHO_CUTOFF = 1e-3

_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")


def _check_job_name(value: Any) -> str | None:
    if value is None:
        return None
    name = to_name(value, "a job name")
    if not _NAME_RE.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"job name {show_value(name)} may contain only letters, digits, '.', '_' and '-'")
    if len(name) > 200:
        raise ValueError("job name is longer than 200 characters")
    return name


def _check_path(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    text = to_name(value, "a path")
    if any(ord(c) < 32 for c in text):
        raise ValueError(f"path {show_value(text)} contains control characters")
    return text


class JobSettings(SectionModel):
    """Section ``job``: naming and where results go."""

    name: Annotated[str | None, BeforeValidator(_check_job_name)] = Field(
        None, description="Job name ([A-Za-z0-9._-]+); default: the input file's stem.")
    output_dir: Annotated[str | None, BeforeValidator(_check_path)] = Field(
        None, description="Output folder, relative to the working directory at run time; "
                          "default: outputs/<name>.")
    task: Annotated[Literal["energy", "gradient", "opt", "freq", "ts", "irc"], one_of(TASKS)] = Field(
        "energy", description="What dm21 run computes: energy | gradient (the energy and its "
                              "nuclear gradient, Hartree/bohr) | opt (a geometry optimisation, "
                              "as dm21 opt) | freq (harmonic frequencies and thermochemistry, "
                              "as dm21 freq) | ts (a transition-state search, as dm21 opt --ts: "
                              "task opt with opt.transition) | irc (the reaction path down from "
                              "a transition state, as dm21 opt --irc: task opt with opt.irc).")


def _check_xyz(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected a block of atom lines 'El x y z', got {describe_value(value)}")
    return value


class Molecule(SectionModel):
    """Section ``molecule``: geometry (inline or from a file), charge and spin."""

    xyz: Annotated[str | None, BeforeValidator(_check_xyz)] = Field(
        None, description="Inline atom lines 'El x y z' (a full XYZ with count and comment "
                          "line is accepted too), in `units`.")
    file: Annotated[str | None, BeforeValidator(_check_path)] = Field(
        None, description="Path of an .xyz file, relative to the YAML file's folder.")
    units: Annotated[Literal["angstrom", "bohr"], one_of(
        ("angstrom", "bohr"), {"ang": "angstrom", "a": "angstrom", "au": "bohr", "a.u.": "bohr"})] = Field(
        "angstrom", description="Length unit of the coordinates: angstrom | bohr.")
    charge: Annotated[int, int_range()] = Field(0, description="Total charge (elementary charges).")
    multiplicity: Annotated[int | None, int_range(lo=1, optional=True)] = Field(
        None, description="Spin multiplicity 2S+1 (>= 1); null = 1, or for a lone atom (or "
                          "atomic ion) its ground state by Hund's rule.")

    _atoms: list[Atom] = PrivateAttr(default_factory=list)
    _source_file: str | None = PrivateAttr(default=None)
    _source_field: str | None = PrivateAttr(default=None)
    #: how the multiplicity was chosen when the input did not give it: "hund" (a lone
    #: atom), "default" (1); None: given
    _multiplicity_rule: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _read_atoms(self, info: ValidationInfo) -> Molecule:
        if (self.xyz is None) == (self.file is None):
            raise ValueError("give exactly one of 'xyz' (inline atom lines) or 'file' (an .xyz file)")
        ctx = info.context or {}
        try:
            self._parse_atoms(ctx)
        except InputError as exc:
            if ctx.get("collect"):  # load_job: one problem among those of the other sections
                raise LocatedError(exc) from None
            raise
        self._default_multiplicity()
        return self

    def _default_multiplicity(self) -> None:
        """A multiplicity the input did not give: for a lone atom its ground state
        (`dm21cli.core.elements.ground_state_multiplicity`, also for an atomic ion),
        else 1."""
        if self.multiplicity is not None:
            return
        if len(self._atoms) == 1:
            z = elements.atomic_number(self._atoms[0].symbol)
            try:
                self.multiplicity = elements.ground_state_multiplicity(z, z - self.charge)
                self._multiplicity_rule = "hund"
                return
            except ValueError:  # no configuration known (more than 118 electrons)
                pass
        self.multiplicity = 1
        self._multiplicity_rule = "default"

    def _parse_atoms(self, ctx: dict) -> Molecule:
        if self.xyz is not None:
            first, step = ctx.get("xyz_lines", (1, 1))
            self._source_file = ctx.get("file")
            self._source_field = ctx.get("xyz_field", "molecule.xyz")
            self._atoms = parse_xyz(self.xyz, file=self._source_file, field=self._source_field,
                                    first_line=first, step=step, units=self.units,
                                    empty_line=ctx.get("xyz_key_line", first))
            return self
        base = Path(ctx.get("base_dir", "."))
        path = base / os.path.expanduser(self.file)
        display = str(path)
        bare = ctx.get("bare_xyz", False)
        key = {"file": ctx.get("file"), "line": ctx.get("file_key_line"),
               "field": None if bare else "molecule.file"}
        text = read_text_file(path, display if not bare else ctx.get("file", display),
                          key if not bare else None)
        self._source_file = display if not bare else ctx.get("file", display)
        self._source_field = None if bare else "molecule.file"
        self._atoms = parse_xyz(text, file=self._source_file, field=self._source_field,
                                units=self.units, empty_line=1)
        return self

    # -- geometry API -------------------------------------------------------
    @property
    def atoms(self) -> tuple[Atom, ...]:
        return tuple(self._atoms)

    @property
    def source_file(self) -> str | None:
        """File the atoms were read from (the YAML file for inline xyz), as displayed in messages."""
        return self._source_file

    @property
    def natm(self) -> int:
        return len(self._atoms)

    @property
    def symbols(self) -> list[str]:
        return [a.symbol for a in self._atoms]

    def coords(self) -> np.ndarray:
        """Coordinates (natm, 3) in the input units."""
        return np.array([a.position for a in self._atoms], dtype=float).reshape(-1, 3)

    def coords_bohr(self) -> np.ndarray:
        c = self.coords()
        return c * ANGSTROM_BOHR if self.units == "angstrom" else c

    def coords_angstrom(self) -> np.ndarray:
        c = self.coords()
        return c if self.units == "angstrom" else c * BOHR_ANGSTROM

    def nuclear_charge(self) -> int:
        return sum(elements.atomic_number(s) for s in self.symbols)

    def nelectron(self, charge: int | None = None) -> int:
        """Number of electrons for `charge` (default: this molecule's charge)."""
        return self.nuclear_charge() - (self.charge if charge is None else charge)

    def pyscf_atom(self) -> list[tuple[str, tuple[float, float, float]]]:
        """Atoms in bohr, for ``gto.M(atom=..., unit="Bohr")``."""
        return [(s, (float(x), float(y), float(z)))
                for s, (x, y, z) in zip(self.symbols, self.coords_bohr())]

    def formula(self) -> str:
        return elements.hill_formula(self.symbols)

    @property
    def multiplicity_given(self) -> bool:
        """Whether the input gave the multiplicity (else: 1, or a lone atom's ground state)."""
        return self._multiplicity_rule is None

    @property
    def multiplicity_by_hund(self) -> bool:
        """Whether the multiplicity is the lone atom's ground state, chosen because the
        input did not give one."""
        return self._multiplicity_rule == "hund"

    def species(self) -> str:
        """``O atom``, ``O+ ion``, ``Fe2+ ion`` for one atom; the formula otherwise."""
        if self.natm != 1:
            return self.formula()
        charge = self.charge
        if charge == 0:
            return f"{self.symbols[0]} atom"
        sign = "+" if charge > 0 else "-"
        return f"{self.symbols[0]}{abs(charge) if abs(charge) > 1 else ''}{sign} ion"

    def xyz_block(self) -> str:
        """Atom lines ``El x y z`` in the input units, exactly round-tripping the floats."""
        return "".join(f"{a.symbol} {a.position[0]!r} {a.position[1]!r} {a.position[2]!r}\n"
                       for a in self._atoms)


def _check_guess(value: Any, info: ValidationInfo) -> str:
    text = to_name(value, "a guess keyword or a chkfile path")
    if text.lower() in GUESS_KEYWORDS:
        return text.lower()
    text = _check_path(text)
    base = Path((info.context or {}).get("base_dir", "."))
    return str((base / os.path.expanduser(text)).absolute())


def _check_warm_start(value: Any) -> str | None:
    if value is None or value is False:
        return None
    if value is True:
        return "b3lyp"
    if isinstance(value, str) and value.strip().lower() in ("", "none", "null", "false", "off", "no"):
        return None
    name = to_name(value, "a functional name or null")
    if name.lower() in DM21_BY_LOWER:
        raise ValueError(f"warm_start must be a conventional functional (e.g. b3lyp), not {name}")
    return name


def _check_occupation(value: Any) -> float:
    from dm21cli.io.inputs.fields import to_float

    x = to_float(value)
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"occupation numbers are from 0 to 1 (one spin orbital), got {x:g}")
    return x


_OccupationList = Annotated[list[Annotated[float, BeforeValidator(_check_occupation)]],
                            BeforeValidator(as_list)]


class Occupations(SectionModel):
    """``scf.occupations``: fixed occupation numbers (fractional charge and spin)."""

    alpha: _OccupationList = Field(
        default_factory=list, description="Occupations (0 to 1) of the lowest alpha orbitals, "
                                          "in order of orbital energy; the rest are empty.")
    beta: _OccupationList = Field(
        default_factory=list, description="The same for the beta orbitals.")

    def total(self) -> float:
        return float(sum(self.alpha) + sum(self.beta))


class ScfSettings(SectionModel):
    """Section ``scf``: self-consistent-field settings."""

    restricted: Annotated[bool | None, BeforeValidator(or_none(to_bool))] = Field(
        None, description="null = auto (restricted for multiplicity 1, unrestricted otherwise) | true | false.")
    conv_tol: Annotated[float | None, float_range(gt=0, optional=True)] = Field(
        None, description="Energy convergence threshold [Ha]; null = 1e-6 for DM21, 1e-9 otherwise.")
    conv_tol_grad: Annotated[float | None, float_range(gt=0, optional=True)] = Field(
        None, description="Orbital-gradient convergence threshold [Ha]; null = 1e-3 for DM21, "
                          "sqrt(conv_tol) otherwise.")
    max_cycle: Annotated[int, int_range(1, MAX_SCF_CYCLES)] = Field(
        50, description=f"SCF iterations per attempt (1 to {MAX_SCF_CYCLES:,}).")
    max_attempts: Annotated[int, int_range(1, MAX_SCF_ATTEMPTS)] = Field(
        4, description=f"Attempts with escalating settings if the SCF does not converge "
                       f"(1 to {MAX_SCF_ATTEMPTS}).")
    grid_level: Annotated[int, int_range(0, 9)] = Field(3, description="PySCF grid level 0..9.")
    legacy_grids: YamlBool = Field(False, description="Reproduce the radial grids of PySCF <= 2.6.")
    small_rho_cutoff: Annotated[float | None, float_range(ge=0, le=MAX_SMALL_RHO_CUTOFF,
                                                           optional=True)] = Field(
        None, description=f"PySCF's grid pruning at the starting density: points holding at most "
                          f"this many electrons in all are dropped [electrons, 0 to "
                          f"{MAX_SMALL_RHO_CUTOFF:g}]; null = PySCF's default (0: none).")
    guess: Annotated[str, BeforeValidator(_check_guess)] = Field(
        "auto", description="auto | minao | atom | huckel | vsap | 1e | path of a PySCF chkfile "
                            "(relative to the YAML file).")
    warm_start: Annotated[str | None, BeforeValidator(_check_warm_start)] = Field(
        "b3lyp", description="Functional converged first for DM21 (its density starts DM21); null = none.")
    precision: Annotated[Literal["mixed", "float64", "float32"], one_of(
        ("mixed", "float64", "float32"), {"double": "float64", "single": "float32"})] = Field(
        "mixed", description="DM21 network arithmetic: mixed (float32 SCF cycles, float64 "
                             "final energy) | float64 | float32.")
    occupations: Occupations | None = Field(
        None, description="Fixed occupation numbers per spin (unrestricted; fractional electron "
                          "numbers and spins, as dm21 scan --electrons / --fractional-spin sets "
                          "them); null = aufbau.")

    def guess_is_chkfile(self) -> bool:
        return self.guess not in GUESS_KEYWORDS


_CUBE_RE = re.compile(r"orbital:?([0-9]+)([ab]?)")


def _check_cube(value: Any) -> str:
    if isinstance(value, str):
        text = re.sub(r"\s+", "", value).lower().replace("-", "_")
        if text in CUBE_KINDS:
            return text
        m = _CUBE_RE.fullmatch(text)
        if m:
            n = int(m.group(1))
            if n < 1:
                raise ValueError(f"orbital indices start at 1, got {show_value(value)}")
            return f"orbital:{n}{m.group(2)}"
    raise ValueError(f"unknown cube {describe_value(value)} (expected density, spin_density, homo, lumo "
                     f"or orbital:N with an optional spin a/b, e.g. orbital:5 or orbital:5a)")


def _check_orbital(value: Any) -> int:
    n = to_int(value)
    if n < 1:
        raise ValueError(f"orbital indices start at 1, got {n}")
    return n


class OutputSettings(SectionModel):
    """Section ``outputs``: which files to write besides the results."""

    cubes: Annotated[list[Annotated[str, BeforeValidator(_check_cube)]], BeforeValidator(as_list)] = Field(
        default_factory=list,
        description="Cube files: density, spin_density, homo, lumo, orbital:N (1-based; "
                    "orbital:Na / orbital:Nb for alpha / beta of unrestricted runs).")
    orbitals: Annotated[list[Annotated[int, BeforeValidator(_check_orbital)]], BeforeValidator(as_list)] = Field(
        default_factory=list, description="1-based MO indices to write as cubes (same as orbital:N).")
    cube_spacing: Annotated[float, float_range(gt=0)] = Field(0.2, description="Cube grid spacing [Angstrom] (> 0).")
    cube_margin: Annotated[float, float_range(ge=0)] = Field(
        3.0, description="Cube box margin around the atoms [Angstrom] (>= 0).")
    molden: YamlBool = Field(True, description="Write orbitals.molden.")

    def cube_requests(self) -> list[str]:
        """``cubes`` plus ``orbitals`` as ``orbital:N``, without duplicates, in order."""
        out: list[str] = []
        for item in [*self.cubes, *(f"orbital:{n}" for n in self.orbitals)]:
            if item not in out:
                out.append(item)
        return out


class ResourceSettings(SectionModel):
    """Section ``resources``: threads and memory."""

    threads: Annotated[int | None, int_range(1, MAX_THREADS, optional=True)] = Field(
        None, description=f"Threads (1 to {MAX_THREADS}); null = OMP_NUM_THREADS / "
                          f"SLURM_CPUS_PER_TASK / all cores.")
    memory: Annotated[int | None, BeforeValidator(or_none(parse_memory))] = Field(
        None, description="Memory limit [MB], or a string like '4GB', '500MB', '2 GiB'; "
                          "null = PYSCF_MAX_MEMORY or a default.")


def _check_basis(value: Any) -> str | dict[str, str]:
    if isinstance(value, dict):
        if not value:
            raise ValueError("the basis mapping is empty (give element: basis-name pairs and/or 'default')")
        out: dict[str, str] = {}
        for key, name in value.items():
            raw = str(key).strip()
            norm = "default" if raw.lower() == "default" else (elements.normalise_symbol(raw) or raw)
            if norm in out:
                raise ValueError(f"element {norm!r} appears twice in the basis mapping")
            out[norm] = to_name(name, f"a basis-set name for {raw!r}")
        return out
    return to_name(value, "a basis-set name (e.g. def2-svp) or a mapping element: basis-name")


def _check_dispersion(value: Any) -> str | None:
    if value is None or value is False:
        return None
    if isinstance(value, str):
        low = re.sub(r"[\s()_-]", "", value.lower())
        if low in ("", "none", "null", "false", "off", "no"):
            return None
        if low == "d3bj":
            return "d3bj"
    raise ValueError(f"unknown dispersion correction {describe_value(value)} (supported: d3bj, or null for none)")


@dataclasses.dataclass
class SpecMeta:
    """Where each field came from, for error messages."""

    file: str | None = None
    lines: dict[tuple, int] = dataclasses.field(default_factory=dict)
    overridden: dict[tuple, str] = dataclasses.field(default_factory=dict)
    #: job path -> the name of the field it came from in another format (a QCSchema
    #: AtomicInput: ("scf", "conv_tol") -> "keywords.conv_tol")
    renamed: dict[tuple, str] = dataclasses.field(default_factory=dict)

    def locate(self, path: tuple) -> dict:
        """file / line / field keywords for an error about `path`."""
        for n in range(len(path), 0, -1):
            if path[:n] in self.overridden:
                return {"file": None, "line": None, "field": self.overridden[path[:n]]}
        line = None
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                line = self.lines[path[:n]]
                break
        field = dotted_path(path) or None
        for n in range(len(path), 0, -1):
            if path[:n] in self.renamed:
                rest = dotted_path(path[n:])
                field = self.renamed[path[:n]] + ("" if not rest else
                                                  rest if rest.startswith("[") else "." + rest)
                break
        return {"file": self.file, "line": line, "field": field}


class JobSpec(SectionModel):
    """A complete, validated job: what `load_job` returns and the runner consumes."""

    job: JobSettings = Field(default_factory=JobSettings, description="Naming and output location.")
    molecule: Molecule = Field(description="Geometry, charge and multiplicity.")
    basis: Annotated[str | dict[str, str], BeforeValidator(_check_basis)] = Field(
        "def2-svp", description="Basis-set name, or a mapping element -> basis name with optional 'default'.")
    functional: Annotated[str, BeforeValidator(check_functional)] = Field(
        "DM21", description="DM21 | DM21m | DM21mc | DM21mu, or any PySCF/libxc functional name.")
    dispersion: Annotated[Literal["d3bj"] | None, BeforeValidator(_check_dispersion)] = Field(
        None, description="Dispersion correction: null | d3bj.")
    solvent: SolventSettings | None = Field(
        None, description="Implicit solvent (PySCF's continuum models): {model, name, eps}; "
                          "null = gas phase.")
    scf: ScfSettings = Field(default_factory=ScfSettings, description="SCF settings.")
    outputs: OutputSettings = Field(default_factory=OutputSettings, description="Extra output files.")
    resources: ResourceSettings = Field(default_factory=ResourceSettings, description="Threads and memory.")
    scan: ScanSettings | None = Field(None, description="Distance scan (dm21 scan only).")
    opt: OptSettings | None = Field(
        None, description="Geometry optimisation (dm21 opt, job.task: opt): geomeTRIC's options.")
    freq: FreqSettings | None = Field(
        None, description="Frequencies and thermochemistry (dm21 freq, job.task: freq).")

    _source_path: Path | None = PrivateAttr(default=None)
    _meta: SpecMeta = PrivateAttr(default_factory=SpecMeta)
    #: a job read from a QCSchema AtomicInput: its ``id``, ``protocols`` and ``extras``,
    #: which the AtomicResult carries on (`dm21cli.io.inputs.qcschema`)
    _atomic_input: dict | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _defaults(self, info: ValidationInfo) -> JobSpec:
        if self.job.name is None:
            self.job.name = (info.context or {}).get("default_name") or "job"
        if self.job.task in ("ts", "irc"):  # a transition-state search, a reaction path:
            task = self.job.task            # optimisations of geomeTRIC's
            self.job.task = "opt"
            self.opt = self.opt if self.opt is not None else OptSettings()
            if task == "ts":
                self.opt.transition = True
            else:
                self.opt.irc = True
        return self

    # -- derived values -----------------------------------------------------
    @property
    def source_path(self) -> Path | None:
        """Absolute path of the input file (None if built in code)."""
        return self._source_path

    @property
    def atomic_input(self) -> dict | None:
        """``id``, ``protocols`` and ``extras`` of the QCSchema AtomicInput the job came from."""
        return self._atomic_input

    @property
    def is_dm21(self) -> bool:
        return self.functional in DM21_FUNCTIONALS

    @property
    def computes_gradient(self) -> bool:
        """Whether the job takes the nuclear gradient after its SCF (task gradient or opt)."""
        return self.job.task in ("gradient", "opt")

    def resolved_restricted(self) -> bool:
        if self.scf.restricted is not None:
            return self.scf.restricted
        if self.scf.occupations is not None:
            return False
        return self.molecule.multiplicity == 1

    def effective_conv_tol(self) -> float:
        if self.scf.conv_tol is not None:
            return self.scf.conv_tol
        return 1e-6 if self.is_dm21 else 1e-9

    def effective_conv_tol_grad(self) -> float:
        if self.scf.conv_tol_grad is not None:
            return self.scf.conv_tol_grad
        default = 1e-3 if self.is_dm21 else math.sqrt(self.effective_conv_tol())
        if self.computes_gradient:
            return min(default, GRADIENT_CONV_TOL_GRAD)
        return default

    def multiplicity_note(self) -> str | None:
        """The log line saying that a lone atom's multiplicity was chosen by Hund's rule
        (``multiplicity 3 for the lone O atom (Hund's rule; set molecule.multiplicity to
        choose another)``); None when the input gave it, or for molecules."""
        mol = self.molecule
        if not mol.multiplicity_by_hund:
            return None
        field = self._meta.renamed.get(("molecule", "multiplicity"), "molecule.multiplicity")
        if mol._source_field is None:  # a bare .xyz file
            field = "--multiplicity"
        basis = ""
        if mol.charge != 0:
            z = elements.atomic_number(mol.symbols[0])
            basis = " on " + elements.configuration_text(
                elements.ground_state_configuration(z, z - mol.charge))
        return (f"multiplicity {mol.multiplicity} for the lone {mol.species()} (Hund's "
                f"rule{basis}; set {field} to choose another)")

    def opt_settings(self) -> OptSettings:
        """The ``opt`` section, or its defaults."""
        return self.opt if self.opt is not None else OptSettings()

    def freq_settings(self) -> FreqSettings:
        """The ``freq`` section, or its defaults."""
        return self.freq if self.freq is not None else FreqSettings()

    def memory_mb(self) -> int | None:
        return self.resources.memory

    def output_path(self) -> Path:
        """Output folder (relative paths are relative to the current working directory)."""
        if self.job.output_dir is not None:
            return Path(os.path.expanduser(self.job.output_dir))
        return Path("outputs") / str(self.job.name)

    def guess_chkfile(self) -> Path | None:
        return Path(self.scf.guess) if self.scf.guess_is_chkfile() else None

    def basis_for(self, symbol: str) -> str | None:
        if isinstance(self.basis, str):
            return self.basis
        return self.basis.get(symbol, self.basis.get("default"))

    def pyscf_basis(self) -> str | dict[str, str]:
        """``basis=`` for ``gto.M``: the name, or {element: name} for the elements present."""
        if isinstance(self.basis, str):
            return self.basis
        return {s: self.basis_for(s) for s in dict.fromkeys(self.molecule.symbols)}

    def basis_label(self) -> str:
        if isinstance(self.basis, str):
            return self.basis
        return ", ".join(f"{k}={v}" for k, v in self.basis.items())

    def to_resolved_dict(self) -> dict:
        """Every setting with defaults filled in; JSON-serialisable and loadable again as YAML.

        The molecule is written inline (in its input units), paths are absolute
        where they were relative to the input file.
        """
        mol = self.molecule
        return {
            "job": {"name": self.job.name, "output_dir": str(self.output_path()),
                    "task": self.job.task},
            "molecule": {"xyz": mol.xyz_block(), "units": mol.units,
                         "charge": mol.charge, "multiplicity": mol.multiplicity},
            "basis": self.basis if isinstance(self.basis, str) else dict(self.basis),
            "functional": self.functional,
            "dispersion": self.dispersion,
            # (only when given: the hashes of gas-phase scan points stay what they were)
            **({"solvent": self.solvent.resolved()} if self.solvent is not None else {}),
            "scf": {
                "restricted": self.resolved_restricted(),
                "conv_tol": self.effective_conv_tol(),
                "conv_tol_grad": self.effective_conv_tol_grad(),
                "max_cycle": self.scf.max_cycle,
                "max_attempts": self.scf.max_attempts,
                "grid_level": self.scf.grid_level,
                "legacy_grids": self.scf.legacy_grids,
                "small_rho_cutoff": self.scf.small_rho_cutoff,
                "guess": self.scf.guess,
                "warm_start": self.scf.warm_start,
                "precision": self.scf.precision,
                "occupations": (None if self.scf.occupations is None else
                                {"alpha": list(self.scf.occupations.alpha),
                                 "beta": list(self.scf.occupations.beta)}),
            },
            "outputs": {
                "cubes": list(self.outputs.cubes),
                "orbitals": list(self.outputs.orbitals),
                "cube_spacing": self.outputs.cube_spacing,
                "cube_margin": self.outputs.cube_margin,
                "molden": self.outputs.molden,
            },
            "resources": {"threads": self.resources.threads, "memory": self.resources.memory},
            **({"scan": self.scan.model_dump()} if self.scan is not None else {}),
            **({"opt": self.opt_settings().resolved()}
               if self.opt is not None or self.job.task == "opt" else {}),
            **({"freq": self.freq_settings().resolved()}
               if self.freq is not None or self.job.task == "freq" else {}),
        }

    def to_resolved_yaml(self) -> str:
        """`to_resolved_dict` as YAML, with the atoms as a literal block."""

        class _Dumper(yaml.SafeDumper):
            pass

        def _str(dumper, value):
            style = "|" if "\n" in value else None
            return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

        _Dumper.add_representer(str, _str)
        return yaml.dump(self.to_resolved_dict(), Dumper=_Dumper, sort_keys=False,
                         default_flow_style=False, allow_unicode=True)
