"""What a scan records per point, the files it keeps, and the report that decides its exit status."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dm21cli.core.errors import ExitStatus
from dm21cli.io.outputs.qcschema import fields
from dm21cli.jobs.scan.plan import FILES, ScanPlan, ScanPoint  # noqa: F401 (FILES: re-exported)



#: file in each point directory: the point's input hash and where it sits in the scan.
POINT_FILE = "scan-point.json"

#: result.json statuses of a finished point (read back, not recomputed).
FINISHED = ("success", "not-converged")


CSV_COLUMNS = [
    "functional", "index", "distance_angstrom", "status", "converged", "energy_hartree",
    "relative_energy_hartree", "nuclear_repulsion_energy_hartree", "one_electron_energy_hartree",
    "coulomb_energy_hartree", "xc_energy_hartree", "dispersion_energy_hartree",
    "charge_moving_fragment", "charge_fixed_fragment", "s_squared", "homo_lumo_gap_hartree",
    "scf_cycles", "scf_attempts", "wall_time_s", "reused", "guess", "directory",
]

#: columns of electron-number and fractional-spin scans (the second-to-last
#: ones: the molecule each point was computed as, and its fixed occupations)
CSV_COLUMNS_FRACTIONAL = [
    "functional", "index", "{coordinate}", "status", "converged", "energy_hartree",
    "line_energy_hartree", "deviation_mhartree", "nuclear_repulsion_energy_hartree",
    "one_electron_energy_hartree", "coulomb_energy_hartree", "xc_energy_hartree",
    "dispersion_energy_hartree", "alpha_electrons", "beta_electrons", "homo_lumo_gap_hartree",
    "scf_cycles", "scf_attempts", "wall_time_s", "reused", "guess", "charge", "multiplicity",
    "occupations_alpha", "occupations_beta", "directory",
]


def csv_columns(coordinate, relax: bool = False) -> list[str]:
    """The columns of scan.csv for a scan of this `Coordinate` (a relaxed scan adds the
    optimisation steps of each point; an angle or dihedral scan has ``angle_degree`` or
    ``dihedral_degree`` where a distance scan has ``distance_angstrom``)."""
    if coordinate.moves_atoms:
        return [coordinate.column if c == "distance_angstrom" else c for c in CSV_COLUMNS] + \
            (["opt_steps"] if relax else [])
    return [c.format(coordinate=coordinate.column) for c in CSV_COLUMNS_FRACTIONAL]


def result_fields(result: dict | None) -> dict:
    """What a scan records from a point's ``result.json``: the one place that reads its fields.

    Keys: status, converged, energy, the energy terms, mulliken_charges,
    s_squared, gap, scf_cycles, scf_attempts (their number), wall_time_s,
    error (the error message of an unconverged or failed point), opt_steps (a relaxed
    point's), geometry_bohr (the computed geometry: a relaxed point's optimised one).
    """
    result = result or {}
    props = result.get("properties") or {}
    return {
        "status": result.get("status"),
        "converged": bool(result.get("converged", False)),
        "energy": result.get("return_energy"),
        "nuclear_repulsion": props.get("nuclear_repulsion_energy"),
        "one_electron": props.get("scf_one_electron_energy"),
        "coulomb": props.get("scf_coulomb_energy"),
        "xc": props.get("scf_xc_energy"),
        "dispersion": props.get("dispersion_energy"),
        "mulliken_charges": props.get("mulliken_charges"),
        "s_squared": props.get("s_squared"),
        "gap": props.get("homo_lumo_gap_hartree"),
        "scf_cycles": props.get("scf_iterations"),
        "scf_attempts": len(props["scf_attempts"]) if props.get("scf_attempts") else None,
        "wall_time_s": (result.get("timings_s") or {}).get("total"),
        "error": (None if result.get("converged") else
                  (result.get("error") or {}).get("error_message")),
        "opt_steps": (result.get("optimization") or {}).get("steps"),
        "geometry_bohr": (result.get("molecule") or {}).get("geometry_bohr"),
    }


def make_record(point: ScanPoint, result: dict | None, moving: list[int], *, reused: bool,
            guess: str | None, status: str | None = None, error: str | None = None) -> dict:
    f = result_fields(result)
    charges = f["mulliken_charges"]
    q_moving = q_fixed = None
    if charges and moving:
        q_moving = float(sum(charges[k] for k in moving))
        q_fixed = float(sum(c for k, c in enumerate(charges) if k not in moving))
    rec = {
        "functional": point.functional, "index": point.index,
        point.coordinate.column: measured_value(point, f["geometry_bohr"]),
        "status": status or f["status"] or "failed",
        "converged": f["converged"],
        "energy_hartree": f["energy"],
        "relative_energy_hartree": None,
        "nuclear_repulsion_energy_hartree": f["nuclear_repulsion"],
        "one_electron_energy_hartree": f["one_electron"],
        "coulomb_energy_hartree": f["coulomb"],
        "xc_energy_hartree": f["xc"],
        "dispersion_energy_hartree": f["dispersion"],
        "charge_moving_fragment": q_moving, "charge_fixed_fragment": q_fixed,
        "s_squared": f["s_squared"],
        "homo_lumo_gap_hartree": f["gap"],
        "scf_cycles": f["scf_cycles"],
        "scf_attempts": f["scf_attempts"],
        "wall_time_s": f["wall_time_s"],
        "reused": reused, "guess": guess,
        "directory": str(point.directory),
        "error": error or f["error"],
    }
    if f["opt_steps"] is not None:  # a relaxed scan's point: a geometry optimisation
        rec["opt_steps"] = f["opt_steps"]
    if point.state is not None:
        rec.update(_state_fields(point))
    return rec


def measured_value(point: ScanPoint, geometry_bohr) -> float:
    """The point's value as recorded: an angle or dihedral measured in the geometry it was
    computed at (a relaxed point's optimised one; a dihedral as the representative nearest
    the point's own value, so 359.9996 for 0 is -0.0004); else, or without a geometry (a
    point that failed before it had one), the point's own value."""
    if point.atoms is None or not geometry_bohr:
        return point.value
    import numpy as np

    from dm21cli.core.units import BOHR_ANGSTROM
    from dm21cli.jobs.scan import geometry

    coords = np.asarray(geometry_bohr, dtype=float) * BOHR_ANGSTROM
    value = geometry.measure_degrees(coords, point.atoms)
    if len(point.atoms) == 4:
        return geometry.nearest_turn(value, point.value)
    return round(value, 9)  # (the precision of the values: 104.5, not 104.50000000000001)


def _state_fields(point: ScanPoint) -> dict:
    """Electron-number and fractional-spin points: the molecule and the occupations used
    (the aufbau ones of an integer state, which runs without fixed occupations)."""
    state = point.state
    occ = state["used_occupations"]
    return {"charge": state["charge"], "multiplicity": state["multiplicity"],
            "alpha_electrons": float(sum(occ["alpha"])), "beta_electrons": float(sum(occ["beta"])),
            "occupations_alpha": list(occ["alpha"]), "occupations_beta": list(occ["beta"]),
            "line_energy_hartree": None, "deviation_mhartree": None}


def empty_record(point: ScanPoint) -> dict:
    """The record of a point without electrons: its energy is the nuclei's repulsion."""
    rec = make_record(point, None, [], reused=False, guess="none (no electrons)", status="success")
    rec.update(converged=True, energy_hartree=point.state["energy_hartree"],
               nuclear_repulsion_energy_hartree=point.state["energy_hartree"], directory=None,
               error=None, one_electron_energy_hartree=0.0, coulomb_energy_hartree=0.0,
               xc_energy_hartree=0.0)
    return rec


@dataclasses.dataclass
class ScanReport:
    """Counts of the scan's points; decides the exit status (like black's report)."""

    records: list[dict]
    references: dict[str, dict] = dataclasses.field(default_factory=dict)
    #: points the scan should have (None: as many as records); the rest are missing
    expected: int | None = None
    #: electron-number and fractional-spin scans: per functional, the largest deviation
    #: and the curvature (`dm21cli.jobs.scan.fractional.curves`), once the curve is written
    curves: dict | None = None

    @property
    def missing(self) -> int:
        return 0 if self.expected is None else max(0, self.expected - len(self.records))

    @property
    def converged(self) -> int:
        return sum(1 for r in self.records if r["converged"])

    @property
    def not_converged(self) -> int:
        return sum(1 for r in self.records if r["status"] == "not-converged")

    @property
    def failed(self) -> int:
        return sum(1 for r in self.records if not r["converged"] and r["status"] != "not-converged")

    @property
    def reused(self) -> int:
        return sum(1 for r in self.records if r["reused"])

    @property
    def exit_status(self) -> ExitStatus:
        if self.failed:
            return ExitStatus.COMPUTE_ERROR
        if self.not_converged or self.missing:
            return ExitStatus.NOT_CONVERGED
        return ExitStatus.SUCCESS

    def summary_line(self) -> str:
        parts = [f"{self.converged} converged"]
        if self.not_converged:
            parts.append(f"{self.not_converged} not converged")
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.missing:
            parts.append(f"{self.missing} missing (not computed yet)")
        text = f"{len(self.records) + self.missing} points: " + ", ".join(parts)
        if self.reused:
            text += f" ({self.reused} read from disk)"
        return text


def read_json(path: Path) -> dict | None:
    """The JSON object in `path` (a regular file), else None (`read_json_object`)."""
    from dm21cli.io.outputs.atomic import read_json_object

    return read_json_object(path)


def result_document_fields(document: dict | None) -> dict | None:
    """A point's result.json document (QCSchema) in dm21cli's layout, which the scan reads."""
    return fields(document) if document else None


def read_result(path: Path) -> dict | None:
    """A point's result.json in dm21cli's layout, or None."""
    return result_document_fields(read_json(path))


def finished_result(directory: Path, expected_hash: str) -> dict | None:
    """The stored result of a finished point with this input hash, else None."""
    info = read_json(directory / POINT_FILE)
    if not info or info.get("hash") != expected_hash or (directory / ".running").exists():
        return None
    result = read_result(directory / "result.json")
    if not result or result_fields(result)["status"] not in FINISHED:
        return None
    return result


def point_info(pt: ScanPoint, guess: str) -> dict:
    """The `POINT_FILE` of a point, without its status.

    No index: the same directory serves every scan definition that holds
    this distance, at whatever position in its sorted list.
    """
    return {"hash": pt.hash, "functional": pt.functional, pt.coordinate.column: pt.value,
            "guess": guess}


def store_point(plan: ScanPlan, pt: ScanPoint, result: dict | None, error: str | None, guess: str,
           records: dict, progress: Progress, seconds: float) -> None:
    from dm21cli.io.outputs.atomic import write_json_atomic

    rec = make_record(pt, result, plan.moving, reused=False, guess=guess,
                  status=None if error is None else "failed", error=error)
    records[(pt.functional, pt.index)] = rec
    if pt.directory.is_dir():  # (not when a worker died before run_job made it)
        write_json_atomic(pt.directory / POINT_FILE, {**point_info(pt, guess), "status": rec["status"]})
    energy = "n/a" if rec["energy_hartree"] is None else f"{rec['energy_hartree']:.8f} Ha"
    progress(pt.label, f"{rec['status']}, E = {energy} ({seconds:.1f} s)")


class Progress:
    def __init__(self, total: int, log):
        self.total, self.done, self.log = total, 0, log

    def __call__(self, label: str, message: str, count: bool = True) -> None:
        if count:
            self.done += 1
        self.log(f"[{self.done + (0 if count else 1)}/{self.total}] {label}: {message}")
