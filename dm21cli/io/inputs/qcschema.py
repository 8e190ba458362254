"""A QCSchema ``AtomicInput`` (version 1, JSON) as a job: ``dm21 run input.json`` and QCEngine.

`atomic_input_job` maps an AtomicInput onto the keys of a job file; the job
is then validated exactly as a YAML job file is (`dm21cli.io.inputs.load`), and
every problem names the AtomicInput's own field (``keywords.conv_tol``,
``model.method``, ``molecule.geometry``) and, in a file, its line.

The mapping (docs/reference/inputs.md, "QCSchema AtomicInput"):

- ``molecule``: ``symbols`` and ``geometry`` (bohr, 3N numbers or N rows of
  3), ``molecular_charge``, ``molecular_multiplicity``; the fields qcelemental
  fills in (masses, atomic numbers, fragments, connectivity, ...) are checked
  for their shapes (`check_molecule`: one entry per atom, atom indices in
  range, finite numbers) and not used: the electronic energy depends on none
  of them.  Ghost atoms (``real: false``) are refused.
- ``driver``: `job_settings_for_driver`, the one place where it is mapped.
- ``model``: ``method`` -> ``functional``, ``basis`` -> ``basis``.
- ``keywords``: the job file's keys of the sections ``scf``, ``outputs``,
  ``resources`` and ``job`` by their plain name (``conv_tol``, ``grid_level``,
  ``cubes``, ``threads``, ``name``, ...), ``dispersion``, and ``solvent`` (the job
  file's section ``{model, name, eps}``, or a solvent's name or dielectric constant as
  ``--solvent`` takes them); anything else is an error.
- ``protocols``, ``extras`` and ``id`` are carried into the result.
"""

from __future__ import annotations

import difflib
import json
import math
from typing import Any

from dm21cli.core import elements
from dm21cli.core.errors import InputError
from dm21cli.core.units import BOHR_ANGSTROM
from dm21cli.io.inputs.fields import describe_value, show_value
from dm21cli.io.inputs.models import JobSettings, OutputSettings, ResourceSettings, ScfSettings
from dm21cli.io.inputs.solvent_model import solvent_override
from dm21cli.io.inputs.xyz import MAX_COORDINATE_ANGSTROM

#: the drivers QCSchema defines; dm21 computes energies, gradients and Hessians
#: (`job_settings_for_driver`)
DRIVERS = ("energy", "gradient", "hessian", "properties")

#: keyword -> (job file section or None for the top level, key)
KEYWORDS: dict[str, tuple[str | None, str]] = {
    **{key: ("scf", key) for key in ScfSettings.model_fields},
    **{key: ("outputs", key) for key in OutputSettings.model_fields},
    **{key: ("resources", key) for key in ResourceSettings.model_fields},
    **{key: ("job", key) for key in JobSettings.model_fields},
    "dispersion": (None, "dispersion"),
    # the job file's section {model, name, eps}, or what --solvent takes (a name, a number)
    "solvent": (None, "solvent"),
}

#: keywords that are set elsewhere in an AtomicInput
_ELSEWHERE = {"basis": "model.basis", "functional": "model.method", "method": "model.method",
              "task": "driver",
              "charge": "molecule.molecular_charge",
              "multiplicity": "molecule.molecular_multiplicity",
              "molecular_charge": "molecule.molecular_charge",
              "molecular_multiplicity": "molecule.molecular_multiplicity"}

_TOP = ("id", "schema_name", "schema_version", "molecule", "driver", "model", "keywords",
        "protocols", "extras", "provenance")
#: QCSchema Molecule fields (with and without qcelemental's trailing underscore)
_MOLECULE = {"schema_name", "schema_version", "validated", "symbols", "geometry", "name",
             "identifiers", "comment", "molecular_charge", "molecular_multiplicity", "masses",
             "real", "atom_labels", "atomic_numbers", "mass_numbers", "connectivity", "fragments",
             "fragment_charges", "fragment_multiplicities", "fix_com", "fix_orientation",
             "fix_symmetry", "provenance", "id", "extras"}
_MOLECULE |= {f"{key}_" for key in ("masses", "real", "atom_labels", "atomic_numbers",
                                     "mass_numbers", "connectivity", "fragments",
                                     "fragment_charges", "fragment_multiplicities")}
_PROTOCOLS = {"wavefunction": ("none",), "stdout": (True, False),
              "native_files": ("none", "input", "all"), "error_correction": None}


def job_settings_for_driver(driver: Any, where: dict | None = None) -> dict:
    """The job-file settings for a QCSchema driver; the one place drivers are mapped.

    ``energy`` is the job file's default; ``gradient`` is ``job: {task: gradient}``
    (the energy and its nuclear gradient), which `driver_of` reads back; the
    result's ``return_result`` is then ``properties.return_gradient``
    (`dm21cli.io.outputs.qcschema.to_qcschema`); ``hessian`` is ``job: {task: freq}``
    (`dm21cli.jobs.freq`: ``return_result`` the Hessian).
    """
    where = where or {}
    if driver == "energy":
        return {}
    if driver == "gradient":
        return {"job": {"task": "gradient"}}
    if driver == "hessian":  # central differences of gradients: dm21 freq's Hessian
        return {"job": {"task": "freq"}}
    raise InputError(f"{show_value(driver)} is not supported (dm21 computes: energy, gradient, hessian)"
                     if driver in DRIVERS else
                     f"unknown driver {describe_value(driver)} (QCSchema drivers: {', '.join(DRIVERS)})",
                     **where)


def driver_of(spec) -> str:
    """The QCSchema driver of a job's result.json: its ``job.task`` (``energy`` or
    ``gradient``); an optimisation (``opt``) records its final geometry's energy and
    gradient, so ``gradient``; a frequency calculation (``freq``) its Hessian."""
    return {"opt": "gradient", "freq": "hessian"}.get(spec.job.task, spec.job.task)


def read_json(text: str, file: str) -> tuple[Any, dict[tuple, int]]:
    """(data, {path: line}) of a JSON text; duplicate keys are errors, as in job files."""
    from dm21cli.io.inputs.files import load_yaml

    def no_duplicates(pairs):
        out: dict = {}
        for key, value in pairs:
            if key in out:
                raise InputError(f"duplicate key {key!r}", file=file)
            out[key] = value
        return out

    try:
        data = json.loads(text, object_pairs_hook=no_duplicates,
                          parse_constant=lambda name: _reject_constant(name, file))
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc.msg} (column {exc.colno})", file=file,
                         line=exc.lineno) from None
    except RecursionError:
        raise InputError("invalid JSON: nested too deeply", file=file) from None
    try:  # JSON is YAML: its node tree gives every key its line (values come from json)
        _, lines, _ = load_yaml(text, file)
    except InputError:
        lines = {}
    return data, lines


def _reject_constant(name: str, file: str):
    raise InputError(f"invalid JSON: {name} is not a number JSON allows", file=file)


class _Problems:
    def __init__(self, file: str | None, lines: dict[tuple, int]):
        self.file, self.lines, self.found = file, lines, []

    def where(self, path: tuple) -> dict:
        line = None
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                line = self.lines[path[:n]]
                break
        field = ""
        for part in path:
            field += f"[{part}]" if isinstance(part, int) else ("." if field else "") + str(part)
        return {"file": self.file, "line": line, "field": field or None}

    def add(self, message: str, path: tuple) -> None:
        self.found.append(InputError(message, **self.where(path)))


def _suggest(key: str, allowed) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _mapping(value: Any, path: tuple, problems: _Problems) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        problems.add(f"expected a mapping of keys, got {describe_value(value)}", path)
        return None
    return value


def _is_number(value: Any) -> bool:
    """A JSON number (not a boolean) that is finite (as a float: no 400-digit integers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _is_whole(value: Any) -> bool:
    """A JSON integer, or a number with no fractional part (``0.0``, as qcelemental writes)."""
    return _is_number(value) and float(value).is_integer()


def _count(n: int, noun: str) -> str:
    """``1 entry``, ``2 entries``, ``0 values``."""
    if n == 1:
        return f"1 {noun}"
    return f"{n} {noun[:-1]}ies" if noun.endswith("y") else f"{n} {noun}s"


def _key(mol: dict, name: str) -> str:
    """The key a Molecule field is given under: `name`, or qcelemental's ``name_``."""
    return name if name in mol or f"{name}_" not in mol else f"{name}_"


def _geometry_rows(geometry: Any, natom: int, problems: _Problems,
                   strict: bool = True) -> list | None:
    """The N rows [x, y, z] (bohr) of ``molecule.geometry``: either 3N numbers or N rows of
    exactly 3 numbers (N = len(symbols)), every one finite; None after adding the problem.
    strict False: the shape of a list alone (qcelemental reads the rest, and says when it
    is missing), None."""
    path = ("molecule", "geometry")
    if not isinstance(geometry, list):
        if strict or geometry is not None:
            problems.add(f"expected a list of coordinates in bohr, got {describe_value(geometry)}",
                         path)
        return None
    rows = [isinstance(item, list) for item in geometry]
    if geometry and all(rows):
        if len(geometry) != natom:
            problems.add(f"{len(geometry)} rows for {natom} atoms (expected one [x, y, z] row per "
                         f"atom, in bohr)", path)
            return None
        for i, row in enumerate(geometry):
            if len(row) != 3:
                problems.add(f"{_count(len(row), 'number')} in this row (expected 3: x, y, z "
                             f"in bohr)", path + (i,))
                return None
        cells = [((i, k), value) for i, row in enumerate(geometry) for k, value in enumerate(row)]
    elif any(rows):
        problems.add(f"mixes numbers and rows (expected {3 * natom} numbers, or {natom} rows "
                     f"[x, y, z], in bohr)", path + (rows.index(True),))
        return None
    else:
        if len(geometry) != 3 * natom:
            problems.add(f"{len(geometry)} coordinates for {natom} atoms (expected {3 * natom}: "
                         f"x, y, z per atom, in bohr)", path)
            return None
        cells = [((i,), value) for i, value in enumerate(geometry)]
    if not strict:
        return None
    for where, value in cells:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 1e300:
            problems.add(f"coordinate {show_value(value)} is too large (limit "
                         f"{MAX_COORDINATE_ANGSTROM / BOHR_ANGSTROM:.6g} bohr = "
                         f"{MAX_COORDINATE_ANGSTROM:g} Angstrom)", path + where)
            return None
        if not _is_number(value):
            problems.add(f"expected finite numbers (bohr), got {describe_value(value)}", path + where)
            return None
    flat = [float(value) for _, value in cells]
    return [flat[3 * i:3 * i + 3] for i in range(natom)]


#: the Molecule's per-atom arrays: field -> (what each entry must be, its check)
_PER_ATOM = {
    "masses": ("a mass in u (a number > 0)", lambda v: _is_number(v) and v > 0),
    "real": ("true or false", lambda v: isinstance(v, bool)),
    "atom_labels": ("a string", lambda v: isinstance(v, str)),
    "atomic_numbers": ("an atomic number", lambda v: _is_whole(v) and v >= 1),
    "mass_numbers": ("a mass number (or -1: none given)", lambda v: _is_whole(v) and v >= -1),
}


def _per_atom_arrays(mol: dict, symbols: list, problems: _Problems, strict: bool = True) -> None:
    """Each of `_PER_ATOM` given: one entry per atom, each of its kind (strict False: the
    number of entries alone); atomic numbers those of the symbols.  dm21 uses none of them
    (ghost atoms are refused in `_molecule_checked`)."""
    natom = len(symbols)
    for name, (what, check) in _PER_ATOM.items():
        key = _key(mol, name)
        values = mol.get(key)
        if values is None:
            continue
        path = ("molecule", key)
        if not isinstance(values, list) or len(values) != natom:
            got = _count(len(values), "entry") if isinstance(values, list) else describe_value(values)
            problems.add(f"expected one entry per atom ({natom}), got {got}", path)
            continue
        if not strict:
            continue
        bad = next((i for i, v in enumerate(values) if not check(v)), None)
        if bad is not None:
            problems.add(f"expected {what}, got {describe_value(values[bad])}", path + (bad,))
            continue
        if name == "atomic_numbers":
            for i, (z, symbol) in enumerate(zip(values, symbols)):
                known = elements.normalise_symbol(symbol)
                if known and not symbol.strip().isdigit() and int(z) != elements.atomic_number(known):
                    problems.add(f"atomic number {int(z)} is not that of {symbol} "
                                 f"({elements.atomic_number(known)})", path + (i,))
                    break


def _atom_index(value: Any, natom: int) -> str | None:
    """None if `value` is the index of one of `natom` atoms (from 0), else the problem."""
    if not _is_whole(value):
        return f"expected an atom index (an integer from 0), got {describe_value(value)}"
    if not 0 <= value < natom:
        return f"atom index {show_value(value)} is out of range (atoms count from 0 to {natom - 1})"
    return None


def _fragments(mol: dict, natom: int, problems: _Problems) -> int | None:
    """``fragments``: lists of atom indices, every atom in exactly one; their number (None if
    not given or malformed)."""
    key = _key(mol, "fragments")
    fragments = mol.get(key)
    if fragments is None:
        return None
    path = ("molecule", key)
    if not isinstance(fragments, list) or not all(isinstance(f, list) for f in fragments):
        problems.add(f"expected a list of fragments, each a list of atom indices, got "
                     f"{describe_value(fragments)}", path)
        return None
    owner: dict[int, int] = {}
    for f, fragment in enumerate(fragments):
        for k, index in enumerate(fragment):
            problem = _atom_index(index, natom)
            if problem is None and int(index) in owner:
                problem = f"atom {int(index)} is in fragments {owner[int(index)]} and {f}"
            if problem:
                problems.add(problem, path + (f, k))
                return None
            owner[int(index)] = f
    missing = [i for i in range(natom) if i not in owner]
    if missing:
        problems.add(f"atom{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing[:10]))}"
                     f"{', ...' if len(missing) > 10 else ''} in no fragment (every atom belongs "
                     f"to one)", path)
        return None
    return len(fragments)


def _fragment_values(mol: dict, nfragment: int | None, problems: _Problems,
                     strict: bool = True) -> None:
    """``fragment_charges`` and ``fragment_multiplicities``: one number (or null) per fragment;
    dm21 takes the charge and multiplicity from ``molecular_charge`` and
    ``molecular_multiplicity``, so these must be given with them and the charges must add
    up to ``molecular_charge``.  strict False: one value per fragment alone (qcelemental
    derives the molecular values from them)."""
    for name, low in (("fragment_charges", None), ("fragment_multiplicities", 1)):
        key = _key(mol, name)
        values = mol.get(key)
        if values is None:
            continue
        path = ("molecule", key)
        if not isinstance(values, list):
            problems.add(f"expected a list, one value per fragment, got {describe_value(values)}", path)
            continue
        if nfragment is None:
            if _key(mol, "fragments") not in mol:
                problems.add("given without molecule.fragments", path)
            continue
        if len(values) != nfragment:
            problems.add(f"{_count(len(values), 'value')} for {_count(nfragment, 'fragment')} "
                         f"(expected one per fragment)", path)
            continue
        if not strict:
            continue
        bad = next((i for i, v in enumerate(values) if v is not None and
                    not (_is_number(v) and (low is None or v >= low))), None)
        if bad is not None:
            what = "a number" if low is None else f"a number >= {low}"
            problems.add(f"expected {what} or null, got {describe_value(values[bad])}", path + (bad,))
            continue
        molecular = "molecular_charge" if low is None else "molecular_multiplicity"
        total = mol.get(molecular)
        # without molecular_*, qcelemental would derive them from these, dm21 takes 0 and 1
        implied = any(v not in (None, 0) for v in values) if low is None else \
            any(v is not None and v > 1 for v in values)
        if total is None and implied:
            problems.add(f"given without molecule.{molecular}: dm21 takes the "
                         f"{'charge' if low is None else 'multiplicity'} from {molecular} "
                         f"(give it)", path)
        elif low is None and None not in values and _is_number(total) and \
                abs(sum(values) - total) > 1e-8:
            problems.add(f"the fragment charges add up to {show_value(sum(values))}, but "
                         f"molecular_charge is {show_value(total)}", path)


def _connectivity(mol: dict, natom: int, problems: _Problems) -> None:
    """``connectivity``: [atom, atom, bond order] triples, two different atoms in range and
    a bond order from 0 to 5 (QCSchema's range)."""
    key = _key(mol, "connectivity")
    bonds = mol.get(key)
    if bonds is None:
        return
    path = ("molecule", key)
    if not isinstance(bonds, list):
        problems.add(f"expected a list of [atom, atom, bond order], got {describe_value(bonds)}", path)
        return
    for b, bond in enumerate(bonds):
        if not isinstance(bond, list) or len(bond) != 3:
            got = _count(len(bond), "value") if isinstance(bond, list) else describe_value(bond)
            problems.add(f"expected [atom, atom, bond order], got {got}", path + (b,))
            return
        for k in (0, 1):
            problem = _atom_index(bond[k], natom)
            if problem:
                problems.add(problem, path + (b, k))
                return
        if int(bond[0]) == int(bond[1]):
            problems.add(f"a bond of atom {int(bond[0])} with itself", path + (b,))
            return
        if not (_is_number(bond[2]) and 0 <= bond[2] <= 5):
            problems.add(f"expected a bond order from 0 to 5, got {describe_value(bond[2])}",
                         path + (b, 2))
            return


def _molecule_checked(mol: dict, problems: _Problems, strict: bool = True) -> list | None:
    """The geometry rows (bohr) of a QCSchema Molecule whose arrays all have their shapes
    (`_geometry_rows`, `_per_atom_arrays`, `_fragments`, `_fragment_values`,
    `_connectivity`); None when the symbols or the geometry are unusable.

    strict: a Molecule as ``dm21 run input.json`` reads it (also unknown keys, the kinds
    of entries, ghost atoms); False: the shapes and atom indices alone, what qcelemental
    refuses too (or, for atom indices, does not check), before it reads the molecule.
    """
    if strict:
        for key in mol:
            if key not in _MOLECULE:
                problems.add(f"unknown key {key!r}{_suggest(key, _MOLECULE)}", ("molecule", key))
    symbols = mol.get("symbols")
    if not isinstance(symbols, list) or not symbols or \
            (strict and not all(isinstance(s, str) for s in symbols)):
        if strict:
            problems.add(f"expected a list of element symbols, got {describe_value(symbols)}",
                         ("molecule", "symbols"))
        return None
    natom = len(symbols)
    _per_atom_arrays(mol, symbols, problems, strict)
    real = mol.get(_key(mol, "real"))
    if strict and isinstance(real, list) and len(real) == natom and \
            all(isinstance(r, bool) for r in real) and not all(real):
        problems.add("ghost atoms (real: false) are not supported", ("molecule", _key(mol, "real")))
    _fragment_values(mol, _fragments(mol, natom, problems), problems, strict)
    _connectivity(mol, natom, problems)
    return _geometry_rows(mol.get("geometry"), natom, problems, strict)


def _plain(value: Any) -> Any:
    """NumPy arrays (and tuples) in a Molecule dict as plain lists, as JSON has them."""
    if hasattr(value, "tolist") and not isinstance(value, (bool, int, float, str)):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def check_molecule(molecule: Any, file: str | None = "AtomicInput") -> None:
    """Raise `InputError` (every problem, naming ``molecule.<field>``) if a QCSchema Molecule
    given as a dict has an array of the wrong shape: the geometry (3N numbers or N rows of
    3, N = len(symbols)), the per-atom arrays, fragments (every atom in one, indices in
    range) and one charge and multiplicity per fragment, connectivity ([atom, atom, bond
    order], indices in range).  NumPy arrays are read as lists.  The rest (a Molecule
    object, the kinds of entries, elements, charge and multiplicity) is qcelemental's to
    check, and `atomic_input_job`'s after it.

    The QCEngine harness calls it before qcelemental parses the molecule, so that a bad
    shape is QCEngine's ``input_error`` naming the field (`dm21cli.integrations.qcengine`).
    """
    if not isinstance(molecule, dict):
        return
    problems = _Problems(file, {})
    _molecule_checked({key: _plain(value) for key, value in molecule.items()}, problems,
                      strict=False)
    if problems.found:
        raise InputError.several(problems.found)


def _molecule(mol: dict, problems: _Problems, job: dict, renamed: dict, lines: dict) -> None:
    rows = _molecule_checked(mol, problems)
    if rows is None:
        return
    symbols = mol["symbols"]
    where = problems.where(("molecule", "geometry"))
    job["molecule"] = {
        # repr() round-trips every float exactly
        "xyz": "".join(f"{s} {x!r} {y!r} {z!r}\n" for s, (x, y, z) in zip(symbols, rows)),
        "units": "bohr",
        "charge": mol.get("molecular_charge"),
        "multiplicity": mol.get("molecular_multiplicity"),
    }
    renamed.update({("molecule",): "molecule", ("molecule", "xyz"): "molecule.geometry",
                    ("molecule", "units"): "molecule.geometry",
                    ("molecule", "charge"): "molecule.molecular_charge",
                    ("molecule", "multiplicity"): "molecule.molecular_multiplicity"})
    for job_key, key in (("xyz", "geometry"), ("units", "geometry"),
                         ("charge", "molecular_charge"), ("multiplicity", "molecular_multiplicity")):
        if ("molecule", key) in problems.lines:
            lines[("molecule", job_key)] = problems.lines[("molecule", key)]
    lines[("molecule",)] = problems.lines.get(("molecule",), where["line"])


def _check_top(document: Any, problems: _Problems, file: str | None) -> None:
    """Add the problems of an AtomicInput's top level (unknown keys, ``schema_name``,
    ``schema_version``); raise `InputError` at once when `document` is no mapping or is a
    QCSchema version 2 AtomicInput (it has ``specification``)."""
    if not isinstance(document, dict):
        raise InputError(f"expected a QCSchema AtomicInput (a JSON object with molecule, driver, "
                         f"model, keywords), got {describe_value(document)}", file=file, line=1)
    if "specification" in document:
        raise InputError("this is a QCSchema version 2 AtomicInput (it has 'specification'); dm21 "
                         "reads version 1 (schema_name qcschema_input: molecule, driver, model, "
                         "keywords at the top level)", **problems.where(("specification",)))
    for key in document:
        if key not in _TOP:
            problems.add(f"unknown key {key!r}{_suggest(key, _TOP)} (an AtomicInput has: "
                         f"{', '.join(_TOP)})", (key,))
    if document.get("schema_name", "qcschema_input") not in ("qcschema_input", "qc_schema_input"):
        problems.add(f"expected 'qcschema_input', got {describe_value(document.get('schema_name'))}",
                     ("schema_name",))
    if document.get("schema_version", 1) != 1:
        problems.add(f"dm21 reads QCSchema AtomicInput version 1, got "
                     f"{describe_value(document.get('schema_version'))}", ("schema_version",))


def _driver(document: dict, problems: _Problems, job: dict, renamed: dict, lines: dict) -> None:
    """``driver`` into `job` (`job_settings_for_driver`), its problem added; the job's
    ``job.task`` named ``driver`` in `renamed`, with the driver's line in `lines`."""
    if "driver" not in document:
        return
    try:
        job.update(job_settings_for_driver(document["driver"], problems.where(("driver",))))
    except InputError as exc:
        problems.found.append(exc)
    renamed[("job", "task")] = "driver"
    if ("driver",) in problems.lines:
        lines[("job", "task")] = problems.lines[("driver",)]


def _model(model: dict, problems: _Problems, job: dict, renamed: dict, lines: dict) -> None:
    """``model.method`` and ``model.basis`` into `job` as ``functional`` and ``basis`` (with
    their names in `renamed` and lines in `lines`); any other key, or a value that is no
    name, a problem."""
    for key in model:
        if key not in ("method", "basis"):
            problems.add(f"unknown key {key!r} (dm21 reads model.method and model.basis)",
                         ("model", key))
    for key, job_key in (("method", "functional"), ("basis", "basis")):
        value = model.get(key)
        if not isinstance(value, str):
            problems.add(f"expected a {'functional' if key == 'method' else 'basis-set'} name"
                         f"{' (a BasisSet object is not supported)' if isinstance(value, dict) else ''}"
                         f", got {describe_value(value)}", ("model", key))
            continue
        job[job_key] = value
        renamed[(job_key,)] = f"model.{key}"
        if ("model", key) in problems.lines:
            lines[(job_key,)] = problems.lines[("model", key)]


def _keywords(keywords: dict, problems: _Problems, job: dict, renamed: dict, lines: dict) -> None:
    """Each keyword into its job-file section of `job` (`KEYWORDS`; ``solvent`` given as
    ``--solvent`` takes it as the job file's section), with its name in `renamed` and line in
    `lines`; a keyword set elsewhere in an AtomicInput (`_ELSEWHERE`), or unknown, a problem."""
    for key, value in keywords.items():
        if key in _ELSEWHERE:
            problems.add(f"set this in {_ELSEWHERE[key]}, not in keywords", ("keywords", key))
            continue
        if key not in KEYWORDS:
            hint = _suggest(key, KEYWORDS) or f" (dm21 keywords: {', '.join(KEYWORDS)})"
            problems.add(f"unknown keyword {key!r}{hint}", ("keywords", key))
            continue
        section, name = KEYWORDS[key]
        path = (name,) if section is None else (section, name)
        if name == "solvent" and value is not None and not isinstance(value, dict):
            value = solvent_override(value)  # 'water', 78.4, 'none'
        if section is None:
            job[name] = value
        else:
            job.setdefault(section, {})[name] = value
        renamed[path] = f"keywords.{key}"
        if ("keywords", key) in problems.lines:
            lines[path] = problems.lines[("keywords", key)]


def _check_protocols(protocols: dict, problems: _Problems) -> None:
    """Add a problem for each protocol dm21 does not know (`_PROTOCOLS`) or a value of it
    that dm21 does not support."""
    for key, value in protocols.items():
        if key not in _PROTOCOLS:
            problems.add(f"unknown protocol {key!r}{_suggest(key, _PROTOCOLS)}", ("protocols", key))
        elif _PROTOCOLS[key] is not None and value not in _PROTOCOLS[key]:
            problems.add(f"{describe_value(value)} is not supported (dm21: "
                         f"{', '.join(map(str, _PROTOCOLS[key]))})", ("protocols", key))


def _carried(document: dict, problems: _Problems) -> dict:
    """{``id``, ``protocols`` (None when empty), ``extras``} of an AtomicInput for its
    result, after adding the problems of these fields and of ``provenance``."""
    protocols = _mapping(document.get("protocols"), ("protocols",), problems) or {}
    _check_protocols(protocols, problems)
    extras = _mapping(document.get("extras"), ("extras",), problems) or {}
    if "dm21cli" in extras:
        problems.add("the key 'dm21cli' is dm21's own in the result's extras", ("extras", "dm21cli"))
    _mapping(document.get("provenance"), ("provenance",), problems)
    if document.get("id") is not None and not isinstance(document["id"], str):
        problems.add(f"expected a string, got {describe_value(document['id'])}", ("id",))
    return {"id": document.get("id"), "protocols": protocols or None, "extras": extras}


def atomic_input_job(document: Any, file: str | None = None,
                     lines: dict[tuple, int] | None = None) -> tuple[dict, dict, dict, dict]:
    """(job-file data, {job path: line}, {job path: AtomicInput field}, carried) of an AtomicInput.

    `carried` holds ``id``, ``protocols`` and ``extras`` for the result.
    Raises `InputError` (all problems of the document's structure at once);
    the job data are validated afterwards like a job file's.
    """
    problems = _Problems(file, lines or {})
    _check_top(document, problems, file)
    job: dict[str, Any] = {}
    renamed: dict[tuple, str] = {}
    job_lines: dict[tuple, int] = {}
    for key in ("molecule", "driver", "model"):
        if document.get(key) is None:
            problems.add(f"required key {key!r} is missing", (key,) if key in document else ())
    mol = _mapping(document.get("molecule"), ("molecule",), problems)
    if mol is not None:
        _molecule(mol, problems, job, renamed, job_lines)
    _driver(document, problems, job, renamed, job_lines)
    model = _mapping(document.get("model"), ("model",), problems)
    if model is not None:
        _model(model, problems, job, renamed, job_lines)
    keywords = _mapping(document.get("keywords"), ("keywords",), problems) or {}
    _keywords(keywords, problems, job, renamed, job_lines)
    carried = _carried(document, problems)
    if problems.found:
        raise InputError.several(problems.found)
    if () in problems.lines:
        job_lines[()] = problems.lines[()]
    return job, job_lines, renamed, carried
