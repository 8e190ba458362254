"""Scans: ``dm21 scan`` as a library.

Five kinds, one machinery: a bond distance (dissociation curves), an angle or
a dihedral (``scan.angles``, ``scan.dihedrals``), the electron number N at fixed
geometry (fractional charge, ``scan.electrons``) and a fraction f of one electron
moved from alpha to beta (fractional spin, ``scan.fractional_spin``).  A point's `Coordinate` (`plan.COORDINATES`) says
what it varies, in which unit, and how its directory is named.

`plan_scan(spec)` turns a validated job with a ``scan:`` section into a
`ScanPlan`: the sorted values, (distance, angle, dihedral scans) the atoms that move, the
functionals, and one fully validated single-point `JobSpec` per point and
functional.  `run_scan` computes the points one after another through
`dm21cli.jobs.run.run_job`, each in its own directory
``<scan dir>/<functional>/point-02.500A/`` (``point-104.500deg/``, ``N-05.500/``,
``f-0.250/``: named by its value), and writes the curve files ``scan.csv``, ``scan.json``
and ``scan.png`` into the scan directory.  It returns a `ScanReport` that
counts converged, unconverged and failed points and decides the exit status.

Electron-number and fractional-spin points carry fixed occupations
(``scf.occupations``, part of their input hash); `fractional` says which,
and measures each point's deviation from the exact straight (or flat) line
and each curve's largest deviation and curvature.  The integer electron
numbers bracketing an electron-number scan, and f = 0, are always computed;
a point without electrons (N = 0) is not computed: its energy is the
nuclei's repulsion.

Rules (of distance scans; the others share order, resume and workers):

* **Geometry.** The distance is the one between the two atoms of
  ``scan.atoms`` (1-based, default ``[1, 2]``).  The moving fragment
  (``scan.fragment``, default: the second atom of the pair alone) is translated
  rigidly along the line from the first to the second atom; every other atom
  stays where it is.
* **Order.** Distances are sorted ascending; a point's index is its position in
  that list.  The walk starts at the distance closest to the sum of the pair's
  covalent radii (PySCF's table, an estimate of the equilibrium distance),
  goes outward to the longest distance, then inward from the start to the
  shortest.  Each point starts from the converged density of its neighbour
  towards the start (``scf.guess`` = the neighbour's ``scf.chk``); the first
  point, and any point whose neighbour did not converge, uses the job's own guess.
* **Broken symmetry** (``scan.broken_symmetry: true``, singlets only): points
  are computed unrestricted; a point beyond 1.5x the equilibrium estimate whose
  neighbour is not also beyond it starts from a *mixed* guess (HOMO and LUMO
  of the converged neighbour, or else of a Hartree-Fock Fock matrix built on the
  minimal-basis atomic guess, rotated by +45 degrees for alpha and -45 degrees
  for beta, as Gaussian's guess=mix).
  Points further out continue from their neighbour's density if that neighbour
  is broken (<S^2> > 0.1); a neighbour that collapsed to the symmetric solution
  is not followed (a symmetric density stays symmetric), the mixed guess is used again.
* **Resume.** A finished point directory holds ``scan-point.json`` with a
  SHA-256 hash of the point's resolved input (molecule, basis, functional,
  SCF and output settings; not the job name, directories, resources or the
  starting guess).  A point whose hash matches and whose ``result.json`` says
  ``success`` or ``not-converged`` is read from disk, not recomputed.  A
  point directory is named by the distance alone, so a point is found again
  whatever the other distances are; directories of distances no longer in
  the scan stay on disk, outside the curve.  The
  scan directory holds ``scan.definition.json`` with a hash of the whole scan
  definition; a different definition is refused (`OutputExistsError`) unless
  ``overwrite`` is given, and even then points with unchanged inputs are reused.
* **Worker processes** (``workers > 1``): processes of our own (`workers._WorkerProcess`),
  one point at a time each; SIGINT/SIGTERM in the scan's process (or in the
  whole process group) ends them within `workers.WORKER_GRACE_S` seconds, a busy one
  marking its point ``interrupted``.
* **Reference fragments** (``scan.reference_atoms: true``): the fixed part
  (every atom not in the moving fragment) and the moving fragment are computed
  alone.  By default the moving fragment is neutral and the fixed part carries
  the molecule's charge; a single atom takes its ground state (Hund's rule: an O
  atom is a triplet), a larger fragment the lowest multiplicity its electron count
  allows (1 for even, 2 for odd).  ``scan.reference_charges`` and
  ``scan.reference_multiplicities`` (``[fixed, moving]``) override that.  A
  fragment without electrons (a bare proton) has energy 0 and is not computed.
  The sum of the two energies is the dissociation limit.

Angle and dihedral scans (`plan._plan_rotation`, `geometry`): ``scan.atoms`` gives I J K
(J the vertex) or I J K L; the moving fragment (``scan.fragment``, default: the atoms
bonded to K once the J-K bond is cut, bonds from covalent radii) is rotated rigidly, for
an angle about the normal of the plane I-J-K through J, for a dihedral about the J-K
axis, so that the coordinate takes each value exactly.  Dihedrals are kept in [0, 360)
(-60 is 300), so that point directories (``point-300.000deg``) carry no sign and sort by
value.  The walk starts at the value nearest the job's own geometry's.  No broken
symmetry and no reference fragments; relative energies are to the lowest point.  A
relaxed point freezes ``angle i j k`` / ``dihedral i j k l`` in geomeTRIC, from the
rigidly rotated geometry.  Each record's ``angle_degree`` / ``dihedral_degree`` is
measured in the geometry the point was computed at (relaxed: the optimised one).

Modules: `plan` (`plan_scan`), `fractional` (the states and errors of
fractional charge and spin), `run` (`load_scan`: a job file and the command line's
overrides to a plan; `run_scan`, `collect_scan`, the serial walk), `workers` (worker processes and Dask), `records` (what is recorded,
`ScanReport`), `curves` (``scan.csv``, ``scan.json``, ``scan.png``, the table).
The grammar of the values lives with the ``scan:`` section's model
(`dm21cli.io.inputs.scan_model`).

Library code: no printing (progress goes to a reporter callback), no
``sys.exit``; PySCF and matplotlib are imported inside the functions that use
them.
"""

from dm21cli.jobs.scan.curves import render_table_text, write_plot
from dm21cli.jobs.scan.plan import (
    BROKEN_SYMMETRY_STRETCH,
    COORDINATES,
    Coordinate,
    ScanPlan,
    ScanPoint,
    displaced_coords,
    equilibrium_estimate_angstrom,
    plan_scan,
    point_dirname,
    point_hash,
    walk_order,
)
from dm21cli.jobs.scan.records import FILES, POINT_FILE, ScanReport
from dm21cli.jobs.scan.run import collect_scan, load_scan, run_scan

__all__ = [
    "BROKEN_SYMMETRY_STRETCH", "FILES", "POINT_FILE", "displaced_coords",
    "equilibrium_estimate_angstrom", "walk_order", "plan_scan", "load_scan", "run_scan",
    "collect_scan",
    "ScanPlan", "ScanPoint", "ScanReport", "render_table_text", "write_plot", "point_hash",
    "point_dirname", "Coordinate", "COORDINATES",
]
