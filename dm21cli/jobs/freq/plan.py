"""`plan_freq`: a job -> the geometries of its Hessian, as a campaign of independent points.

The Hessian is the central difference of analytic gradients: every atom a moved by
+h and -h along x, y and z (6N geometries, N atoms), H[3a+k, :] = (g(+h) - g(-h)) / 2h,
plus the reference geometry itself (its gradient says whether the geometry is
stationary; its density starts every displaced SCF).  Each geometry is a gradient job
(``job.task: gradient``) in its own folder, so the Hessian runs on everything
``dm21 scan`` runs its points on: serially, in worker processes (``--workers``), on a
Dask cluster (``--dask``) or one per job-array task (``--point`` then ``--collect``),
and a run that stops resumes, reading every finished point from disk by its input
hash.  The plan is a `dm21cli.jobs.scan.plan.ScanPlan` of kind ``displacement``.

Every point's SCF is converged tighter than a single point's (DISPLACED_CONV_TOL,
DISPLACED_CONV_TOL_GRAD), in float64 (DISPLACED_PRECISION): the Hessian divides
gradient differences by 2h.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from dm21cli.core.errors import InputError
from dm21cli.core.units import BOHR_ANGSTROM
from dm21cli.jobs.scan.plan import (
    COORDINATES,
    ScanPlan,
    ScanPoint,
    build_spec,
    input_digest,
    physics_of,
    point_data,
)

#: files in a frequency calculation's folder (the campaign's log and definition; the results)
FILES = {
    "definition": "freq.definition.json",
    "log": "freq.log",
    "result": "result.json",
    "summary": "summary.txt",
    "molden": "vibrations.molden",
    "modes": "modes",
}
#: the folders of the points
REFERENCE_DIR = "reference"
DISPLACEMENTS_DIR = "displacements"
#: SCF thresholds of every point of a Hessian (energy, Ha; orbital gradient): see the manual,
#: docs/tutorials/optimisation.md "Frequencies", for the measurements they come from
DISPLACED_CONV_TOL = 1e-10
DISPLACED_CONV_TOL_GRAD = 1e-6
#: ... and their SCF's precision when the job's is ``mixed`` (the default; a job's float32
#: is kept): with the float32 network of ``mixed`` SCF cycles DM21's energy moves by 1e-8 to
#: 8e-8 Ha, and the orbital gradient by 1e-6 to 3e-6, between evaluations at almost the same
#: density, so these thresholds would pass or fail by chance (benzene/def2-SVP, points
#: started from the reference: see the manual's measurements)
DISPLACED_PRECISION = "float64"
AXES = "xyz"


@dataclasses.dataclass
class DisplacedPoint(ScanPoint):
    """A point of a Hessian: the reference geometry (atom None) or atom `atom` (0-based)
    moved by `sign` x step along `axis` (0, 1, 2)."""

    atom: int | None = None
    axis: int | None = None
    sign: int = 0
    symbol: str = ""

    @property
    def label(self) -> str:
        if self.atom is None:
            return "reference geometry"
        return f"{self.symbol}{self.atom + 1} {AXES[self.axis]}{'+' if self.sign > 0 else '-'}"


def freq_hash(resolved: dict) -> str:
    """SHA-256 of what decides a Hessian point's result: its resolved input without names,
    folders, resources, output files, the starting guess, and the SCF's cycle and attempt
    limits (raising max_cycle for a point that did not converge keeps every other one)."""
    key = physics_of(resolved)
    key.pop("outputs", None)
    key["scf"] = {k: v for k, v in key["scf"].items() if k not in ("max_cycle", "max_attempts")}
    return input_digest(key)


def displacement_index(atom: int, axis: int, sign: int) -> int:
    """The point index of atom `atom` (0-based) moved along `axis` by `sign` (+1, -1): 1 .. 6N."""
    return 1 + 2 * (3 * atom + axis) + (0 if sign > 0 else 1)


def plan_freq(spec, *, output_dir: str | None = None) -> ScanPlan:
    """The plan of `spec`'s Hessian (every point validated); InputError for a molecule of
    one atom (nothing vibrates).  output_dir: the folder (default: the job's)."""
    meta = spec._meta
    if spec.molecule.natm < 2:
        raise InputError(f"a frequency calculation needs at least two atoms; the molecule has "
                         f"{spec.molecule.natm} (an atom has no vibrations)",
                         **meta.locate(("molecule",)))
    settings = spec.freq_settings()
    step_bohr = float(settings.step)
    freq_dir = Path(output_dir) if output_dir else spec.output_path()
    symbols = list(spec.molecule.symbols)
    coords_bohr = np.asarray(spec.molecule.coords_bohr(), dtype=float).reshape(-1, 3)
    where = meta.locate(("freq", "step"))
    functional = spec.functional
    points = [_point(spec, 0, None, None, 0, symbols, coords_bohr, freq_dir / REFERENCE_DIR,
                     where)]
    for atom in range(len(symbols)):
        for axis in range(3):
            for sign in (+1, -1):
                index = displacement_index(atom, axis, sign)
                coords = coords_bohr.copy()
                coords[atom, axis] += sign * step_bohr
                name = f"{index:03d}-{symbols[atom]}{atom + 1}-{AXES[axis]}{'+' if sign > 0 else '-'}"
                points.append(_point(spec, index, atom, axis, sign, symbols, coords,
                                     freq_dir / DISPLACEMENTS_DIR / name, where))
    resolved = {k: v for k, v in spec.to_resolved_dict().items() if k not in ("freq", "scan", "opt")}
    definition = {
        "input": freq_hash(resolved),
        "step_bohr": step_bohr, "conv_tol": DISPLACED_CONV_TOL,
        "conv_tol_grad": DISPLACED_CONV_TOL_GRAD,
        "precision": points[0].data["scf"].get("precision") if spec.is_dm21 else None,
    }
    return ScanPlan(spec=spec, scan_dir=freq_dir, values=[float(p.index) for p in points],
                    pair=None, moving=[], functionals=[functional], equilibrium_angstrom=None,
                    order=[(0, None)] + [(k, 0) for k in range(1, len(points))],
                    points={functional: points}, references={}, broken_symmetry=False,
                    definition=definition, definition_hash=input_digest(definition),
                    coordinate=COORDINATES["displacement"], files=dict(FILES),
                    folders=[REFERENCE_DIR, DISPLACEMENTS_DIR, FILES["modes"]])


def freq_spec_at(spec, coords_bohr, output_dir: Path):
    """The job of `spec` as a frequency calculation (``job.task: freq``, its ``freq``
    settings) at the geometry `coords_bohr` (N, 3), in `output_dir`: what ``dm21 opt --freq``
    runs at the optimised geometry."""
    coords = np.asarray(coords_bohr, dtype=float).reshape(-1, 3)
    data = point_data(spec, spec.functional, coords * BOHR_ANGSTROM, f"{spec.job.name}-freq",
                       Path(output_dir), False)
    data["job"]["task"] = "freq"
    data["freq"] = spec.freq_settings().resolved()
    return build_spec(data, spec, spec._meta.locate(("molecule",)),
                       "the frequency calculation at the optimised geometry")


def _point(spec, index: int, atom, axis, sign: int, symbols, coords_bohr, directory: Path,
           where: dict) -> DisplacedPoint:
    """One point: a gradient job at `coords_bohr` (N, 3), converged to the Hessian's
    thresholds, in `directory`."""
    label = "reference" if atom is None else f"{symbols[atom]}{atom + 1}{AXES[axis]}{sign:+d}"
    data = point_data(spec, spec.functional, coords_bohr * BOHR_ANGSTROM,
                       f"{spec.job.name}-freq-{index:03d}", directory, False)
    data.pop("freq", None)  # (the analysis's settings: changing them recomputes no point)
    data["job"]["task"] = "gradient"
    data["scf"]["conv_tol"] = DISPLACED_CONV_TOL
    data["scf"]["conv_tol_grad"] = DISPLACED_CONV_TOL_GRAD
    if spec.is_dm21 and data["scf"].get("precision", "mixed") == "mixed":
        data["scf"]["precision"] = DISPLACED_PRECISION
    if atom is not None:  # the reference's files are the user's; the displaced ones write no extras
        data["outputs"] = {**data["outputs"], "cubes": [], "orbitals": [], "molden": False}
    pspec = build_spec(data, spec, where, f"the Hessian's point {label}")
    return DisplacedPoint(spec.functional, index, float(index), directory, data,
                          freq_hash(pspec.to_resolved_dict()),
                          COORDINATES["displacement"], atom=atom, axis=axis, sign=sign,
                          symbol=symbols[atom] if atom is not None else "")
