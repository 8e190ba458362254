"""What a scan records per point, the files it keeps, and the report that decides its exit status."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from dm21cli.core.errors import ExitStatus
from dm21cli.io.outputs.qcschema import fields
from dm21cli.jobs.scan.plan import ScanPlan, ScanPoint

#: files in the scan directory.
FILES = {
    "definition": "scan.definition.json",
    "csv": "scan.csv",
    "json": "scan.json",
    "png": "scan.png",
    "log": "scan.log",
}


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


def _record(point: ScanPoint, result: dict | None, moving: list[int], *, reused: bool,
            guess: str | None, status: str | None = None, error: str | None = None) -> dict:
    props = (result or {}).get("properties") or {}
    charges = props.get("mulliken_charges")
    q_moving = q_fixed = None
    if charges:
        q_moving = float(sum(charges[k] for k in moving))
        q_fixed = float(sum(c for k, c in enumerate(charges) if k not in moving))
    return {
        "functional": point.functional, "index": point.index,
        "distance_angstrom": point.distance_angstrom,
        "status": status or (result or {}).get("status") or "failed",
        "converged": bool((result or {}).get("converged", False)),
        "energy_hartree": (result or {}).get("return_energy"),
        "relative_energy_hartree": None,
        "nuclear_repulsion_energy_hartree": props.get("nuclear_repulsion_energy"),
        "one_electron_energy_hartree": props.get("scf_one_electron_energy"),
        "coulomb_energy_hartree": props.get("scf_coulomb_energy"),
        "xc_energy_hartree": props.get("scf_xc_energy"),
        "dispersion_energy_hartree": props.get("dispersion_energy"),
        "charge_moving_fragment": q_moving, "charge_fixed_fragment": q_fixed,
        "s_squared": props.get("s_squared"),
        "homo_lumo_gap_hartree": props.get("homo_lumo_gap_hartree"),
        "scf_cycles": props.get("scf_iterations"),
        "scf_attempts": len(props["scf_attempts"]) if props.get("scf_attempts") else None,
        "wall_time_s": ((result or {}).get("timings_s") or {}).get("total"),
        "reused": reused, "guess": guess,
        "directory": str(point.directory),
        "error": error or (((result or {}).get("error") or {}).get("error_message")
                           if not (result or {}).get("converged") else None),
    }


@dataclasses.dataclass
class ScanReport:
    """Counts of the scan's points; decides the exit status (like black's report)."""

    records: list[dict]
    references: dict[str, dict] = dataclasses.field(default_factory=dict)
    #: points the scan should have (None: as many as records); the rest are missing
    expected: int | None = None

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


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _result_fields(document: dict | None) -> dict | None:
    """A point's result.json document (QCSchema) in dm21cli's layout, which the scan reads."""
    return fields(document) if document else None


def _read_result(path: Path) -> dict | None:
    """A point's result.json in dm21cli's layout, or None."""
    return _result_fields(_read_json(path))


def _finished(directory: Path, expected_hash: str) -> dict | None:
    """The stored result of a finished point with this input hash, else None."""
    info = _read_json(directory / POINT_FILE)
    if not info or info.get("hash") != expected_hash or (directory / ".running").exists():
        return None
    result = _read_result(directory / "result.json")
    if not result or result.get("status") not in FINISHED:
        return None
    return result


def _point_info(pt: ScanPoint, guess: str) -> dict:
    """The `POINT_FILE` of a point, without its status.

    No index: the same directory serves every scan definition that holds
    this distance, at whatever position in its sorted list.
    """
    return {"hash": pt.hash, "functional": pt.functional, "distance_angstrom": pt.distance_angstrom,
            "guess": guess}


def _store(plan: ScanPlan, pt: ScanPoint, result: dict | None, error: str | None, guess: str,
           records: dict, progress: _Progress, seconds: float) -> None:
    from dm21cli.io.outputs.atomic import write_json_atomic

    rec = _record(pt, result, plan.moving, reused=False, guess=guess,
                  status=None if error is None else "failed", error=error)
    records[(pt.functional, pt.index)] = rec
    if pt.directory.is_dir():  # (not when a worker died before run_job made it)
        write_json_atomic(pt.directory / POINT_FILE, {**_point_info(pt, guess), "status": rec["status"]})
    energy = "n/a" if rec["energy_hartree"] is None else f"{rec['energy_hartree']:.8f} Ha"
    progress(pt.label, f"{rec['status']}, E = {energy} ({seconds:.1f} s)")


class _Progress:
    def __init__(self, total: int, log):
        self.total, self.done, self.log = total, 0, log

    def __call__(self, label: str, message: str, count: bool = True) -> None:
        if count:
            self.done += 1
        self.log(f"[{self.done + (0 if count else 1)}/{self.total}] {label}: {message}")
