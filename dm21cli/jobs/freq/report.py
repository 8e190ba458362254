"""`collect_freq`: the Hessian from the finished points, its analysis, and the files.

Reads every point of the plan from disk (each must hold a successful result of its
input), assembles the Hessian and the dipole derivatives (`dm21cli.jobs.freq.hessian`),
runs the harmonic analysis and the thermochemistry (`dm21cli.vib`), and writes, in the
folder: ``result.json`` (a QCSchema AtomicResult, driver ``hessian``: ``return_result``
the 3N x 3N Hessian in Eh/bohr^2, ``extras.qcvars`` Psi4's names at the first
temperature, ``extras.dm21cli`` the modes, intensities and thermochemistry),
``summary.txt``, ``vibrations.molden`` and ``modes/mode_NN.xyz``.  Any point missing or
not converged: result.json is a FailedOperation naming them, and the run can be resumed.
"""

from __future__ import annotations

import time

import numpy as np

from dm21cli.core.errors import ConvergenceError
from dm21cli.io.outputs.atomic import write_text_files_atomic
from dm21cli.io.outputs.qcschema import fields, to_qcschema
from dm21cli.jobs.freq.hessian import central_differences, dipole_derivatives
from dm21cli.jobs.freq.plan import FILES
from dm21cli.jobs.scan.records import finished_result, result_fields


def _point_results(plan) -> tuple[list[dict | None], list[str]]:
    """(the result of every point in dm21cli's layout, or None; what is missing, in words)."""
    results, missing = [], []
    for pt in plan.points[plan.functionals[0]]:
        stored = finished_result(pt.directory, pt.hash)
        status = result_fields(stored)["status"] if stored is not None else None
        if status != "success":
            missing.append(f"{pt.label} ({'not computed' if stored is None else status}: "
                           f"{pt.directory})")
            stored = None
        results.append(stored)
    return results, missing


def collect_freq(plan, *, log=None, kind: str = "minimum") -> dict:
    """The result document of the plan's Hessian (also written to result.json); computes
    no point.  kind: "minimum" or "ts", what the classification expects.  Raises
    ConvergenceError (after writing a FailedOperation) when a point is missing or did not
    converge."""
    log = log or (lambda message: None)
    t0 = time.perf_counter()
    results, missing = _point_results(plan)
    reference = results[0]
    if missing:
        message = (f"{len(missing)} of {len(results)} points of the Hessian have no converged "
                   f"result: " + "; ".join(missing[:5])
                   + (f"; and {len(missing) - 5} more" if len(missing) > 5 else "")
                   + "; run the same dm21 freq command again to compute them (finished points "
                     "are kept; scf settings such as max_cycle may be raised)")
        log(message)
        record = _base_record(plan, reference)
        record.update(success=False, converged=False, status="not-converged",
                      error={"error_type": "convergence_error", "error_message": message})
        _write(plan, record, None)
        raise ConvergenceError(message)
    record, analysis = analyse(plan, results, kind=kind, log=log)
    record["timings_s"]["collect"] = time.perf_counter() - t0
    document = _write(plan, record, analysis)
    return document


def analyse(plan, results: list[dict], *, kind: str = "minimum", log=None) -> tuple[dict, dict]:
    """(the record in dm21cli's layout, the analysis) of the finished `results` (dm21cli's
    layout, in the plan's order: the reference first)."""
    from dm21cli.vib import atomic_masses, classify, harmonic_analysis, psi4_qcvars, stationary
    from dm21cli.vib.thermo import thermochemistry

    log = log or (lambda message: None)
    spec = plan.spec
    settings = spec.freq_settings()
    points = plan.points[plan.functionals[0]]
    natm = spec.molecule.natm
    step = float(settings.step)
    plus = np.zeros((3 * natm, natm, 3))
    minus = np.zeros((3 * natm, natm, 3))
    dip_plus = np.zeros((3 * natm, 3))
    dip_minus = np.zeros((3 * natm, 3))
    for pt, result in zip(points[1:], results[1:]):
        props = result["properties"]
        row = 3 * pt.atom + pt.axis
        grad = np.asarray(props["gradient_hartree_per_bohr"], dtype=float).reshape(natm, 3)
        dip = np.asarray(props["dipole_moment_au"], dtype=float)
        if pt.sign > 0:
            plus[row], dip_plus[row] = grad, dip
        else:
            minus[row], dip_minus[row] = grad, dip
    hessian = central_differences(plus, minus, step)
    dmu_dx = dipole_derivatives(dip_plus, dip_minus, step)
    reference = results[0]
    coords = np.asarray(reference["molecule"]["geometry_bohr"], dtype=float).reshape(-1, 3)
    where = spec._meta.locate(("freq", "masses"))
    masses = atomic_masses(spec.molecule.symbols, settings.masses, field="freq.masses",
                           file=where.get("file"), line=where.get("line"))
    harmonic = harmonic_analysis(hessian, coords, masses, dmu_dx)
    threshold = settings.resolved()["imaginary_threshold"]
    classification = classify(harmonic, kind, threshold)
    gradient = np.asarray(reference["properties"]["gradient_hartree_per_bohr"], dtype=float)
    gmax = spec.opt_settings().criteria()["convergence_gmax"]
    stationarity = stationary(gradient, float(gmax))
    e0 = float(reference["return_energy"])
    thermo = thermochemistry(harmonic, coords, masses, spec.molecule.multiplicity, e0,
                             settings.temperatures, settings.pressure_pa(),
                             settings.symmetry_number, settings.qrrho)
    waves = ", ".join(f"{abs(w):.1f}{'i' if w < 0 else ''}" for w in harmonic.wavenumbers_cm1)
    log(f"harmonic wavenumbers (cm^-1): {waves}")
    log(f"translations and rotations projected out: residual wavenumbers up to "
        f"{np.abs(harmonic.trans_rot_wavenumbers_cm1).max():.1f} cm^-1; Hessian asymmetry "
        f"{harmonic.hessian_asymmetry_hartree_bohr2:.1e} Eh/bohr^2")
    log(classification.message)
    if not stationarity.ok:
        log(f"WARNING: {stationarity.message}")
    first = thermo[0]
    log(f"at {first['temperature_K']:g} K: ZPVE {first['zpve_hartree']:.6f} Eh, H "
        f"{first['enthalpy_hartree']:.8f} Eh, G {first['gibbs_free_energy_hartree']:.8f} Eh")

    record = _base_record(plan, reference)
    props = dict(reference["properties"])
    props["hessian_hartree_per_bohr2"] = hessian.tolist()
    props["dipole_derivatives_au"] = dmu_dx.tolist()
    vib = harmonic.to_dict()
    vib.update(classification=classification.to_dict(), stationarity=stationarity.to_dict())
    record.update({
        "success": True, "converged": True, "status": "success", "return_energy": e0,
        "properties": props, "vibrations": vib, "thermochemistry": thermo,
        "qcvars": psi4_qcvars(first),
        "hessian_points": _points_record(plan, results, step),
    })
    return record, {"harmonic": harmonic, "classification": classification,
                    "stationarity": stationarity, "thermo": thermo, "coords": coords}


def _points_record(plan, results: list[dict], step: float) -> dict:
    """How the Hessian was computed: the step, the points' SCF thresholds and precision
    (DM21's network; None for other functionals) and folders, and their cost (wall
    seconds, SCF cycles, read from disk or computed)."""
    points = plan.points[plan.functionals[0]]
    walls = [(r.get("timings_s") or {}).get("total") for r in results]
    cycles = [(r.get("properties") or {}).get("scf_iterations") for r in results]
    return {
        "method": "central differences of analytic gradients",
        "step_bohr": step, "points": len(points),
        "scf_conv_tol": plan.definition["conv_tol"],
        "scf_conv_tol_grad": plan.definition["conv_tol_grad"],
        "scf_precision": plan.definition["precision"],
        "reference": str(points[0].directory),
        "wall_s_sum": float(sum(w for w in walls if w is not None)),
        "scf_cycles": [c for c in cycles],
        "displacements": [{"index": pt.index, "label": pt.label, "directory": str(pt.directory)}
                          for pt in points[1:]],
    }


def _base_record(plan, reference: dict | None) -> dict:
    """The record of the Hessian in dm21cli's layout, from the reference point's result (its
    geometry, model, provenance): driver hessian, nothing claimed yet."""
    from dm21cli.jobs.result import base_result

    spec = plan.spec
    from dm21cli.core import resources

    res = resources.resolve(spec.resources.threads, spec.memory_mb())
    record = base_result(spec, res, None)
    record["driver"] = "hessian"
    record["provenance"]["routine"] = "dm21cli.jobs.freq.run_freq"
    if reference is not None:
        record["molecule"] = reference["molecule"]
        record["model"] = reference.get("model") or record["model"]
        checkpoint = (reference.get("provenance") or {}).get("checkpoint")
        record["provenance"]["checkpoint"] = checkpoint
        record["properties"] = dict(reference.get("properties") or {})
        record["return_energy"] = reference.get("return_energy")
    record["files"] = {"result": FILES["result"], "summary": FILES["summary"],
                       "log": FILES["log"]}
    record["timings_s"] = {}
    return record


def _write(plan, record: dict, analysis: dict | None) -> dict:
    """Write the Molden file and mode movies (a successful analysis), then result.json and
    summary.txt together (result.json the commit point); return the document."""
    from dm21cli.io.outputs.summary import render_summary
    from dm21cli.io.outputs.vibrations import write_mode_movies, write_molden_vibrations
    from dm21cli.jobs.run import json_text

    folder = plan.scan_dir
    if analysis is not None:
        harmonic = analysis["harmonic"]
        symbols = plan.spec.molecule.symbols
        write_molden_vibrations(folder / FILES["molden"], symbols, analysis["coords"],
                                harmonic.wavenumbers_cm1, harmonic.normal_modes,
                                harmonic.ir_intensities_km_mol)
        (folder / FILES["modes"]).mkdir(exist_ok=True)
        write_mode_movies(folder / FILES["modes"], symbols, analysis["coords"],
                          harmonic.wavenumbers_cm1, harmonic.normal_modes)
        record["files"].update(molden=FILES["molden"], modes=FILES["modes"])
    document = to_qcschema(record, plan.spec.atomic_input)
    write_text_files_atomic([(folder / FILES["result"], json_text(document)),
                             (folder / FILES["summary"], render_summary(document))])
    return document


def read_freq_result(folder) -> dict:
    """A frequency calculation's result.json in dm21cli's layout (`fields`)."""
    from dm21cli.jobs.scan.records import read_json

    return fields(read_json(folder / FILES["result"]))
