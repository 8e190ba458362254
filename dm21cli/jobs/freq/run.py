"""`run_freq`: compute a Hessian's points (`dm21cli.jobs.freq.plan`) and `collect_freq` them.

The reference geometry is computed first, in this process; every displaced geometry
then starts from its density (its ``scf.chk``, whose orbitals `dm21cli.scf.guess`
orthonormalises again at the moved atoms).  The displaced points run serially, in worker
processes, on a Dask cluster or one per job-array task, through the machinery of ``dm21
scan`` (`dm21cli.jobs.scan`).  A point is read from disk instead of computed when its folder
holds a successful result of the same input (`plan.freq_hash`); a point that did not
converge is computed again (with, say, a larger ``scf.max_cycle``, which does not change
the hash).  When every point has succeeded, `collect_freq` assembles the Hessian and the
dipole derivatives and writes the analysis (`dm21cli.jobs.freq.report`).
"""

from __future__ import annotations

import json
from pathlib import Path

from dm21cli.core import interrupts
from dm21cli.core.errors import InputError
from dm21cli.jobs.freq.plan import REFERENCE_DIR
from dm21cli.jobs.scan.plan import ScanPlan
from dm21cli.jobs.scan.records import (
    POINT_FILE,
    Progress,
    finished_result,
    make_record,
    read_json,
    result_fields,
)
from dm21cli.jobs.scan.run import ScanLog, open_scan_dir, serial_point
from dm21cli.jobs.scan.workers import dask_points, parallel_points

#: how an interrupted or incomplete Hessian continues
RESUME_HINT = "finished points are kept: run the same dm21 freq command again to continue"


def run_freq(plan: ScanPlan, *, checkpoints=None, overwrite: bool = False, reporter=None,
             detail=None, workers: int = 1, point: int | None = None, dask: str | None = None,
             kind: str = "minimum", resume_hint: str | None = None) -> dict | None:
    """Compute the plan's points (reusing finished ones) and, unless `point` is given,
    collect them (`collect_freq`): returns the result document (result.json), or None
    for one point of a job array.

    reporter: one line per point; detail: every log line of every point's run (serial
    runs only); workers > 1: the displaced points in that many processes (threads and
    memory divided among them); point: compute only point `point` (0: the reference
    geometry; 1 .. 6N: the displaced ones, which start from the reference's density when
    it is on disk); dask: the address of a Dask scheduler that computes the displaced
    points; kind: "minimum" or "ts", what the analysis expects.  KeyboardInterrupt
    (SIGINT/SIGTERM) stops the run: finished points stay and the exception propagates,
    saying how to continue: resume_hint, default RESUME_HINT (the caller's command if it is
    not ``dm21 freq``: ``dm21 opt --freq``'s, say).
    """
    points = plan.points[plan.functionals[0]]
    if point is not None and not 0 <= point < len(points):
        raise InputError(f"point {point} does not exist: the Hessian has {len(points)} points "
                         f"(0: the reference geometry; 1 to {len(points) - 1}: the displaced ones)",
                         field="--point")
    if workers < 1:
        raise InputError(f"must be at least 1, got {workers}", field="--workers")
    running = open_scan_dir(plan, overwrite, hold=point is None)
    log = ScanLog(plan.scan_dir / plan.files["log"], reporter, name="freq")
    try:
        _compute(plan, points, log, checkpoints, detail, workers, point, dask)
        if point is not None:
            return None
        from dm21cli.jobs.freq.report import collect_freq

        return collect_freq(plan, log=log, kind=kind)
    except KeyboardInterrupt as exc:
        with interrupts.deferred():
            interrupts.acknowledge()
            log(f"interrupted: {resume_hint or RESUME_HINT}")
        what = str(exc).split(";")[0] if str(exc).startswith("interrupted") else "interrupted"
        raise KeyboardInterrupt(f"{what}; {resume_hint or RESUME_HINT} (in {plan.scan_dir})") \
            from exc
    finally:
        log.close()
        if running is not None:
            running.release()


def _compute(plan: ScanPlan, points: list, log: ScanLog, checkpoints, detail, workers: int,
             point: int | None, dask: str | None) -> None:
    """`run_freq`'s work in the prepared folder: the reference, then the displaced points."""
    spec = plan.spec
    n = len(points) - 1
    settings = spec.freq_settings()
    log(f"Hessian of {spec.molecule.formula()} ({spec.functional}/{spec.basis_label()}) by central "
        f"differences of analytic gradients: {n} displaced geometries of {settings.step:g} bohr "
        f"and the reference, in {plan.scan_dir}"
        + (f"; point {point} only" if point is not None else
           f"; Dask scheduler {dask}" if dask else
           f"; {workers} workers" if workers > 1 else ""))
    from dm21cli.jobs.build import start_notes

    for note in start_notes(spec):
        log(note)
    targets = points if point is None else [points[point]]
    records: dict = {}
    progress = Progress(len(targets), log)
    reference = points[0]
    if point is None or point == 0:
        if not _reuse(plan, reference, records, progress):
            serial_point(plan, reference, None, records, checkpoints, detail, progress)
    elif finished_result(reference.directory, reference.hash) is not None:
        records[(reference.functional, 0)] = make_record(
            reference, finished_result(reference.directory, reference.hash), [], reused=True,
            guess=None)
    pending = [pt for pt in targets if pt.index > 0 and not _reuse(plan, pt, records, progress)]
    if not pending:
        return
    chk = _reference_chkfile(plan, reference, records)
    if chk is None:
        log("the reference geometry has no converged density on disk: the displaced points "
            "start as a single point does")
    if workers == 1 and not dask:
        for pt in pending:
            serial_point(plan, pt, 0 if chk is not None else None, records, checkpoints, detail,
                         progress)
        return
    for pt in pending:  # (the hash leaves the guess out: the same points, whoever computes them)
        pt.data = json.loads(json.dumps(pt.data))
        if chk is not None:
            pt.data["scf"]["guess"] = str(chk.resolve())
    if dask:
        dask_points(plan, pending, records, dask, checkpoints, progress)
    else:
        parallel_points(plan, pending, records, workers, checkpoints, progress)


def _reuse(plan: ScanPlan, pt, records: dict, progress: Progress) -> bool:
    """Read `pt` from disk if its folder holds a successful result of its input: a point that
    did not converge is computed again."""
    stored = finished_result(pt.directory, pt.hash)
    if stored is None or result_fields(stored)["status"] != "success":
        return False
    info = read_json(pt.directory / POINT_FILE) or {}
    records[(pt.functional, pt.index)] = make_record(pt, stored, [], reused=True,
                                                     guess=info.get("guess"))
    progress(pt.label, "read from disk")
    return True


def _reference_chkfile(plan: ScanPlan, reference, records: dict) -> Path | None:
    """The reference geometry's scf.chk when it converged, else None."""
    record = records.get((reference.functional, 0)) or {}
    chk = plan.scan_dir / REFERENCE_DIR / "scf.chk"
    return chk if record.get("converged") and chk.is_file() else None
