"""result.json as QCSchema: an ``AtomicResult``, or a ``FailedOperation`` for a run that failed.

The layout is that of QCSchema version 1 as ``qcelemental.models`` validates
it by default (``qcschema_output``, molecule ``qcschema_molecule`` version 2):
standard fields where the schema has them, everything else under
``extras.dm21cli`` with the name it had before (docs/reference/outputs.md, "Where each field
moved").  qcelemental itself is not needed to write or read these files; the
tests validate them with it (`validate`).

A run builds its record in dm21cli's own flat layout (`jobs.result`:
``converged``, ``status``, ``return_energy``, ``properties`` with today's
names, ``timings_s``, ...); `to_qcschema` turns it into the QCSchema document
and `fields` reads any such document back into that layout, for the summary,
the terminal table and ``dm21 scan``.  `STANDARD_PROPERTIES` is the one table
of the names that move into the standard ``properties``.

A run that did not converge is a ``FailedOperation`` with error type
``convergence_error``: QCSchema's ``AtomicResult`` promises a result (version
2 of the schema requires ``success: true``), and QCEngine reports an SCF that
did not converge that way.  Its last SCF iteration is kept: the standard
properties under ``extras.properties``, the rest under
``extras.dm21cli.properties``.
"""

from __future__ import annotations

from typing import Any

from dm21cli.core.errors import (
    ConvergenceError,
    InputError,
    OutputExistsError,
    OutputLocationError,
    ResourceError,
    WeightsError,
)

SCHEMA_OUTPUT = "qcschema_output"
SCHEMA_INPUT = "qcschema_input"
SCHEMA_MOLECULE = "qcschema_molecule"
#: the key of dm21cli's own fields in ``extras``
EXTRAS_KEY = "dm21cli"
#: ``schema_name`` of result.json before it was QCSchema (read back by `fields`)
OLD_SCHEMA_NAME = "dm21cli_result"

#: dm21cli's property name -> QCSchema ``AtomicResultProperties`` field.  Every other
#: property stays under ``extras.dm21cli.properties`` with its name.
STANDARD_PROPERTIES = {
    "return_energy": "return_energy",
    "gradient_hartree_per_bohr": "return_gradient",
    "hessian_hartree_per_bohr2": "return_hessian",
    "scf_total_energy": "scf_total_energy",
    "nuclear_repulsion_energy": "nuclear_repulsion_energy",
    "scf_one_electron_energy": "scf_one_electron_energy",
    "scf_coulomb_energy": "scf_two_electron_energy",
    "scf_xc_energy": "scf_xc_energy",
    "dispersion_energy": "scf_dispersion_correction_energy",
    "dipole_moment_au": "scf_dipole_moment",
    "scf_iterations": "scf_iterations",
    "nao": "calcinfo_nbasis",
    "nmo": "calcinfo_nmo",
    "nalpha": "calcinfo_nalpha",
    "nbeta": "calcinfo_nbeta",
    "natom": "calcinfo_natom",
}

#: QCSchema driver -> dm21cli's property that is the result's ``return_result``
RETURN_PROPERTY = {"energy": "return_energy", "gradient": "gradient_hartree_per_bohr",
                   "hessian": "hessian_hartree_per_bohr2"}

#: top-level fields of dm21cli's layout kept under ``extras.dm21cli``
_EXTRA_TOP = ("status", "converged", "timings_s", "files", "input", "optimization",
              "vibrations", "thermochemistry", "hessian_points")
#: of those, the ones a run has only when it made them (an optimisation, a Hessian)
_EXTRA_OPTIONAL = ("optimization", "vibrations", "thermochemistry", "hessian_points")
#: ``model`` fields of dm21cli's layout that QCSchema's Model does not have
_EXTRA_MODEL = ("dispersion", "solvent", "ecp", "ecp_note")


def error_type(exc: BaseException) -> str:
    """QCEngine's classifier of an error (``input_error``, ``convergence_error``, ...)."""
    if isinstance(exc, (InputError, OutputExistsError)):
        return "input_error"
    if isinstance(exc, ConvergenceError):
        return "convergence_error"
    if isinstance(exc, (ResourceError, OutputLocationError, WeightsError, MemoryError)):
        return "resource_error"
    if isinstance(exc, KeyboardInterrupt):
        return "random_error"  # QCEngine: "likely recoverable"; a time limit, Ctrl-C
    return "unknown_error"  # ComputeError (PySCF failed) and anything unexpected


def molecule_record(mol: dict) -> dict:
    """QCSchema molecule from dm21cli's (symbols, geometry_bohr (natom, 3), charge, multiplicity).

    The geometry is stored flat (3 natom, bohr), as QCSchema serialises it.
    The frame is the input's: dm21cli neither moves nor turns the molecule,
    hence ``fix_com`` and ``fix_orientation``.
    """
    geometry = [float(x) for row in (mol.get("geometry_bohr") or []) for x in row]
    return {"schema_name": SCHEMA_MOLECULE, "schema_version": 2,
            "symbols": list(mol.get("symbols") or []), "geometry": geometry,
            "molecular_charge": mol.get("molecular_charge", 0),
            "molecular_multiplicity": mol.get("molecular_multiplicity", 1),
            "fix_com": True, "fix_orientation": True}


def keywords_of(resolved_input: dict | None) -> dict:
    """The AtomicInput keywords that repeat a run: its SCF settings, dispersion and (in an
    implicit solvent) solvent, resolved."""
    resolved_input = resolved_input or {}
    keywords = dict(resolved_input.get("scf") or {})
    keywords["dispersion"] = resolved_input.get("dispersion")
    if resolved_input.get("solvent") is not None:
        keywords["solvent"] = dict(resolved_input["solvent"])
    return keywords


def _split_properties(props: dict) -> tuple[dict, dict]:
    """(standard AtomicResultProperties, the rest) of dm21cli's properties; Nones left out
    of the standard ones (the schema's default), kept in the rest."""
    standard, rest = {}, {}
    for key, value in props.items():
        if key in STANDARD_PROPERTIES:
            if value is not None:
                standard[STANDARD_PROPERTIES[key]] = value
        else:
            rest[key] = value
    return standard, rest


def to_qcschema(record: dict, atomic_input: dict | None = None) -> dict:
    """The QCSchema document of a run from its record in dm21cli's layout.

    `record`: ``success``, ``converged``, ``status``, ``driver``, ``model``,
    ``molecule`` (``geometry_bohr``), ``return_energy``, ``properties``,
    ``timings_s``, ``files``, ``provenance``, ``input``, ``error``.
    `atomic_input`: what came from a QCSchema AtomicInput besides the job
    (``id``, ``protocols``, ``extras``; see `dm21cli.io.inputs.qcschema`).
    A successful run gives an AtomicResult; a failed, interrupted or
    not converged one a FailedOperation.
    """
    atomic_input = atomic_input or {}
    model = dict(record.get("model") or {})
    ours: dict[str, Any] = {key: record.get(key) for key in _EXTRA_TOP
                            if key not in _EXTRA_OPTIONAL or record.get(key) is not None}
    ours["model"] = {key: model.pop(key) for key in _EXTRA_MODEL if key in model}
    standard, rest = _split_properties(record.get("properties") or {})
    ours["properties"] = rest
    extras = {**(atomic_input.get("extras") or {}), EXTRAS_KEY: ours}
    if record.get("qcvars"):  # Psi4's names (a Hessian's thermochemistry), as QCEngine's harnesses
        extras["qcvars"] = record["qcvars"]
    input_record = {
        "schema_name": SCHEMA_INPUT, "schema_version": 1,
        "molecule": molecule_record(record.get("molecule") or {}),
        "driver": record.get("driver") or "energy",
        "model": {"method": model.get("method"), "basis": model.get("basis")},
        "keywords": keywords_of(record.get("input")),
    }
    if atomic_input.get("protocols"):
        input_record["protocols"] = atomic_input["protocols"]
    if atomic_input.get("id") is not None:
        input_record["id"] = atomic_input["id"]

    if record.get("success"):
        driver = input_record["driver"]
        name = RETURN_PROPERTY.get(driver)
        return_result = (record.get("properties") or {}).get(name) if name else None
        if driver == "energy" and return_result is None:
            return_result = record.get("return_energy")
        if return_result is None:  # never a stand-in
            raise ValueError(f"driver {driver!r}: the run computed no {driver}")
        return {**input_record, "schema_name": SCHEMA_OUTPUT,
                "return_result": return_result, "properties": standard,
                "success": True, "error": None, "provenance": record.get("provenance") or {},
                "extras": extras}

    error = dict(record.get("error") or {})
    failure = {"error_type": error.get("error_type") or "unknown_error",
               "error_message": error.get("error_message") or str(record.get("status")),
               "extras": error.get("extras")}
    ours["provenance"] = record.get("provenance")
    if standard:  # the last SCF iteration of a run that did not converge
        extras["properties"] = standard
    document = {"success": False, "input_data": input_record, "error": failure, "extras": extras}
    if atomic_input.get("id") is not None:
        document["id"] = atomic_input["id"]
    return document


def is_failed_operation(document: dict) -> bool:
    return "input_data" in document and "return_result" not in document


def fields(document: dict | None) -> dict:
    """dm21cli's layout of a result.json (AtomicResult, FailedOperation, or the layout
    before QCSchema, returned as it is): what the renderings and ``dm21 scan`` read."""
    if not isinstance(document, dict):
        return {}
    if document.get("schema_name") == OLD_SCHEMA_NAME:
        return document
    failed = is_failed_operation(document)
    base = (document.get("input_data") or {}) if failed else document
    if not isinstance(base, dict):
        base = {}
    extras = document.get("extras") or {}
    ours = extras.get(EXTRAS_KEY) or {}
    standard = (extras.get("properties") if failed else document.get("properties")) or {}
    props = {name: standard.get(field) for name, field in STANDARD_PROPERTIES.items()
             if name not in ("gradient_hartree_per_bohr", "dipole_moment_au",
                             "hessian_hartree_per_bohr2") or field in standard}
    props.update(ours.get("properties") or {})
    mol = base.get("molecule") or {}
    symbols = list(mol.get("symbols") or [])
    flat = [x for row in mol.get("geometry") or [] for x in (row if isinstance(row, list) else [row])]
    geometry = [flat[3 * i:3 * i + 3] for i in range(len(flat) // 3)] if flat else None
    model = base.get("model") or {}
    out = {
        "success": bool(document.get("success")),
        "converged": ours.get("converged", bool(document.get("success"))),
        "status": ours.get("status"),
        "driver": base.get("driver"),
        "model": {"method": model.get("method"), "basis": model.get("basis"),
                  **(ours.get("model") or {})},
        "molecule": {"symbols": symbols, "geometry_bohr": geometry,
                     "molecular_charge": mol.get("molecular_charge"),
                     "molecular_multiplicity": mol.get("molecular_multiplicity")},
        "return_energy": props.get("return_energy"),
        "properties": props,
        "timings_s": ours.get("timings_s") or {},
        "files": ours.get("files") or {},
        "provenance": (ours.get("provenance") if failed else document.get("provenance")) or {},
        "input": ours.get("input"),
        "optimization": ours.get("optimization"),
        **{key: ours[key] for key in _EXTRA_OPTIONAL[1:] if key in ours},
        "qcvars": extras.get("qcvars"),
        "error": document.get("error"),
    }
    return out


def validate(document: dict):
    """The qcelemental model of a document (AtomicResult or FailedOperation); raises
    if it is not valid QCSchema.  Needs qcelemental (the ``qc`` extra)."""
    from qcelemental.models import AtomicResult, FailedOperation

    if is_failed_operation(document):
        from qcelemental.models import AtomicInput

        AtomicInput(**document["input_data"])
        return FailedOperation(**document)
    return AtomicResult(**document)
