"""Job input: YAML job files and bare .xyz files, validated before any computation.

``load_job(path, overrides)`` reads a ``.yaml``/``.yml`` job file or a bare
``.xyz`` file, applies command-line overrides, validates everything (schema
with pydantic, chemistry with ``validate_job``) and returns a `JobSpec`.  Every
problem is reported as one `dm21cli.errors.InputError` naming the file, the
1-based line and the dotted field (``scf.conv_tol``) or the command-line option
(``--charge``).

The YAML is composed into nodes (``yaml.compose``) so that every key, list item
and atom line keeps its line number; PySCF is imported only inside the
chemistry checks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import io
import math
import os
import re
import stat
import typing
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from dm21cli import elements
from dm21cli.errors import InputError
from dm21cli.units import ANGSTROM_BOHR, BOHR_ANGSTROM

__all__ = [
    "DM21_FUNCTIONALS", "GUESS_KEYWORDS", "CUBE_KINDS", "OVERRIDE_KEYS",
    "Atom", "JobSettings", "Molecule", "ScfSettings", "OutputSettings",
    "ResourceSettings", "JobSpec", "load_job", "validate_job", "parse_xyz",
    "parse_memory", "ScanSettings", "EcpEntry", "ecp_map", "ecp_summary", "ECP_DM21_NOTE",
]

#: canonical spellings of the DM21 family (input is case-insensitive).
DM21_FUNCTIONALS = ("DM21", "DM21m", "DM21mc", "DM21mu")
_DM21_BY_LOWER = {f.lower(): f for f in DM21_FUNCTIONALS}
#: PySCF initial-guess keywords; anything else is a chkfile path.
GUESS_KEYWORDS = ("auto", "minao", "atom", "huckel", "vsap", "1e")
CUBE_KINDS = ("density", "spin_density", "homo", "lumo")
#: atoms closer than this (Angstrom) are an input error.
MIN_DISTANCE_ANGSTROM = 0.1
#: coordinates larger than this (Angstrom) are an input error (typo guard).
MAX_COORDINATE_ANGSTROM = 1.0e5
#: job files and .xyz files larger than this (bytes) are refused; more is never read.
MAX_TEXT_FILE_BYTES = 16_000_000
#: an ``scf.guess`` chkfile larger than this (bytes) is refused.
MAX_CHKFILE_BYTES = 4_000_000_000
#: cube files with more grid points than this are refused (about 56 bytes of
#: memory per point while one is computed, 13 bytes per point on disk).
MAX_CUBE_POINTS = 50_000_000
#: bytes per cube point: memory while computing (PySCF's coordinate arrays
#: and the values), and on disk (13 characters per value).
CUBE_BYTES_PER_POINT_MEMORY = 56
CUBE_BYTES_PER_POINT_DISK = 13.2
#: said wherever a DM21 job uses an effective core potential.
ECP_DM21_NOTE = ("DM21 was trained on all-electron calculations: DM21 energies with "
                 "ECPs are outside its training")
_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")

#: command-line override key -> path in the job file.
OVERRIDE_KEYS: dict[str, tuple[str, ...]] = {
    "basis": ("basis",),
    "functional": ("functional",),
    "charge": ("molecule", "charge"),
    "multiplicity": ("molecule", "multiplicity"),
    "output_dir": ("job", "output_dir"),
    "name": ("job", "name"),
    "grid_level": ("scf", "grid_level"),
    "legacy_grids": ("scf", "legacy_grids"),
    "threads": ("resources", "threads"),
    "memory": ("resources", "memory"),
    "dispersion": ("dispersion",),
    # `dm21 scan` only
    "distance": ("scan", "distances"),
    "reference_atoms": ("scan", "reference_atoms"),
}


# --------------------------------------------------------------------------
# scalar coercion (ValueError messages become "file:line: field: message")
# --------------------------------------------------------------------------

def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return _show(value)
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _to_float(value: Any) -> float:
    """Numbers and numeric strings (YAML reads ``1e-6`` as a string) -> finite float."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"expected a number, got {_describe(value)}")
    if isinstance(value, (int, float)):
        try:
            x = float(value)
        except OverflowError:
            raise ValueError(f"number too large: {_show(value)}") from None
    elif isinstance(value, str):
        text = value.strip()
        try:
            x = float(text)
        except ValueError:
            try:  # Fortran style 1.0d-6
                x = float(text.replace("d", "e").replace("D", "E"))
            except ValueError:
                raise ValueError(f"expected a number, got {_show(value)}") from None
    else:
        raise ValueError(f"expected a number, got {_describe(value)}")
    if not math.isfinite(x):
        raise ValueError(f"expected a finite number, got {_show(value)}")
    return x


def _to_int(value: Any) -> int:
    if isinstance(value, bool) or value is None:
        raise ValueError(f"expected an integer, got {_describe(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text, 10)
        except ValueError:
            pass
    try:
        x = _to_float(value)
    except ValueError:
        raise ValueError(f"expected an integer, got {_describe(value)}") from None
    if x != int(x):
        raise ValueError(f"expected an integer, got {_show(value)}")
    return int(x)


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "yes", "on"):
            return True
        if low in ("false", "no", "off"):
            return False
    raise ValueError(f"expected true or false, got {_describe(value)}")


def _to_name(value: Any, what: str = "a name") -> str:
    if isinstance(value, bool) or value is None:
        raise ValueError(f"expected {what}, got {_describe(value)}")
    if isinstance(value, (int, float)):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"expected {what}, got {_describe(value)}")
    text = value.strip()
    if not text:
        raise ValueError(f"expected {what}, got an empty string")
    return text


def _optional(fn):
    def check(value):
        return None if value is None else fn(value)
    return check


def _int_range(lo: int | None = None, hi: int | None = None, optional: bool = False):
    def check(value):
        if value is None and optional:
            return None
        n = _to_int(value)
        if lo is not None and hi is not None and not lo <= n <= hi:
            raise ValueError(f"must be an integer from {lo} to {hi}, got {n}")
        if lo is not None and n < lo:
            raise ValueError(f"must be an integer >= {lo}, got {n}")
        return n
    return BeforeValidator(check)


def _float_range(gt: float | None = None, ge: float | None = None, optional: bool = False):
    def check(value):
        if value is None and optional:
            return None
        x = _to_float(value)
        if gt is not None and not x > gt:
            raise ValueError(f"must be greater than {gt:g}, got {x:g}")
        if ge is not None and not x >= ge:
            raise ValueError(f"must be >= {ge:g}, got {x:g}")
        return x
    return BeforeValidator(check)


def _choice(options: tuple[str, ...], aliases: dict[str, str] | None = None):
    aliases = aliases or {}

    def check(value):
        if isinstance(value, str):
            low = value.strip().lower()
            low = aliases.get(low, low)
            if low in options:
                return low
        raise ValueError(f"expected one of {', '.join(options)}; got {_describe(value)}")
    return BeforeValidator(check)


_Bool = Annotated[bool, BeforeValidator(_to_bool)]


def parse_memory(value: Any) -> int:
    """Memory in MB (PySCF's unit, 10**6 bytes) from an int or a string like "4GB", "2 GiB".

    A bare number is MB.  Decimal units (KB, MB, GB, TB) and binary units
    (KiB, MiB, GiB, TiB) are accepted, case-insensitively; "G" means GB.
    """
    scale = {"": 1.0, "b": 1e-6, "k": 1e-3, "kb": 1e-3, "m": 1.0, "mb": 1.0,
             "g": 1e3, "gb": 1e3, "t": 1e6, "tb": 1e6,
             "kib": 1024 / 1e6, "mib": 1024**2 / 1e6, "gib": 1024**3 / 1e6,
             "tib": 1024**4 / 1e6}
    if isinstance(value, bool) or value is None:
        raise ValueError(f"expected a size like 4000 (MB) or '4GB', got {_describe(value)}")
    if isinstance(value, (int, float)):
        number, unit = _to_float(value), ""
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)\s*", value)
        if not m or m.group(2).lower() not in scale:
            raise ValueError(
                f"expected a size like 4000 (MB), '500MB', '4GB' or '2 GiB', got {_show(value)}")
        number, unit = float(m.group(1)), m.group(2).lower()
    else:
        raise ValueError(f"expected a size like 4000 (MB) or '4GB', got {_describe(value)}")
    mb = number * scale[unit]
    if not math.isfinite(mb) or mb > 1e12:
        raise ValueError(f"memory too large: {_show(value)}")
    if mb < 1:
        raise ValueError(f"memory must be at least 1 MB, got {_show(value)}")
    return int(mb)


# --------------------------------------------------------------------------
# XYZ parsing
# --------------------------------------------------------------------------

class Atom(NamedTuple):
    """One atom as written in the input (position in the molecule's input units)."""

    symbol: str
    position: tuple[float, float, float]
    line: int | None  # 1-based line in `Molecule.source_file` (or in the YAML file)


def parse_xyz(text: str, *, file: str | None = None, field: str | None = None,
              first_line: int = 1, step: int = 1, units: str = "angstrom",
              empty_line: int | None = None) -> list[Atom]:
    """Parse atom lines ``El x y z``, optionally preceded by an XYZ count and comment line.

    Line ``i`` (0-based) of ``text`` is reported as ``first_line + step * i``
    in ``file``.  Raises `InputError` for anything malformed.
    """
    scale = 1.0 if units == "angstrom" else BOHR_ANGSTROM
    lines = text.splitlines()

    def where(i: int | None) -> dict:
        line = empty_line if i is None else first_line + step * i
        return {"file": file, "line": line, "field": field}

    body = [i for i, ln in enumerate(lines) if ln.strip()]
    if not body:
        raise InputError("the molecule has no atoms", **where(None))
    start = body[0]
    head = lines[start].split()
    atom_rows: list[int]
    if len(head) == 1 and re.fullmatch(r"[+-]?[0-9]+", head[0]):
        count = int(head[0])
        if count < 0:
            raise InputError(f"negative atom count {count} in the XYZ count line", **where(start))
        if count == 0:
            raise InputError("the molecule has no atoms (the XYZ count line says 0)", **where(start))
        rest = [i for i in range(start + 2, len(lines)) if lines[i].strip()]
        if len(rest) < count:
            hint = ""
            if start + 1 < len(lines) and len(lines[start + 1].split()) == 4:
                hint = " (the line after the count line is a comment line, not an atom)"
            raise InputError(f"the XYZ count line announces {count} atoms but {len(rest)} atom lines "
                             f"follow{hint}", **where(start))
        if len(rest) > count:
            raise InputError(f"unexpected line after the {count} atoms announced by the count line "
                             f"(multi-frame XYZ files are not supported)", **where(rest[count]))
        atom_rows = rest
    else:
        atom_rows = [i for i in body if not lines[i].lstrip().startswith("#")]
        if not atom_rows:
            raise InputError("the molecule has no atoms", **where(None))

    atoms: list[Atom] = []
    for n, i in enumerate(atom_rows, start=1):
        tokens = lines[i].replace(",", " ").split()
        if len(tokens) != 4:
            raise InputError(f"atom {n}: expected 'Element x y z', got {len(tokens)} fields: "
                             f"{_show(lines[i].strip())}", **where(i))
        symbol = elements.normalise_symbol(tokens[0])
        if symbol is None:
            raise InputError(f"atom {n}: {elements.unknown_element_message(tokens[0])}", **where(i))
        xyz = []
        for axis, token in zip("xyz", tokens[1:]):
            try:
                value = float(token.replace("d", "e").replace("D", "E"))
            except ValueError:
                raise InputError(f"atom {n} ({symbol}): {axis} coordinate {_show(token)} is not a number",
                                 **where(i)) from None
            if not math.isfinite(value):
                raise InputError(f"atom {n} ({symbol}): {axis} coordinate {_show(token)} is not a finite number",
                                 **where(i))
            if abs(value * scale) > MAX_COORDINATE_ANGSTROM:
                raise InputError(f"atom {n} ({symbol}): {axis} coordinate {_show(token)} is too large "
                                 f"(limit {MAX_COORDINATE_ANGSTROM:g} Angstrom)", **where(i))
            xyz.append(value)
        atoms.append(Atom(symbol, (xyz[0], xyz[1], xyz[2]), first_line + step * i))
    return atoms


# --------------------------------------------------------------------------
# the schema
# --------------------------------------------------------------------------

class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        """``key: null`` (or an empty section) takes the default unless null has its own meaning."""
        if isinstance(data, dict):
            drop = [k for k, v in data.items() if v is None and k in cls.model_fields
                    and not cls.model_fields[k].is_required()
                    and type(None) not in typing.get_args(cls.model_fields[k].annotation)]
            if drop:
                data = {k: v for k, v in data.items() if k not in drop}
        return data


def _check_job_name(value: Any) -> str | None:
    if value is None:
        return None
    name = _to_name(value, "a job name")
    if not _NAME_RE.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"job name {_show(name)} may contain only letters, digits, '.', '_' and '-'")
    if len(name) > 200:
        raise ValueError("job name is longer than 200 characters")
    return name


def _check_path(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    text = _to_name(value, "a path")
    if any(ord(c) < 32 for c in text):
        raise ValueError(f"path {_show(text)} contains control characters")
    return text


class JobSettings(_Section):
    """Section ``job``: naming and where results go."""

    name: Annotated[str | None, BeforeValidator(_check_job_name)] = Field(
        None, description="Job name ([A-Za-z0-9._-]+); default: the input file's stem.")
    output_dir: Annotated[str | None, BeforeValidator(_check_path)] = Field(
        None, description="Output folder, relative to the working directory at run time; "
                          "default: outputs/<name>.")


def _check_xyz(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected a block of atom lines 'El x y z', got {_describe(value)}")
    return value


class Molecule(_Section):
    """Section ``molecule``: geometry (inline or from a file), charge and spin."""

    xyz: Annotated[str | None, BeforeValidator(_check_xyz)] = Field(
        None, description="Inline atom lines 'El x y z' (a full XYZ with count and comment "
                          "line is accepted too), in `units`.")
    file: Annotated[str | None, BeforeValidator(_check_path)] = Field(
        None, description="Path of an .xyz file, relative to the YAML file's folder.")
    units: Annotated[Literal["angstrom", "bohr"], _choice(
        ("angstrom", "bohr"), {"ang": "angstrom", "a": "angstrom", "au": "bohr", "a.u.": "bohr"})] = Field(
        "angstrom", description="Length unit of the coordinates: angstrom | bohr.")
    charge: Annotated[int, _int_range()] = Field(0, description="Total charge (elementary charges).")
    multiplicity: Annotated[int, _int_range(lo=1)] = Field(
        1, description="Spin multiplicity 2S+1 (>= 1).")

    _atoms: list[Atom] = PrivateAttr(default_factory=list)
    _source_file: str | None = PrivateAttr(default=None)
    _source_field: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _read_atoms(self, info: ValidationInfo) -> Molecule:
        if (self.xyz is None) == (self.file is None):
            raise ValueError("give exactly one of 'xyz' (inline atom lines) or 'file' (an .xyz file)")
        ctx = info.context or {}
        try:
            return self._parse_atoms(ctx)
        except InputError as exc:
            if ctx.get("collect"):  # load_job: one problem among those of the other sections
                raise _Located(exc) from None
            raise

    def _parse_atoms(self, ctx: dict) -> Molecule:
        if self.xyz is not None:
            first, step = ctx.get("xyz_lines", (1, 1))
            self._source_file = ctx.get("file")
            self._source_field = "molecule.xyz"
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
        text = _read_text(path, display if not bare else ctx.get("file", display),
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

    def xyz_block(self) -> str:
        """Atom lines ``El x y z`` in the input units, exactly round-tripping the floats."""
        return "".join(f"{a.symbol} {a.position[0]!r} {a.position[1]!r} {a.position[2]!r}\n"
                       for a in self._atoms)


def _check_guess(value: Any, info: ValidationInfo) -> str:
    text = _to_name(value, "a guess keyword or a chkfile path")
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
    name = _to_name(value, "a functional name or null")
    if name.lower() in _DM21_BY_LOWER:
        raise ValueError(f"warm_start must be a conventional functional (e.g. b3lyp), not {name}")
    return name


class ScfSettings(_Section):
    """Section ``scf``: self-consistent-field settings."""

    restricted: Annotated[bool | None, BeforeValidator(_optional(_to_bool))] = Field(
        None, description="null = auto (restricted for multiplicity 1, unrestricted otherwise) | true | false.")
    conv_tol: Annotated[float | None, _float_range(gt=0, optional=True)] = Field(
        None, description="Energy convergence threshold [Ha]; null = 1e-6 for DM21, 1e-9 otherwise.")
    conv_tol_grad: Annotated[float | None, _float_range(gt=0, optional=True)] = Field(
        None, description="Orbital-gradient convergence threshold [Ha]; null = 1e-3 for DM21, "
                          "sqrt(conv_tol) otherwise.")
    max_cycle: Annotated[int, _int_range(lo=1)] = Field(50, description="SCF iterations per attempt (>= 1).")
    max_attempts: Annotated[int, _int_range(lo=1)] = Field(
        4, description="Attempts with escalating settings if the SCF does not converge (>= 1).")
    grid_level: Annotated[int, _int_range(0, 9)] = Field(3, description="PySCF grid level 0..9.")
    legacy_grids: _Bool = Field(False, description="Reproduce the radial grids of PySCF <= 2.6.")
    small_rho_cutoff: Annotated[float | None, _float_range(ge=0, optional=True)] = Field(
        None, description="Drop grid points with density below this [electrons/bohr^3]; null = PySCF default.")
    guess: Annotated[str, BeforeValidator(_check_guess)] = Field(
        "auto", description="auto | minao | atom | huckel | vsap | 1e | path of a PySCF chkfile "
                            "(relative to the YAML file).")
    warm_start: Annotated[str | None, BeforeValidator(_check_warm_start)] = Field(
        "b3lyp", description="Functional converged first for DM21 (its density starts DM21); null = none.")
    precision: Annotated[Literal["mixed", "float64", "float32"], _choice(
        ("mixed", "float64", "float32"), {"double": "float64", "single": "float32"})] = Field(
        "mixed", description="DM21 network arithmetic: mixed (float32 SCF cycles, float64 "
                             "final energy) | float64 | float32.")

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
                raise ValueError(f"orbital indices start at 1, got {_show(value)}")
            return f"orbital:{n}{m.group(2)}"
    raise ValueError(f"unknown cube {_describe(value)} (expected density, spin_density, homo, lumo "
                     f"or orbital:N with an optional spin a/b, e.g. orbital:5 or orbital:5a)")


def _as_list(value: Any) -> Any:
    if value is None:
        return []
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return [value]
    if not isinstance(value, list):
        raise ValueError(f"expected a list, got {_describe(value)}")
    return value


def _check_orbital(value: Any) -> int:
    n = _to_int(value)
    if n < 1:
        raise ValueError(f"orbital indices start at 1, got {n}")
    return n


class OutputSettings(_Section):
    """Section ``outputs``: which files to write besides the results."""

    cubes: Annotated[list[Annotated[str, BeforeValidator(_check_cube)]], BeforeValidator(_as_list)] = Field(
        default_factory=list,
        description="Cube files: density, spin_density, homo, lumo, orbital:N (1-based; "
                    "orbital:Na / orbital:Nb for alpha / beta of unrestricted runs).")
    orbitals: Annotated[list[Annotated[int, BeforeValidator(_check_orbital)]], BeforeValidator(_as_list)] = Field(
        default_factory=list, description="1-based MO indices to write as cubes (same as orbital:N).")
    cube_spacing: Annotated[float, _float_range(gt=0)] = Field(0.2, description="Cube grid spacing [Angstrom] (> 0).")
    cube_margin: Annotated[float, _float_range(ge=0)] = Field(
        3.0, description="Cube box margin around the atoms [Angstrom] (>= 0).")
    molden: _Bool = Field(True, description="Write orbitals.molden.")

    def cube_requests(self) -> list[str]:
        """``cubes`` plus ``orbitals`` as ``orbital:N``, without duplicates, in order."""
        out: list[str] = []
        for item in [*self.cubes, *(f"orbital:{n}" for n in self.orbitals)]:
            if item not in out:
                out.append(item)
        return out


class ResourceSettings(_Section):
    """Section ``resources``: threads and memory."""

    threads: Annotated[int | None, _int_range(lo=1, optional=True)] = Field(
        None, description="Threads (>= 1); null = OMP_NUM_THREADS / SLURM_CPUS_PER_TASK / all cores.")
    memory: Annotated[int | None, BeforeValidator(_optional(parse_memory))] = Field(
        None, description="Memory limit [MB], or a string like '4GB', '500MB', '2 GiB'; "
                          "null = PYSCF_MAX_MEMORY or a default.")


def _check_distances(value: Any) -> list[float] | None:
    if value is None:
        return None
    from dm21cli.scan import parse_distances

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
            out[norm] = _to_name(name, f"a basis-set name for {raw!r}")
        return out
    return _to_name(value, "a basis-set name (e.g. def2-svp) or a mapping element: basis-name")


def _check_functional(value: Any) -> str:
    name = _to_name(value, "a functional name (DM21, DM21m, DM21mc, DM21mu, or a PySCF name like b3lyp)")
    return _DM21_BY_LOWER.get(name.lower(), name)


def _check_dispersion(value: Any) -> str | None:
    if value is None or value is False:
        return None
    if isinstance(value, str):
        low = re.sub(r"[\s()_-]", "", value.lower())
        if low in ("", "none", "null", "false", "off", "no"):
            return None
        if low == "d3bj":
            return "d3bj"
    raise ValueError(f"unknown dispersion correction {_describe(value)} (supported: d3bj, or null for none)")


@dataclasses.dataclass
class _Meta:
    """Where each field came from, for error messages."""

    file: str | None = None
    lines: dict[tuple, int] = dataclasses.field(default_factory=dict)
    overridden: dict[tuple, str] = dataclasses.field(default_factory=dict)

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
        return {"file": self.file, "line": line, "field": _dotted(path) or None}


def _dotted(path: tuple) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


class JobSpec(_Section):
    """A complete, validated job: what `load_job` returns and the runner consumes."""

    job: JobSettings = Field(default_factory=JobSettings, description="Naming and output location.")
    molecule: Molecule = Field(description="Geometry, charge and multiplicity.")
    basis: Annotated[str | dict[str, str], BeforeValidator(_check_basis)] = Field(
        "def2-svp", description="Basis-set name, or a mapping element -> basis name with optional 'default'.")
    functional: Annotated[str, BeforeValidator(_check_functional)] = Field(
        "DM21", description="DM21 | DM21m | DM21mc | DM21mu, or any PySCF/libxc functional name.")
    dispersion: Annotated[Literal["d3bj"] | None, BeforeValidator(_check_dispersion)] = Field(
        None, description="Dispersion correction: null | d3bj.")
    scf: ScfSettings = Field(default_factory=ScfSettings, description="SCF settings.")
    outputs: OutputSettings = Field(default_factory=OutputSettings, description="Extra output files.")
    resources: ResourceSettings = Field(default_factory=ResourceSettings, description="Threads and memory.")
    scan: ScanSettings | None = Field(None, description="Distance scan (dm21 scan only).")

    _source_path: Path | None = PrivateAttr(default=None)
    _meta: _Meta = PrivateAttr(default_factory=_Meta)

    @model_validator(mode="after")
    def _defaults(self, info: ValidationInfo) -> JobSpec:
        if self.job.name is None:
            self.job.name = (info.context or {}).get("default_name") or "job"
        return self

    # -- derived values -----------------------------------------------------
    @property
    def source_path(self) -> Path | None:
        """Absolute path of the input file (None if built in code)."""
        return self._source_path

    @property
    def is_dm21(self) -> bool:
        return self.functional in DM21_FUNCTIONALS

    def resolved_restricted(self) -> bool:
        if self.scf.restricted is not None:
            return self.scf.restricted
        return self.molecule.multiplicity == 1

    def effective_conv_tol(self) -> float:
        if self.scf.conv_tol is not None:
            return self.scf.conv_tol
        return 1e-6 if self.is_dm21 else 1e-9

    def effective_conv_tol_grad(self) -> float:
        if self.scf.conv_tol_grad is not None:
            return self.scf.conv_tol_grad
        return 1e-3 if self.is_dm21 else math.sqrt(self.effective_conv_tol())

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

    def pyscf_ecp(self) -> dict[str, str]:
        """``ecp=`` for ``gto.M``: {element: basis name} for the elements whose basis has an
        effective core potential (`ecp_map`, the one rule); empty for all-electron jobs."""
        return {symbol: entry.basis for symbol, entry in ecp_map(self).items()}

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
            "job": {"name": self.job.name, "output_dir": str(self.output_path())},
            "molecule": {"xyz": mol.xyz_block(), "units": mol.units,
                         "charge": mol.charge, "multiplicity": mol.multiplicity},
            "basis": self.basis if isinstance(self.basis, str) else dict(self.basis),
            "functional": self.functional,
            "dispersion": self.dispersion,
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


#: section path -> model class (for unknown-key suggestions).
_SECTIONS: dict[tuple, type[BaseModel]] = {
    (): JobSpec, ("job",): JobSettings, ("molecule",): Molecule, ("scf",): ScfSettings,
    ("outputs",): OutputSettings, ("resources",): ResourceSettings, ("scan",): ScanSettings,
}


# --------------------------------------------------------------------------
# reading files and YAML with line numbers
# --------------------------------------------------------------------------

def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def _stat_regular(path: Path, fail, limit: int) -> int:
    """Size in bytes of `path`, a regular file of at most `limit` bytes.

    The file is only stat'ed (a FIFO or a device is never opened, so nothing
    blocks); `fail(message)` builds the InputError for every other case.
    """
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise fail("no such file") from None
    except PermissionError:
        raise fail("permission denied") from None
    except OSError as exc:
        raise fail(f"cannot read ({exc.strerror or exc})") from None
    except ValueError:  # embedded NUL byte and the like
        raise fail("invalid file name") from None
    if stat.S_ISDIR(info.st_mode):
        raise fail("is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise fail(f"is {_file_kind(info.st_mode)}, not a regular file")
    if info.st_size > limit:
        raise fail(f"file too large ({info.st_size:,} bytes; at most {limit:,} are read)")
    return info.st_size


def _read_text(path: Path, display: str, key: dict | None = None) -> str:
    """File contents as text; `key` (file/line/field of the key naming the file) locates errors.

    Only regular files of at most `MAX_TEXT_FILE_BYTES` are read, and never
    more than that many bytes (a file growing while it is read is refused too).
    """
    where = key if key is not None else {"file": display}

    def fail(message: str) -> InputError:
        if key is not None:
            return InputError(f"{message}: {display}", **key)
        return InputError(message, **where)

    _stat_regular(path, fail, MAX_TEXT_FILE_BYTES)
    try:
        # O_NONBLOCK: should the path have become a FIFO since the stat, open does not wait
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except (FileNotFoundError, NotADirectoryError):
        raise fail("no such file") from None
    except PermissionError:
        raise fail("permission denied") from None
    except OSError as exc:
        raise fail(f"cannot read ({exc.strerror or exc})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise fail("is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as stream:
            raw = stream.read(MAX_TEXT_FILE_BYTES + 1)
    except OSError as exc:
        raise fail(f"cannot read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_TEXT_FILE_BYTES:
        raise fail(f"file too large (more than {MAX_TEXT_FILE_BYTES:,} bytes)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise InputError("not a UTF-8 text file", file=display, line=line,
                         field=(key or {}).get("field")) from None


class _Walker:
    """Turns a composed YAML node tree into Python data, recording line numbers."""

    MAX_NODES = 100_000
    MAX_DEPTH = 40

    def __init__(self, loader: yaml.SafeLoader, file: str):
        self.loader = loader
        self.file = file
        self.lines: dict[tuple, int] = {}
        self.nodes: dict[tuple, yaml.Node] = {}
        self._count = 0
        self._active: set[int] = set()

    def _error(self, message: str, node: yaml.Node, path: tuple) -> InputError:
        return InputError(message, file=self.file, line=node.start_mark.line + 1,
                          field=_dotted(path) or None)

    def value(self, node: yaml.Node, path: tuple, depth: int = 0) -> Any:
        self._count += 1
        if self._count > self.MAX_NODES:
            raise self._error("the YAML document is too large (too many values or aliases)", node, path)
        if depth > self.MAX_DEPTH:
            raise self._error("the YAML document is nested too deeply", node, path)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._active:
            raise self._error("recursive YAML alias", node, path)
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                out: dict[str, Any] = {}
                first: dict[str, int] = {}
                for knode, vnode in node.value:
                    if knode.tag == "tag:yaml.org,2002:merge":
                        raise self._error("YAML merge keys ('<<') are not supported", knode, path)
                    if not isinstance(knode, yaml.ScalarNode):
                        raise self._error("keys must be plain names, not lists or mappings", knode, path)
                    key = knode.value
                    line = knode.start_mark.line + 1
                    if key in out:
                        raise self._error(f"duplicate key {key!r} (first given on line {first[key]})",
                                          knode, path + (key,))
                    first[key] = line
                    self.lines[path + (key,)] = line
                    self.nodes[path + (key,)] = vnode
                    out[key] = self.value(vnode, path + (key,), depth + 1)
                return out
            items = []
            for i, item in enumerate(node.value):
                self.lines[path + (i,)] = item.start_mark.line + 1
                self.nodes[path + (i,)] = item
                items.append(self.value(item, path + (i,), depth + 1))
            return items
        finally:
            self._active.discard(id(node))

    def _scalar(self, node: yaml.ScalarNode, path: tuple) -> Any:
        if node.tag == "tag:yaml.org,2002:timestamp":
            return node.value  # keep dates as written (e.g. job names)
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            raise self._error(f"invalid value: {exc.problem or exc}", node, path) from None
        except Exception as exc:  # noqa: BLE001 - any constructor failure is bad input
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise self._error(f"invalid value {_show(node.value)} ({reason[:80]})", node, path) from None


def _load_yaml(text: str, file: str) -> tuple[dict, dict[tuple, int], dict[tuple, yaml.Node]]:
    loader = None
    try:
        try:
            # the reader checks the characters already here (a NUL byte is refused)
            loader = yaml.SafeLoader(text)
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            parts = [p for p in (exc.context, exc.problem) if p]
            raise InputError("invalid YAML: " + ("; ".join(parts) or str(exc).splitlines()[0]),
                             file=file, line=mark.line + 1 if mark else None) from None
        except yaml.reader.ReaderError as exc:
            line = text[:exc.position].count("\n") + 1 if isinstance(exc.position, int) else None
            char = exc.character
            code = ord(char) if isinstance(char, str) and len(char) == 1 else char
            shown = f"U+{code:04X}" if isinstance(code, int) else repr(code)
            raise InputError(f"invalid YAML: {exc.reason} (character {shown})",
                             file=file, line=line) from None
        except yaml.YAMLError as exc:
            raise InputError(f"invalid YAML: {exc}", file=file) from None
        except RecursionError:
            raise InputError("invalid YAML: nested too deeply", file=file) from None
        if root is None:
            raise InputError("the file is empty (expected a YAML mapping with at least a 'molecule' section)",
                             file=file)
        if not isinstance(root, yaml.MappingNode):
            kind = "a list" if isinstance(root, yaml.SequenceNode) else f"the value {_show(root.value)}"
            raise InputError(f"expected a mapping of sections (job, molecule, basis, ...) at the top level, "
                             f"found {kind}", file=file, line=root.start_mark.line + 1)
        walker = _Walker(loader, file)
        walker.lines[()] = root.start_mark.line + 1
        data = walker.value(root, ())
        return data, walker.lines, walker.nodes
    finally:
        if loader is not None:
            loader.dispose()


# --------------------------------------------------------------------------
# pydantic errors -> InputError
# --------------------------------------------------------------------------

def _unknown_key_message(path: tuple) -> str:
    key = str(path[-1])
    section = _SECTIONS.get(tuple(path[:-1]))
    if section is None:
        return f"unknown key {key!r}"
    allowed = list(section.model_fields)
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6) or \
        difflib.get_close_matches(key.lower(), allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r} (did you mean {close[0]!r}?)"
    for other_path, model in _SECTIONS.items():
        if other_path != tuple(path[:-1]) and key.lower() in model.model_fields:
            return f"unknown key {key!r} (did you mean '{_dotted(other_path + (key.lower(),))}'?)"
    return f"unknown key {key!r} (valid keys: {', '.join(allowed)})"


def _error_message(err: dict) -> str:
    kind = err["type"]
    loc = tuple(err["loc"])
    if kind == "missing":
        return f"required key {str(loc[-1]) if loc else ''!r} is missing"
    if kind == "extra_forbidden":
        return _unknown_key_message(loc)
    if kind in ("model_type", "model_attributes_type", "dict_type", "mapping_type"):
        return f"expected a mapping of keys, got {_describe(err.get('input'))}"
    if kind in ("list_type",):
        return f"expected a list, got {_describe(err.get('input'))}"
    msg = str(err.get("msg", "invalid value"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return f"{msg[:1].lower()}{msg[1:]} (got {_describe(err.get('input'))})"


class _Located(ValueError):
    """An InputError raised inside a pydantic validator, kept with its own file and line."""

    def __init__(self, error: InputError):
        super().__init__(error.render())
        self.error = error


def _translate(exc: ValidationError, meta: _Meta) -> InputError:
    """Every schema problem as one InputError (`InputError.problems`), in line order:
    the job file's first, then other files' (an external .xyz), then the options'."""
    problems: list[InputError] = []
    for err in exc.errors(include_url=False):
        located = (err.get("ctx") or {}).get("error")
        if isinstance(located, _Located):
            problem = located.error
        else:
            problem = InputError(_error_message(err), **meta.locate(tuple(err["loc"])))
        if all(problem.render() != known.render() for known in problems):
            problems.append(problem)
    problems.sort(key=lambda e: (e.file not in (meta.file, None) if e.file else 2,
                                 e.line if e.line is not None else 10**9))
    return InputError.several(problems)


# --------------------------------------------------------------------------
# load_job / validate_job
# --------------------------------------------------------------------------

def _default_name(path: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).strip("_")
    return name if name and name not in (".", "..") else "job"


def load_job(path: str | os.PathLike, overrides: dict | None = None) -> JobSpec:
    """Read, validate and return a job from a .yaml/.yml job file or a bare .xyz file.

    `overrides` holds command-line options (keys of `OVERRIDE_KEYS`; value
    None = not given).  They replace the file's values and are validated the
    same way; errors about them name the option (``--charge``).
    Raises `InputError` for every problem; the returned spec is fully valid.
    """
    path = Path(path)
    display = str(path)
    suffix = path.suffix.lower()
    meta = _Meta(file=display)
    ctx: dict[str, Any] = {"base_dir": path.parent, "file": display, "default_name": _default_name(path),
                           "collect": True}
    if suffix in (".yaml", ".yml"):
        text = _read_text(path, display)
        data, meta.lines, nodes = _load_yaml(text, display)
        xyz_node = nodes.get(("molecule", "xyz"))
        if isinstance(xyz_node, yaml.ScalarNode):
            start = xyz_node.start_mark.line + 1
            ctx["xyz_lines"] = (start + 1, 1) if xyz_node.style == "|" else (start, 0)
            ctx["xyz_key_line"] = meta.lines.get(("molecule", "xyz"))
        ctx["file_key_line"] = meta.lines.get(("molecule", "file"))
        dist_node = nodes.get(("scan", "distances"))
        if isinstance(dist_node, yaml.ScalarNode) and ":" in dist_node.value \
                and isinstance(data.get("scan"), dict):
            # YAML 1.1 reads 2:10:0.5 as a base-60 number: keep the range as written
            data["scan"]["distances"] = dist_node.value
    elif suffix == ".xyz":
        _stat_regular(path, lambda message: InputError(message, file=display), MAX_TEXT_FILE_BYTES)
        data = {"molecule": {"file": path.name}}
        ctx["bare_xyz"] = True
    else:
        raise InputError(f"unsupported input file type {suffix or '(no extension)'!r} "
                         f"(expected .yaml, .yml or .xyz)", file=display)

    for key, value in (overrides or {}).items():
        if key not in OVERRIDE_KEYS:
            raise TypeError(f"load_job: unknown override {key!r}")
        if value is None:
            continue
        target = OVERRIDE_KEYS[key]
        node: Any = data
        for part in target[:-1]:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                break
        else:
            node[target[-1]] = value
            meta.overridden[target] = "--" + key.replace("_", "-")

    try:
        spec = JobSpec.model_validate(data, context=ctx)
    except ValidationError as exc:
        raise _translate(exc, meta) from None
    spec._source_path = path.absolute()
    spec._meta = meta
    validate_job(spec)
    return spec


@contextlib.contextmanager
def _quiet():
    """Silence PySCF's prints and warnings while probing names."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield


@functools.lru_cache(maxsize=256)
def _xc_problem(name: str) -> str | None:
    """None if PySCF/libxc understands `name`, else a message."""
    from pyscf.dft import libxc

    try:
        with _quiet():
            libxc.parse_xc(name)
        return None
    except Exception:  # noqa: BLE001 - PySCF raises KeyError, ValueError, ... for bad names
        pass
    known = [n.lower() for n in (*libxc.XC_ALIAS, *libxc.XC_CODES)] + [f.lower() for f in DM21_FUNCTIONALS]
    close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.75)
    hint = f" (did you mean {_DM21_BY_LOWER.get(close[0], close[0])!r}?)" if close else ""
    return f"unknown functional {_show(name)}{hint}; use DM21, DM21m, DM21mc, DM21mu or a PySCF/libxc name"


@functools.lru_cache(maxsize=1024)
def _basis_problem(name: str, symbol: str) -> str | None:
    """None if basis `name` has functions for `symbol`, else a message."""
    from pyscf import gto

    try:
        with _quiet():
            shells = gto.basis.load(name, symbol)
    except Exception as exc:  # noqa: BLE001 - BasisNotFoundError, parse errors of files, ...
        text = str(exc)
        if "not found for" in text:
            return f"basis {_show(name)} has no functions for {symbol}"
        hint = ""
        try:
            from pyscf.gto.basis import ALIAS, _format_basis_name

            close = difflib.get_close_matches(_format_basis_name(name), list(ALIAS), n=1, cutoff=0.8)
            if close:
                hint = f" (did you mean {close[0]!r}?)"
        except Exception:  # noqa: BLE001 - suggestions are best effort
            pass
        return f"unknown basis set {_show(name)}{hint}"
    if not shells:
        return f"basis {_show(name)} has no functions for {symbol}"
    return None


def _basis_key_path(meta: _Meta, key: str) -> tuple:
    for path in meta.lines:
        if len(path) == 2 and path[0] == "basis" and isinstance(path[1], str):
            raw = path[1].strip()
            norm = "default" if raw.lower() == "default" else (elements.normalise_symbol(raw) or raw)
            if norm == key:
                return path
    return ("basis", key)


def _basis_location(spec: JobSpec, symbol: str) -> dict:
    """file / line / field of the basis entry that covers `symbol`."""
    meta: _Meta = spec._meta
    if isinstance(spec.basis, dict):
        key = symbol if symbol in spec.basis else "default"
        return meta.locate(_basis_key_path(meta, key))
    return meta.locate(("basis",))


# --------------------------------------------------------------------------
# effective core potentials
# --------------------------------------------------------------------------

class EcpEntry(NamedTuple):
    """The effective core potential of one element: its basis name and the electrons it replaces."""

    basis: str
    core_electrons: int


@functools.lru_cache(maxsize=1024)
def _ecp_lookup(name: str, symbol: str) -> tuple[int | None, str | None]:
    """(core electrons, or None for an all-electron element; a problem message or None).

    PySCF's ``gto.basis.load_ecp`` returns [] for an element without an ECP
    in its own library, ``[ncore, ...]`` with one, and falls back to the
    basis-set-exchange package for names it does not know (which raises
    BasisNotFoundError 'No ECP defined for ...' for an all-electron element).
    Anything else means we cannot tell, and the job is refused.
    """
    from pyscf.gto import basis as pyscf_basis
    from pyscf.lib.exceptions import BasisNotFoundError

    cannot = f"cannot tell whether basis {_show(name)} has an effective core potential for {symbol}"
    try:
        with _quiet():
            data = pyscf_basis.load_ecp(name, symbol)
    except BasisNotFoundError as exc:
        if str(exc).startswith("No ECP defined for"):
            return None, None
        return None, f"{cannot} ({str(exc).splitlines()[0][:80] if str(exc) else 'not found'})"
    except Exception as exc:  # noqa: BLE001 - parse errors of files, missing packages, ...
        reason = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
        return None, f"{cannot} ({reason})"
    if data is None or (isinstance(data, (list, tuple)) and len(data) == 0):
        return None, None
    try:
        ncore = int(data[0])
        ok = isinstance(data[0], (int, np.integer)) and 0 <= ncore <= elements.atomic_number(symbol)
    except (TypeError, ValueError, IndexError):
        ok = False
    if not ok:
        return None, f"{cannot} (PySCF gives no core-electron count)"
    return ncore, None


def ecp_map(spec: JobSpec) -> dict[str, EcpEntry]:
    """The effective core potentials of a job: {element: EcpEntry}, for each element present
    whose basis has an ECP (any name PySCF knows, or basis-set-exchange when installed).

    The one rule for every Mole a job builds (`dm21cli.runner.build_molecule`,
    the orbital counts of validation) and for what result.json records.  Raises
    `InputError` at the basis entry when PySCF cannot tell.
    """
    found: dict[str, EcpEntry] = {}
    for symbol in dict.fromkeys(spec.molecule.symbols):
        name = spec.basis_for(symbol)
        if name is None:
            continue  # validate_job reports the missing basis
        ncore, problem = _ecp_lookup(name, symbol)
        if problem:
            raise InputError(problem, **_basis_location(spec, symbol))
        if ncore is not None:
            found[symbol] = EcpEntry(name, ncore)
    return found


def ecp_summary(ecp: dict[str, EcpEntry]) -> str:
    """``Na lanl2dz (10 core electrons), Cl lanl2dz (10 core electrons)``."""
    return ", ".join(f"{symbol} {entry.basis} ({entry.core_electrons} core electron"
                     f"{'' if entry.core_electrons == 1 else 's'})" for symbol, entry in ecp.items())


# --------------------------------------------------------------------------
# validate_job
# --------------------------------------------------------------------------

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
    meta: _Meta = spec._meta
    mol = spec.molecule
    problems = _Problems()

    problems.run(_check_geometry, spec, problems)
    electrons_ok = problems.run(_check_electrons, spec)

    # -- basis mapping keys ---------------------------------------------------
    covered = list(dict.fromkeys(mol.symbols))
    if isinstance(spec.basis, dict):
        for key in spec.basis:
            if key != "default" and elements.normalise_symbol(key) != key:
                problems.add(InputError(f"{elements.unknown_element_message(key)}; basis mapping keys are "
                                        f"element symbols or 'default'",
                                        **meta.locate(_basis_key_path(meta, key))))
        for symbol in list(covered):
            if spec.basis_for(symbol) is None:
                covered.remove(symbol)
                problems.add(InputError(f"no basis for element {symbol}: add '{symbol}: <basis>' or a "
                                        f"'default' entry", **meta.locate(("basis",))))
    basis_ok = len(covered) == len(set(mol.symbols))

    # -- restricted / cubes (no PySCF needed) ---------------------------------
    restricted = spec.resolved_restricted()
    if spec.is_dm21 and restricted and mol.multiplicity > 1:
        problems.add(InputError(f"restricted open-shell DM21 is not supported (multiplicity "
                                f"{mol.multiplicity}); use restricted: false or null",
                                **meta.locate(("scf", "restricted"))))
    for i, cube in enumerate(spec.outputs.cubes):
        if cube[-1] in "ab" and cube.startswith("orbital:") and restricted:
            problems.add(InputError(f"{cube}: spin suffixes a/b need an unrestricted calculation "
                                    f"(this one is restricted); use orbital:{cube[8:-1]}",
                                    **meta.locate(("outputs", "cubes", i))))

    problems.run(_check_guess_chkfile, spec)
    if spec.scan is not None:
        problems.run(_validate_scan, spec)
    problems.run(_check_cube_size, spec)

    # -- names PySCF must know ------------------------------------------------
    if not spec.is_dm21:
        problem = _xc_problem(spec.functional)
        if problem:
            problems.add(InputError(problem, **meta.locate(("functional",))))
    elif spec.scf.warm_start is not None:
        problem = _xc_problem(spec.scf.warm_start)
        if problem:
            problems.add(InputError(problem.replace("unknown functional", "unknown warm-start functional"),
                                    **meta.locate(("scf", "warm_start"))))
    for symbol in covered:
        problem = _basis_problem(spec.basis_for(symbol), symbol)
        if problem:
            basis_ok = False
            problems.add(InputError(problem, **_basis_location(spec, symbol)))
    if not basis_ok:
        problems.raise_any()

    # -- effective core potentials, and what fits in the orbitals -------------
    if not problems.run(ecp_map, spec):
        problems.raise_any()
    nao = None
    try:
        nao = _count_orbitals(spec)
    except InputError as exc:
        problems.add(exc)
    if nao is not None and electrons_ok:
        problems.run(_check_capacity, spec, nao)

    # -- orbital indices (needs the basis size) ------------------------------
    wanted = [(("outputs", "cubes", i), int(re.sub(r"[ab]$", "", c[8:])))
              for i, c in enumerate(spec.outputs.cubes) if c.startswith("orbital:")]
    wanted += [(("outputs", "orbitals", i), n) for i, n in enumerate(spec.outputs.orbitals)]
    if nao is not None:
        for path, n in wanted:
            if n > nao:
                problems.add(InputError(f"orbital {n} does not exist: {spec.basis_label()} gives {nao} "
                                        f"orbitals for {mol.formula()}", **meta.locate(path)))
    problems.raise_any()


def _check_geometry(spec: JobSpec, problems: _Problems) -> None:
    """Elements, finite coordinates, and atoms closer than MIN_DISTANCE_ANGSTROM (each atom once)."""
    meta: _Meta = spec._meta
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
    meta: _Meta = spec._meta
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
    meta: _Meta = spec._meta
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
    meta: _Meta = spec._meta
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
    from dm21cli.outputs import cube_grid_shape

    if not spec.outputs.cube_requests():
        return
    meta: _Meta = spec._meta
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

    _stat_regular(chk, fail, MAX_CHKFILE_BYTES)
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


def _validate_scan(spec: JobSpec) -> None:
    """The ``scan`` section against the molecule: atom numbers, fragment, functionals."""
    meta: _Meta = spec._meta
    scan = spec.scan
    natm = spec.molecule.natm
    if natm < 2:
        raise InputError(f"a scan needs at least two atoms; the molecule has {natm}",
                         **meta.locate(("scan",)))
    for k, n in enumerate(scan.atoms):
        if n > natm:
            raise InputError(f"atom {n} does not exist (the molecule has {natm} atoms)",
                             **meta.locate(("scan", "atoms", k)))
    first, second = scan.atoms
    if first == second:
        raise InputError(f"the two atoms of the pair must differ, got {first} twice",
                         **meta.locate(("scan", "atoms")))
    if scan.fragment is not None:
        seen: set[int] = set()
        for k, n in enumerate(scan.fragment):
            where = meta.locate(("scan", "fragment", k))
            if n > natm:
                raise InputError(f"atom {n} does not exist (the molecule has {natm} atoms)", **where)
            if n in seen:
                raise InputError(f"atom {n} appears twice in the fragment", **where)
            if n == first:
                raise InputError(f"the moving fragment must not contain atom {first}, the fixed "
                                 f"atom of the pair scan.atoms", **where)
            seen.add(n)
        if second not in seen:
            raise InputError(f"the moving fragment must contain atom {second}, the moving atom of "
                             f"the pair scan.atoms", **meta.locate(("scan", "fragment")))
    for k, name in enumerate(scan.functionals or []):
        if name not in DM21_FUNCTIONALS:
            problem = _xc_problem(name)
            if problem:
                raise InputError(problem, **meta.locate(("scan", "functionals", k)))
    restricted = spec.scf.restricted
    if scan.broken_symmetry and (spec.molecule.multiplicity != 1 or restricted):
        raise InputError("broken_symmetry needs a singlet (multiplicity 1) that may be computed "
                         "unrestricted (scf.restricted not true)",
                         **meta.locate(("scan", "broken_symmetry")))


def _count_orbitals(spec: JobSpec) -> int:
    """Number of orbitals (spherical AOs) the basis gives the molecule, with its ECPs attached.

    The Mole is built neutral with the spin PySCF derives, so that an absurd
    charge never reaches PySCF; the electrons are checked against this count.
    """
    from pyscf import gto

    mol = spec.molecule
    try:
        with _quiet():
            pmol = gto.M(atom=mol.pyscf_atom(), unit="Bohr", basis=spec.pyscf_basis(),
                         ecp=spec.pyscf_ecp() or None, charge=0, spin=None, verbose=0)
        return int(pmol.nao_nr())
    except Exception as exc:  # noqa: BLE001 - report rather than crash
        raise InputError(f"PySCF cannot build this molecule: {exc}",
                         **spec._meta.locate(("molecule",))) from None
