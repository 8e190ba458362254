"""A QCSchema ``AtomicInput`` (version 1, JSON) as a job: ``dm21 run input.json`` and QCEngine.

`atomic_input_job` maps an AtomicInput onto the keys of a job file; the job
is then validated exactly as a YAML job file is (`dm21cli.io.inputs.load`), and
every problem names the AtomicInput's own field (``keywords.conv_tol``,
``model.method``, ``molecule.geometry``) and, in a file, its line.

The mapping (README, "QCSchema input"):

- ``molecule``: ``symbols`` and ``geometry`` (bohr, flat or one row per atom),
  ``molecular_charge``, ``molecular_multiplicity``; the fields qcelemental
  fills in (masses, atomic numbers, fragments, connectivity, ...) are accepted
  and not used: the electronic energy depends on none of them.  Ghost atoms
  (``real: false``) are refused.
- ``driver``: `job_settings_for_driver`, the one place where it is mapped.
- ``model``: ``method`` -> ``functional``, ``basis`` -> ``basis``.
- ``keywords``: the job file's keys of the sections ``scf``, ``outputs``,
  ``resources`` and ``job`` by their plain name (``conv_tol``, ``grid_level``,
  ``cubes``, ``threads``, ``name``, ...), and ``dispersion``; anything else is
  an error.
- ``protocols``, ``extras`` and ``id`` are carried into the result.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from dm21cli.core.errors import InputError
from dm21cli.core.units import BOHR_ANGSTROM
from dm21cli.io.inputs.fields import _describe, _show
from dm21cli.io.inputs.models import JobSettings, OutputSettings, ResourceSettings, ScfSettings
from dm21cli.io.inputs.xyz import MAX_COORDINATE_ANGSTROM

#: the drivers QCSchema defines; dm21 computes energies and gradients (`job_settings_for_driver`)
DRIVERS = ("energy", "gradient", "hessian", "properties")

#: keyword -> (job file section or None for the top level, key)
KEYWORDS: dict[str, tuple[str | None, str]] = {
    **{key: ("scf", key) for key in ScfSettings.model_fields},
    **{key: ("outputs", key) for key in OutputSettings.model_fields},
    **{key: ("resources", key) for key in ResourceSettings.model_fields},
    **{key: ("job", key) for key in JobSettings.model_fields},
    "dispersion": (None, "dispersion"),
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
    (`dm21cli.io.outputs.qcschema.to_qcschema`).
    """
    where = where or {}
    if driver == "energy":
        return {}
    if driver == "gradient":
        return {"job": {"task": "gradient"}}
    raise InputError(f"{_show(driver)} is not supported (dm21 computes: energy, gradient)"
                     if driver in DRIVERS else
                     f"unknown driver {_describe(driver)} (QCSchema drivers: {', '.join(DRIVERS)})",
                     **where)


def driver_of(spec) -> str:
    """The QCSchema driver of a job's result.json: its ``job.task`` (``energy`` or
    ``gradient``); an optimisation (``opt``) records its final geometry's energy and
    gradient, so ``gradient``."""
    return "gradient" if spec.job.task == "opt" else spec.job.task


def read_json(text: str, file: str) -> tuple[Any, dict[tuple, int]]:
    """(data, {path: line}) of a JSON text; duplicate keys are errors, as in job files."""
    from dm21cli.io.inputs.files import _load_yaml

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
        _, lines, _ = _load_yaml(text, file)
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
        problems.add(f"expected a mapping of keys, got {_describe(value)}", path)
        return None
    return value


def _geometry_rows(geometry: Any, natom: int, problems: _Problems) -> list | None:
    path = ("molecule", "geometry")
    if not isinstance(geometry, list):
        problems.add(f"expected a list of coordinates in bohr, got {_describe(geometry)}", path)
        return None
    flat = []
    for i, item in enumerate(geometry):
        for value in (item if isinstance(item, list) else [item]):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.add(f"expected numbers (bohr), got {_describe(value)}", path + (i,))
                return None
            try:
                flat.append(float(value))
            except OverflowError:  # an integer beyond a float (10**400)
                problems.add(f"coordinate {_show(value)} is too large (limit "
                             f"{MAX_COORDINATE_ANGSTROM / BOHR_ANGSTROM:.6g} bohr = "
                             f"{MAX_COORDINATE_ANGSTROM:g} Angstrom)", path + (i,))
                return None
    if len(flat) != 3 * natom:
        problems.add(f"{len(flat)} coordinates for {natom} atoms (expected {3 * natom}: x, y, z "
                     f"per atom, in bohr)", path)
        return None
    return [flat[3 * i:3 * i + 3] for i in range(natom)]


def _molecule(mol: dict, problems: _Problems, job: dict, renamed: dict, lines: dict) -> None:
    for key in mol:
        if key not in _MOLECULE:
            problems.add(f"unknown key {key!r}{_suggest(key, _MOLECULE)}", ("molecule", key))
    symbols = mol.get("symbols")
    if not isinstance(symbols, list) or not symbols or \
            not all(isinstance(s, str) for s in symbols):
        problems.add(f"expected a list of element symbols, got {_describe(symbols)}",
                     ("molecule", "symbols"))
        return
    real = mol.get("real", mol.get("real_"))
    if real is not None and (not isinstance(real, list) or not all(r is True for r in real)):
        problems.add("ghost atoms (real: false) are not supported", ("molecule", "real"))
    rows = _geometry_rows(mol.get("geometry"), len(symbols), problems)
    if rows is None:
        return
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


def atomic_input_job(document: Any, file: str | None = None,
                     lines: dict[tuple, int] | None = None) -> tuple[dict, dict, dict, dict]:
    """(job-file data, {job path: line}, {job path: AtomicInput field}, carried) of an AtomicInput.

    `carried` holds ``id``, ``protocols`` and ``extras`` for the result.
    Raises `InputError` (all problems of the document's structure at once);
    the job data are validated afterwards like a job file's.
    """
    problems = _Problems(file, lines or {})
    if not isinstance(document, dict):
        raise InputError(f"expected a QCSchema AtomicInput (a JSON object with molecule, driver, "
                         f"model, keywords), got {_describe(document)}", file=file, line=1)
    if "specification" in document:
        raise InputError("this is a QCSchema version 2 AtomicInput (it has 'specification'); dm21 "
                         "reads version 1 (schema_name qcschema_input: molecule, driver, model, "
                         "keywords at the top level)", **problems.where(("specification",)))
    for key in document:
        if key not in _TOP:
            problems.add(f"unknown key {key!r}{_suggest(key, _TOP)} (an AtomicInput has: "
                         f"{', '.join(_TOP)})", (key,))
    if document.get("schema_name", "qcschema_input") not in ("qcschema_input", "qc_schema_input"):
        problems.add(f"expected 'qcschema_input', got {_describe(document.get('schema_name'))}",
                     ("schema_name",))
    if document.get("schema_version", 1) != 1:
        problems.add(f"dm21 reads QCSchema AtomicInput version 1, got "
                     f"{_describe(document.get('schema_version'))}", ("schema_version",))

    job: dict[str, Any] = {}
    renamed: dict[tuple, str] = {}
    job_lines: dict[tuple, int] = {}
    for key in ("molecule", "driver", "model"):
        if document.get(key) is None:
            problems.add(f"required key {key!r} is missing", (key,) if key in document else ())
    mol = _mapping(document.get("molecule"), ("molecule",), problems)
    if mol is not None:
        _molecule(mol, problems, job, renamed, job_lines)
    if "driver" in document:
        try:
            job.update(job_settings_for_driver(document["driver"], problems.where(("driver",))))
        except InputError as exc:
            problems.found.append(exc)
        renamed[("job", "task")] = "driver"
        if ("driver",) in problems.lines:
            job_lines[("job", "task")] = problems.lines[("driver",)]
    model = _mapping(document.get("model"), ("model",), problems)
    if model is not None:
        for key in model:
            if key not in ("method", "basis"):
                problems.add(f"unknown key {key!r} (dm21 reads model.method and model.basis)",
                             ("model", key))
        for key, job_key in (("method", "functional"), ("basis", "basis")):
            value = model.get(key)
            if not isinstance(value, str):
                problems.add(f"expected a {'functional' if key == 'method' else 'basis-set'} name"
                             f"{' (a BasisSet object is not supported)' if isinstance(value, dict) else ''}"
                             f", got {_describe(value)}", ("model", key))
                continue
            job[job_key] = value
            renamed[(job_key,)] = f"model.{key}"
            if ("model", key) in problems.lines:
                job_lines[(job_key,)] = problems.lines[("model", key)]
    keywords = _mapping(document.get("keywords"), ("keywords",), problems) or {}
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
        if section is None:
            job[name] = value
        else:
            job.setdefault(section, {})[name] = value
        renamed[path] = f"keywords.{key}"
        if ("keywords", key) in problems.lines:
            job_lines[path] = problems.lines[("keywords", key)]
    protocols = _mapping(document.get("protocols"), ("protocols",), problems) or {}
    for key, value in protocols.items():
        if key not in _PROTOCOLS:
            problems.add(f"unknown protocol {key!r}{_suggest(key, _PROTOCOLS)}", ("protocols", key))
        elif _PROTOCOLS[key] is not None and value not in _PROTOCOLS[key]:
            problems.add(f"{_describe(value)} is not supported (dm21: "
                         f"{', '.join(map(str, _PROTOCOLS[key]))})", ("protocols", key))
    extras = _mapping(document.get("extras"), ("extras",), problems) or {}
    if "dm21cli" in extras:
        problems.add("the key 'dm21cli' is dm21's own in the result's extras", ("extras", "dm21cli"))
    _mapping(document.get("provenance"), ("provenance",), problems)
    if document.get("id") is not None and not isinstance(document["id"], str):
        problems.add(f"expected a string, got {_describe(document['id'])}", ("id",))
    if problems.found:
        raise InputError.several(problems.found)
    if () in problems.lines:
        job_lines[()] = problems.lines[()]
    carried = {"id": document.get("id"), "protocols": protocols or None, "extras": extras}
    return job, job_lines, renamed, carried
