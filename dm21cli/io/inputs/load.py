"""`load_job`: a job file (or a bare .xyz) and command-line overrides -> a validated `JobSpec`.

Every problem is reported as an `dm21cli.core.errors.InputError` naming the
file, the 1-based line and the dotted field (``scf.conv_tol``) or the
command-line option (``--charge``); several problems at once as
`dm21cli.core.errors.InputErrors`.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from dm21cli.core.errors import InputError
from dm21cli.core.resources import check_environment
from dm21cli.io.inputs.fields import describe_value, LocatedError
from dm21cli.io.inputs.files import MAX_TEXT_FILE_BYTES, load_yaml, read_text_file, stat_regular
from dm21cli.io.inputs.models import (
    JobSettings,
    JobSpec,
    Molecule,
    OutputSettings,
    ResourceSettings,
    Occupations,
    ScfSettings,
    dotted_path,
    SpecMeta,
)
from dm21cli.io.inputs.freq_model import FreqSettings
from dm21cli.io.inputs.opt_model import Constraints, OptSettings
from dm21cli.io.inputs.qcschema import atomic_input_job, read_json
from dm21cli.io.inputs.scan_model import ScanSettings
from dm21cli.io.inputs.solvent_model import SolventSettings, solvent_override
from dm21cli.io.inputs.validate import validate_job

#: command-line override key -> path in the job file.
OVERRIDE_KEYS: dict[str, tuple[str, ...]] = {
    "basis": ("basis",),
    "functional": ("functional",),
    "charge": ("molecule", "charge"),
    "multiplicity": ("molecule", "multiplicity"),
    "output_dir": ("job", "output_dir"),
    "name": ("job", "name"),
    "task": ("job", "task"),
    "grid_level": ("scf", "grid_level"),
    "legacy_grids": ("scf", "legacy_grids"),
    "threads": ("resources", "threads"),
    "memory": ("resources", "memory"),
    "dispersion": ("dispersion",),
    # a name (solvent.name), a number (solvent.eps) or none (no solvent section): `_solvent`
    "solvent": ("solvent",),
    # `dm21 opt` only
    "maxiter": ("opt", "maxiter"),
    "convergence_set": ("opt", "convergence_set"),
    "hessian_every": ("opt", "hessian_every"),
    "irc": ("opt", "irc"),
    # `dm21 freq` only
    "step": ("freq", "step"),
    "temperature": ("freq", "temperatures"),
    "pressure": ("freq", "pressure"),
    "symmetry_number": ("freq", "symmetry_number"),
    "qrrho": ("freq", "qrrho"),
    # `dm21 scan` only
    "distance": ("scan", "distances"),
    # (--angle I J K VALUES, --dihedral I J K L VALUES: the atoms go to scan.atoms, `_finish`)
    "angle": ("scan", "angles"),
    "dihedral": ("scan", "dihedrals"),
    "electrons": ("scan", "electrons"),
    "fractional_spin": ("scan", "fractional_spin"),
    "reference_atoms": ("scan", "reference_atoms"),
    "relax": ("scan", "relax"),
}

#: the options that choose the kind of scan; one given replaces the file's kind
_SCAN_KIND_OPTIONS = ("distance", "angle", "dihedral", "electrons", "fractional_spin")

#: the options that give the scanned coordinate's atoms with its values (I J K VALUES)
_ATOMS_AND_VALUES = ("angle", "dihedral")


#: section path -> model class (for unknown-key suggestions).
_SECTIONS: dict[tuple, type[BaseModel]] = {
    (): JobSpec, ("job",): JobSettings, ("molecule",): Molecule, ("scf",): ScfSettings,
    ("outputs",): OutputSettings, ("resources",): ResourceSettings, ("scan",): ScanSettings,
    ("scf", "occupations"): Occupations, ("opt",): OptSettings, ("opt", "constraints"): Constraints,
    ("freq",): FreqSettings, ("solvent",): SolventSettings,
}


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
            return f"unknown key {key!r} (did you mean '{dotted_path(other_path + (key.lower(),))}'?)"
    return f"unknown key {key!r} (valid keys: {', '.join(allowed)})"


def _error_message(err: dict) -> str:
    kind = err["type"]
    loc = tuple(err["loc"])
    if kind == "missing":
        return f"required key {str(loc[-1]) if loc else ''!r} is missing"
    if kind == "extra_forbidden":
        return _unknown_key_message(loc)
    if kind in ("model_type", "model_attributes_type", "dict_type", "mapping_type"):
        return f"expected a mapping of keys, got {describe_value(err.get('input'))}"
    if kind in ("list_type",):
        return f"expected a list, got {describe_value(err.get('input'))}"
    msg = str(err.get("msg", "invalid value"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return f"{msg[:1].lower()}{msg[1:]} (got {describe_value(err.get('input'))})"


def _translate(exc: ValidationError, meta: SpecMeta) -> InputError:
    """Every schema problem as one InputError (`InputError.problems`), in line order:
    the job file's first, then other files' (an external .xyz), then the options'."""
    problems: list[InputError] = []
    for err in exc.errors(include_url=False):
        located = (err.get("ctx") or {}).get("error")
        if isinstance(located, LocatedError):
            problem = located.error
        else:
            problem = InputError(_error_message(err), **meta.locate(tuple(err["loc"])))
        if all(problem.render() != known.render() for known in problems):
            problems.append(problem)
    problems.sort(key=lambda e: (e.file not in (meta.file, None) if e.file else 2,
                                 e.line if e.line is not None else 10**9))
    return InputError.several(problems)


def _default_name(path: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).strip("_")
    return name if name and name not in (".", "..") else "job"


def load_job(path: str | os.PathLike, overrides: dict | None = None) -> JobSpec:
    """Read, validate and return a job from a .yaml/.yml job file, a bare .xyz file, or a
    .json QCSchema AtomicInput (`dm21cli.io.inputs.qcschema`).

    `overrides` holds command-line options (keys of `OVERRIDE_KEYS`; value
    None = not given).  They replace the file's values and are validated the
    same way; errors about them name the option (``--charge``).  ``angle`` and
    ``dihedral`` take the atoms and the values (``('2', '1', '3', '90:120:10')``) and
    set ``scan.atoms`` too.
    Raises `InputError` for every problem; the returned spec is fully valid.
    """
    check_environment()  # before anything imports PySCF, which reads PYSCF_MAX_MEMORY
    path = Path(path)
    display = str(path)
    suffix = path.suffix.lower()
    meta = SpecMeta(file=display)
    ctx: dict[str, Any] = {"base_dir": path.parent, "file": display, "default_name": _default_name(path),
                           "collect": True}
    if suffix in (".yaml", ".yml"):
        text = read_text_file(path, display)
        data, meta.lines, nodes = load_yaml(text, display)
        xyz_node = nodes.get(("molecule", "xyz"))
        if isinstance(xyz_node, yaml.ScalarNode):
            start = xyz_node.start_mark.line + 1
            ctx["xyz_lines"] = (start + 1, 1) if xyz_node.style == "|" else (start, 0)
            ctx["xyz_key_line"] = meta.lines.get(("molecule", "xyz"))
        ctx["file_key_line"] = meta.lines.get(("molecule", "file"))
        for key in ("distances", "angles", "dihedrals", "electrons", "fractional_spin"):
            node = nodes.get(("scan", key))
            if isinstance(node, yaml.ScalarNode) and ":" in node.value \
                    and isinstance(data.get("scan"), dict):
                # YAML 1.1 reads 2:10:0.5 as a base-60 number: keep the range as written
                data["scan"][key] = node.value
    elif suffix == ".xyz":
        stat_regular(path, lambda message: InputError(message, file=display), MAX_TEXT_FILE_BYTES)
        data = {"molecule": {"file": path.name}}
        ctx["bare_xyz"] = True
    elif suffix == ".json":
        document, lines = read_json(read_text_file(path, display), display)
        data, meta.lines, meta.renamed, atomic = atomic_input_job(document, display, lines)
        _atomic_context(ctx, meta)
        return _finish(data, meta, ctx, overrides, path.absolute(), atomic)
    else:
        raise InputError(f"unsupported input file type {suffix or '(no extension)'!r} "
                         f"(expected .yaml, .yml, .xyz, or .json for a QCSchema AtomicInput)",
                         file=display)
    return _finish(data, meta, ctx, overrides, path.absolute())


def load_atomic_input(document: dict, overrides: dict | None = None, *,
                      name: str = "dm21", label: str = "AtomicInput") -> JobSpec:
    """A validated `JobSpec` from a QCSchema AtomicInput given as a dict (QCEngine).

    Errors name `label` as the file, and the AtomicInput's field.  `overrides`
    as for `load_job`.
    """
    check_environment()
    meta = SpecMeta(file=label)
    ctx: dict[str, Any] = {"base_dir": Path("."), "file": label, "default_name": name,
                           "collect": True}
    data, meta.lines, meta.renamed, atomic = atomic_input_job(document, label)
    _atomic_context(ctx, meta)
    return _finish(data, meta, ctx, overrides, None, atomic)


def load_job_data(data: dict, *, label: str | None = None, renamed: dict | None = None,
                  atoms_field: str = "molecule.xyz", name: str = "job",
                  chemistry: bool = True) -> JobSpec:
    """A validated `JobSpec` from job-file data given as a dict (the ASE calculator's settings).

    Errors name `label` as the file and each job path's field, or the name
    `renamed` gives it ({job path: name}, as `SpecMeta.renamed`); errors about the
    atoms of ``molecule.xyz`` name `atoms_field` (no line).  chemistry: the
    checks of `validate_job` too; False: the schema alone.
    """
    meta = SpecMeta(file=label, renamed=dict(renamed or {}))
    ctx: dict[str, Any] = {"base_dir": Path("."), "file": label, "default_name": name,
                           "collect": True, "xyz_lines": (None, 0), "xyz_key_line": None,
                           "xyz_field": atoms_field}
    if chemistry:
        return _finish(data, meta, ctx, None, None)
    try:
        spec = JobSpec.model_validate(data, context=ctx)
    except ValidationError as exc:
        raise _translate(exc, meta) from None
    spec._meta = meta
    return spec


def _atomic_context(ctx: dict, meta: SpecMeta) -> None:
    """Atom errors of an AtomicInput name molecule.geometry and its line."""
    line = meta.lines.get(("molecule", "xyz"))
    ctx["xyz_lines"] = (line, 0) if line else (None, 0)
    ctx["xyz_key_line"] = line
    ctx["xyz_field"] = "molecule.geometry"


def _solvent(data: dict, meta: SpecMeta, value: Any) -> None:
    """``--solvent VALUE``: the solvent of the file's section replaced (its name and eps;
    its model kept), or the section dropped for ``none``; errors name --solvent."""
    try:
        solvent = solvent_override(value)
    except ValueError as exc:
        raise InputError(str(exc), field="--solvent") from None
    if solvent is None:
        data["solvent"] = None
        return
    section = data.get("solvent")
    section = dict(section) if isinstance(section, dict) else {}
    section.pop("name", None)
    section.pop("eps", None)
    section.update(solvent)
    data["solvent"] = section
    for key in solvent:
        meta.overridden[("solvent", key)] = "--solvent"


def _finish(data: dict, meta: SpecMeta, ctx: dict, overrides: dict | None, source: Path | None,
            atomic: dict | None = None) -> JobSpec:
    """Overrides, the schema, the chemistry: the validated JobSpec of job-file data."""
    kinds = [k for k in _SCAN_KIND_OPTIONS if (overrides or {}).get(k) is not None]
    if len(kinds) > 1:
        options = [f"--{k.replace('_', '-')}" for k in kinds]
        raise InputError(f"{' and '.join(options)} exclude each other (one kind of scan)",
                         field=options[0])
    if kinds and isinstance(data.get("scan"), dict):  # the option's kind replaces the file's
        for key in _SCAN_KIND_OPTIONS:
            data["scan"].pop(OVERRIDE_KEYS[key][-1], None)
    for key, value in (overrides or {}).items():
        if key not in OVERRIDE_KEYS:
            raise TypeError(f"load_job: unknown override {key!r}")
        if value is None:
            continue
        if key == "solvent":
            _solvent(data, meta, value)
            continue
        if key in _ATOMS_AND_VALUES:  # I J K [L] VALUES: the atoms to scan.atoms
            *atoms, value = value
            if isinstance(data.get("scan"), dict) or data.get("scan") is None:
                data["scan"] = {**(data.get("scan") or {}), "atoms": list(atoms)}
                meta.overridden[("scan", "atoms")] = "--" + key
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
    spec._source_path = source
    spec._meta = meta
    spec._atomic_input = atomic
    validate_job(spec)
    return spec
