"""Running a scan: `run_scan` computes the points (serially, or through `workers`) and writes the curve.

The serial walk starts each point from its neighbour's converged density (or
a broken-symmetry mix of it); finished points are read back, not recomputed;
`collect_scan` assembles the curve from what is on disk, computing nothing.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from dm21cli.core import interrupts
from dm21cli.core.errors import (
    ComputeError,
    InputError,
    OutputExistsError,
    reraise_os_error,
)
from dm21cli.jobs.run import Reporter
from dm21cli.jobs.scan.curves import write_curves
from dm21cli.jobs.scan.plan import (
    BROKEN_SYMMETRY_MIN_S2,
    BROKEN_SYMMETRY_STRETCH,
    RESUME_HINT,
    ScanPlan,
    ScanPoint,
    build_spec,
    neighbour_text,
    plan_scan,
    safe_name,
)
from dm21cli.jobs.scan.records import (
    FILES,
    POINT_FILE,
    ScanReport,
    finished_result,
    Progress,
    read_json,
    read_result,
    make_record,
    result_document_fields,
    store_point,
    empty_record,
    result_fields,
)
from dm21cli.jobs.scan.workers import dask_points, parallel_points


class ScanLog:
    """scan.log (a Hessian's freq.log): one timestamped line per event, also to the reporter.  The file is opened
    on the first line (`open_log`: appended to, a regular file only) and kept open."""

    def __init__(self, path: Path, reporter: Reporter | None, name: str = "scan"):
        self.path = path
        self.reporter = reporter
        self.name = name  # the command, in each line's stamp
        self.stream = None

    def __call__(self, message: str) -> None:
        import datetime

        from dm21cli.io.outputs.atomic import open_log

        stamp = datetime.datetime.now().strftime("%H:%M:%S")
        if self.stream is None:
            self.stream = open_log(self.path, append=True)
        try:
            self.stream.write(f"[dm21 {self.name} {stamp}] {message}\n")
        except OSError as exc:
            reraise_os_error(exc, self.path)
        if self.reporter is not None:
            self.reporter(message)

    def close(self) -> None:
        if self.stream is not None:
            with contextlib.suppress(OSError):
                self.stream.close()
            self.stream = None


def load_scan(file, overrides: dict | None = None) -> ScanPlan:
    """The plan of ``dm21 scan FILE``: the job (`dm21cli.io.inputs.load.load_job` with the
    command line's `overrides`, ``output_dir`` among them), then `plan_scan`.

    A comma list in ``overrides["functional"]`` (``--functional DM21,B3LYP``) scans each of
    those functionals, in that order, instead of the job's (the first becomes the job's
    ``functional``); a single name replaces the job's functional as in every command.
    """
    from dm21cli.io.inputs.load import load_job

    overrides = dict(overrides or {})
    functional = overrides.get("functional")
    functionals = None
    if functional and "," in functional:
        functionals = [f.strip() for f in functional.split(",")]
        overrides["functional"] = functionals[0] or None
    return plan_scan(load_job(file, overrides), functionals=functionals)


def check_scan_dir(plan: ScanPlan, overwrite: bool) -> None:
    """Refuse a scan directory this scan may not use: a file in its place (exit 8), a
    directory in use by another running scan, one holding another scan (without
    `overwrite`), an unreadable definition, or files that are not a scan's (exit 5)."""
    from dm21cli.io.outputs.jobdir import RunningMarker, check_output_folder, is_dm21_output

    scan_dir = plan.scan_dir
    check_output_folder(scan_dir)
    if not scan_dir.is_dir():
        return
    definition = scan_dir / plan.files["definition"]
    try:
        RunningMarker(scan_dir).check_free()
        names = [p.name for p in scan_dir.iterdir()]
    except OSError as exc:
        reraise_os_error(exc, scan_dir, "reading")
    stored = read_json(definition)
    if stored is None or not isinstance(stored.get("hash"), str):
        if os.path.lexists(definition):
            if not overwrite:
                raise OutputExistsError(
                    f"scan directory {scan_dir} holds a {plan.files['definition']} that is not a "
                    f"scan definition; use --overwrite to replace it (points with unchanged "
                    f"inputs are kept), or -o for another directory")
            return
        # another --point task may be creating the same scan right now: only foreign files count
        ours = set(plan.files.values()) | set(plan.folders if plan.folders is not None
                                               else [safe_name(f) for f in plan.functionals])
        foreign = [n for n in names if not n.startswith(".") and n not in ours]
        if foreign and not overwrite:
            raise OutputExistsError(f"output directory {scan_dir} already holds files that are not "
                                    f"from a scan (use --overwrite, or -o / --name for another directory)")
        if foreign and not is_dm21_output(scan_dir):
            raise OutputExistsError(
                f"output directory {scan_dir} holds files that dm21 did not write: --overwrite "
                f"uses only dm21's own output directories, and this one is left as it is; "
                f"choose another with -o")
        return
    if stored.get("hash") != plan.definition_hash and not overwrite:
        raise OutputExistsError(
            f"scan directory {scan_dir} holds a scan of a different input (definition hash "
            f"{str(stored.get('hash'))[:12]} != {plan.definition_hash[:12]}); use --overwrite to "
            f"replace it (points with unchanged inputs are kept), or -o for another directory")


def open_scan_dir(plan: ScanPlan, overwrite: bool, hold: bool):
    """Check (`check_scan_dir`) and create the scan directory, mark it as dm21's and write
    its definition; with `hold` (a whole scan, not one --point task) hold it
    (`RunningMarker`) until the returned marker is released."""
    from dm21cli.io.outputs.atomic import write_json_atomic
    from dm21cli.io.outputs.jobdir import (
        OUTPUT_MARKER,
        RunningMarker,
        make_folder,
        mark_output_folder,
        remove_folders,
    )

    check_scan_dir(plan, overwrite)
    created: list[Path] = []
    running = None
    try:
        try:
            created = make_folder(plan.scan_dir)
            running = RunningMarker(plan.scan_dir).claim() if hold else None
        except OSError as exc:  # read-only, no permission, a name too long, disk full
            reraise_os_error(exc, plan.scan_dir, "creating")
        mark_output_folder(plan.scan_dir, "scan")
        write_json_atomic(plan.scan_dir / plan.files["definition"],
                          {"hash": plan.definition_hash, "definition": plan.definition})
    except BaseException:
        if running is not None:
            running.release()
        if created:
            for name in (plan.files["definition"], OUTPUT_MARKER):
                with contextlib.suppress(OSError):
                    (plan.scan_dir / name).unlink()
            remove_folders(created)
        raise
    return running


def _mixed_guess_chkfile(spec, path: Path, source: Path | None = None) -> None:
    """Write a chkfile with a broken-symmetry (HOMO/LUMO mixed) UHF guess for `spec`.

    The orbitals mixed are those of the chkfile `source` (a converged
    neighbour; its alpha set), else of a Hartree-Fock Fock matrix built on the
    minimal-basis atomic guess.
    """
    from pyscf import scf
    from pyscf.scf import chkfile

    from dm21cli.jobs.build import build_molecule

    if source is not None:
        mol, rec = chkfile.load_scf(str(source))
        mo_coeff, mo_occ = np.asarray(rec["mo_coeff"]), np.asarray(rec["mo_occ"])
        mo_energy = np.asarray(rec["mo_energy"])
        if mo_occ.ndim == 2:  # unrestricted: take the alpha set
            mo_coeff, mo_occ, mo_energy = mo_coeff[0], mo_occ[0], mo_energy[0]
        mo_occ = (mo_occ > 0).astype(float) * 2
    else:
        mol = build_molecule(spec)
        mf = scf.RHF(mol)
        dm = mf.get_init_guess(key="minao")
        mo_energy, mo_coeff = mf.eig(mf.get_fock(dm=dm), mf.get_ovlp())
        mo_occ = mf.get_occ(mo_energy, mo_coeff)
    homo = int(np.flatnonzero(mo_occ > 0)[-1])
    lumo = homo + 1
    occ = (mo_occ > 0).astype(float)
    ca, cb = mo_coeff.copy(), mo_coeff.copy()
    if lumo < mo_coeff.shape[1]:
        h, l = mo_coeff[:, homo], mo_coeff[:, lumo]
        ca[:, homo], ca[:, lumo] = (h + l) / math.sqrt(2), (l - h) / math.sqrt(2)
        cb[:, homo], cb[:, lumo] = (h - l) / math.sqrt(2), (l + h) / math.sqrt(2)
    chkfile.dump_scf(mol, str(path), 0.0, np.array([mo_energy, mo_energy]),
                     np.array([ca, cb]), np.array([occ, occ]))


def _run_one(data: dict, plan: ScanPlan, guess: Path | None, label: str, checkpoints, detail):
    """run_job (run_opt for a relaxed point) for one point/fragment; returns (result or None,
    error message or None)."""
    from dm21cli.jobs.task import run_task

    data = json.loads(json.dumps(data))
    if guess is not None:  # absolute: relative guess paths are read against the input's folder
        data["scf"]["guess"] = str(Path(guess).resolve())
    spec = build_spec(data, plan.spec, plan.spec._meta.locate(plan.field), label)
    try:
        # PySCF prints a warning to stdout when a chkfile guess comes from another
        # geometry (always the case here); stdout must stay clean for --json.
        with contextlib.redirect_stdout(io.StringIO()):
            return result_document_fields(run_task(spec, checkpoints=checkpoints, overwrite=True,
                                           reporter=detail, interrupted_hint=RESUME_HINT)), None
    except ComputeError as exc:
        return read_result(spec.output_path() / "result.json"), str(exc)
    finally:
        # the point's SCF, with its exchange-integral caches, is held in reference cycles:
        # freed now, before the next point sizes its caches against the budget
        gc.collect()


def run_scan(plan: ScanPlan, *, checkpoints=None, overwrite: bool = False,
             reporter: Reporter | None = None, detail: Reporter | None = None,
             plot: bool = True, workers: int = 1, point: int | None = None,
             dask: str | None = None) -> ScanReport:
    """Compute the plan's points (reusing finished ones) and write the curve files.

    reporter: one line per point; detail: every log line of every point's run
    (serial runs only).  workers > 1: the points run in that many processes,
    each from its own default guess, with the threads and memory divided among
    them.  point: compute only the point with this index (0-based, in the
    sorted distance list) for every functional, from its default guess; index
    0 also computes the reference fragments; the curve files are not written
    (`collect_scan` assembles them).  dask: address of a Dask scheduler that
    computes the points (independent guesses; each worker resolves its own
    threads and memory unless the job sets them).  A point that does not converge, or fails
    inside PySCF, is recorded and the scan goes on.  KeyboardInterrupt
    (SIGINT/SIGTERM) stops it: the curve files are written for the finished
    points and the exception propagates.
    """
    if point is not None and not 0 <= point < len(plan.values):
        raise InputError(f"point {point} does not exist: the scan has {len(plan.values)} "
                         f"{plan.coordinate.key.replace('_', ' ')} values (indices 0 to "
                         f"{len(plan.values) - 1})", field="--point")
    if workers < 1:
        raise InputError(f"must be at least 1, got {workers}", field="--workers")
    if workers > 1 and point is None and not dask and not hasattr(os, "posix_spawn"):
        raise InputError("worker processes need os.posix_spawn (Linux, macOS); use --point or --dask",
                         field="--workers")
    running = open_scan_dir(plan, overwrite, hold=point is None)
    log = ScanLog(plan.scan_dir / plan.files["log"], reporter)
    try:
        return _run_points(plan, log, checkpoints, detail, plot, workers, point, dask)
    finally:
        log.close()
        if running is not None:
            running.release()


def _targets(plan: ScanPlan, workers: int, point: int | None,
             dask: str | None) -> list[tuple[str, int, int | None]]:
    """(functional, point index, neighbour whose density starts it) of each point to run: one
    point per functional with ``point``, no neighbours with workers or Dask (each point from
    its own default guess), else the plan's order from the start value outwards."""
    if point is not None:
        return [(f, point, None) for f in plan.functionals]
    if workers > 1 or dask:
        return [(f, k, None) for f in plan.functionals for k, _ in plan.order]
    return [(f, k, nb) for f in plan.functionals for k, nb in plan.order]


def _start_text(plan: ScanPlan) -> str:
    """``; starting at ...`` of a serial scan's first log line: the first value, and where it
    comes from (the covalent-radius estimate, or the job's geometry and the atoms moved)."""
    start = plan.values[plan.order[0][0]]
    if plan.kind == "distance":
        return f"; starting at {start:g} A (covalent-radius estimate {plan.equilibrium_angstrom:.3f} A)"
    if plan.start_degree is not None:
        return (f"; starting at {plan.coordinate.text(start)} (the job's geometry: "
                f"{plan.coordinate.text(plan.start_degree)}; atoms moved: "
                f"{', '.join(str(k + 1) for k in plan.moving)})")
    return f"; starting at {plan.coordinate.text(start)}"


def _log_opening(plan: ScanPlan, log: ScanLog, workers: int, point: int | None,
                 dask: str | None) -> None:
    """The scan log's first lines: what is scanned, where and how; the multiplicity note; the
    multiplicities of integer electron numbers."""
    what = {"distance": "distances", "angle": "angles", "dihedral": "dihedrals",
            "electrons": "electron numbers", "fractional_spin": "fractional spins"}[plan.kind]
    first = _start_text(plan)
    log(f"scan of {plan.spec.molecule.formula()}: {len(plan.values)} {what} x "
        f"{len(plan.functionals)} functional(s) in {plan.scan_dir}"
        + (f"; point {point} only" if point is not None else
           f"; Dask scheduler {dask}" if dask else
           f"; {workers} workers" if workers > 1 else first))
    from dm21cli.jobs.build import start_notes

    for note in start_notes(plan.spec, plan.functionals):
        log(note)
    if plan.states:
        reasons = plan.state_reasons or {}
        log("integer electron numbers: " + "; ".join(
            f"N = {n}: multiplicity {m}" + (f" ({reasons[n]})" if n in reasons else "")
            for n, m in plan.states.items()))


def _compute_points(plan: ScanPlan, targets: list, records: dict, progress: Progress,
                    checkpoints, detail, workers: int, dask: str | None) -> None:
    """Each target point into ``records``: empty (no electrons), reused from disk, or computed
    in turn, in worker processes or on Dask."""
    pending = []
    for functional, index, neighbour in targets:
        pt = plan.points[functional][index]
        if pt.data is None:  # no electrons: nothing to compute
            records[(pt.functional, pt.index)] = empty_record(pt)
            progress(pt.label, "no electrons: the energy is the nuclear repulsion")
            continue
        if reuse_point(plan, pt, records, progress):
            continue
        pending.append((pt, neighbour))
        if workers == 1 and not dask:
            serial_point(plan, pt, neighbour, records, checkpoints, detail, progress)
    if dask and pending:
        dask_points(plan, [p for p, _ in pending], records, dask, checkpoints, progress)
    elif workers > 1 and pending:
        parallel_points(plan, [p for p, _ in pending], records, workers, checkpoints, progress)


def _interrupted(plan: ScanPlan, log: ScanLog, records: dict, references: dict,
                 point: int | None, exc: KeyboardInterrupt) -> KeyboardInterrupt:
    """A scan stopped by a signal: the curve files of the finished points (not with
    ``point``), and the exception to raise, with the scan's own way to continue."""
    with interrupts.deferred():  # a second signal waits for the curve files
        interrupts.acknowledge()
        log("interrupted: finished points are kept; run the same command again to continue")
        if point is None:
            report = ScanReport(_ordered(plan, records), references)
            write_curves(plan, report, plot=False)
    # the scan's own way to continue, not that of the point it stopped in (a relaxed
    # point's 'dm21 opt --restart')
    what = str(exc).split(";")[0] if str(exc).startswith("interrupted") else "interrupted"
    return KeyboardInterrupt(f"{what}; {RESUME_HINT} (in {plan.scan_dir})")


def _run_points(plan: ScanPlan, log: ScanLog, checkpoints, detail, plot: bool, workers: int,
                point: int | None, dask: str | None) -> ScanReport:
    """`run_scan`'s work in the prepared scan directory."""
    targets = _targets(plan, workers, point, dask)
    _log_opening(plan, log, workers, point, dask)
    records: dict[tuple[str, int], dict] = {}
    references: dict[str, dict] = {}
    progress = Progress(len(targets), log)
    try:
        _compute_points(plan, targets, records, progress, checkpoints, detail, workers, dask)
        if point is None or point == 0:
            for functional in plan.functionals:
                references[functional] = _run_references(plan, functional, checkpoints, detail, log)
    except KeyboardInterrupt as exc:
        raise _interrupted(plan, log, records, references, point, exc) from exc
    report = ScanReport(_ordered(plan, records), references)
    if point is None:
        write_curves(plan, report, plot=plot)
    log(f"scan finished: {report.summary_line()}")
    return report


def reuse_point(plan: ScanPlan, pt: ScanPoint, records: dict, progress: Progress) -> bool:
    stored = finished_result(pt.directory, pt.hash)
    if stored is None:
        return False
    info = read_json(pt.directory / POINT_FILE) or {}
    records[(pt.functional, pt.index)] = make_record(pt, stored, plan.moving, reused=True,
                                                 guess=info.get("guess"))
    converged = result_fields(stored)["converged"]
    progress(pt.label, f"read from disk ({'converged' if converged else 'NOT converged'})")
    return True


def serial_point(plan, pt, neighbour, records, checkpoints, detail, progress) -> None:
    guess_path, guess = _choose_guess(plan, pt, neighbour, records)
    progress(pt.label, f"computing (guess: {guess})", count=False)
    t0 = time.perf_counter()
    with _scratch_guess(plan, pt, guess_path, guess) as usable:
        result, error = _run_one(pt.data, plan, usable, pt.label, checkpoints, detail)
    store_point(plan, pt, result, error, guess, records, progress, time.perf_counter() - t0)


def _choose_guess(plan: ScanPlan, point: ScanPoint, neighbour: int | None,
                  records: dict) -> tuple[Path | None, str]:
    """(chkfile or None, description) of the starting guess of `point`."""
    stretched = plan.broken_symmetry and \
        point.value > BROKEN_SYMMETRY_STRETCH * plan.equilibrium_angstrom
    nb_stretched = plan.broken_symmetry and neighbour is not None and \
        plan.values[neighbour] > BROKEN_SYMMETRY_STRETCH * plan.equilibrium_angstrom
    nb_record = records.get((point.functional, neighbour), {}) if neighbour is not None else {}
    nb_ok = bool(nb_record.get("converged"))
    nb_broken = (nb_record.get("s_squared") or 0.0) > BROKEN_SYMMETRY_MIN_S2
    if plan.broken_symmetry and stretched and not (nb_stretched and nb_ok and nb_broken):
        chk = plan.points[point.functional][neighbour].directory / "scf.chk" if nb_ok else None
        if chk is not None and chk.is_file():  # mix the neighbour's converged orbitals
            return chk, f"broken-symmetry from {neighbour_text(plan.values[neighbour])}"
        return None, "broken-symmetry"
    if nb_ok:
        chk = plan.points[point.functional][neighbour].directory / "scf.chk"
        if chk.is_file():
            return chk, neighbour_text(plan.values[neighbour], plan.coordinate)
    return None, "default"


class _scratch_guess:
    """Context: the chkfile to start from (a temporary broken-symmetry one if asked)."""

    def __init__(self, plan, point, guess_path, guess):
        self.plan, self.point, self.guess_path, self.guess = plan, point, guess_path, guess
        self._tmp = None

    def __enter__(self):
        if not self.guess.startswith("broken-symmetry"):
            return self.guess_path
        import tempfile

        self._tmp = tempfile.TemporaryDirectory(prefix="dm21-scan-")
        path = Path(self._tmp.name) / "mixed.chk"
        data = json.loads(json.dumps(self.point.data))
        spec = build_spec(data, self.plan.spec, {}, self.point.label)
        _mixed_guess_chkfile(spec, path, source=self.guess_path)
        return path

    def __exit__(self, *exc):
        if self._tmp is not None:
            self._tmp.cleanup()
        return False


def _run_references(plan: ScanPlan, functional: str, checkpoints, detail, log) -> dict:
    refs = plan.references.get(functional)
    if not refs:
        return {}
    out_refs: dict[str, Any] = {}
    limit = 0.0
    for ref in refs:
        entry = {"atoms": [k + 1 for k in ref.atoms], "charge": ref.charge,
                 "multiplicity": ref.multiplicity, "nelectron": ref.nelectron,
                 "energy_hartree": 0.0, "converged": True, "directory": None, "reused": False}
        if ref.data is not None:
            entry["directory"] = str(ref.directory)
            stored = finished_result(ref.directory, ref.hash)
            if stored is not None:
                result, entry["reused"] = stored, True
            else:
                from dm21cli.io.outputs.atomic import write_json_atomic

                log(f"{functional} {ref.role} fragment: computing")
                result, _ = _run_one(ref.data, plan, None, f"{functional} {ref.role} fragment",
                                     checkpoints, detail)
                write_json_atomic(ref.directory / POINT_FILE, {
                    "hash": ref.hash, "functional": functional, "reference": ref.role})
            fields = result_fields(result)
            entry["energy_hartree"], entry["converged"] = fields["energy"], fields["converged"]
        out_refs[ref.role] = entry
        limit = None if limit is None or entry["energy_hartree"] is None else limit + entry["energy_hartree"]
    out_refs["limit_energy_hartree"] = limit
    out_refs["converged"] = all(out_refs[r.role]["converged"] for r in refs)
    log(f"{functional} dissociation limit: "
        f"{'n/a' if limit is None else f'{limit:.8f} Ha'}")
    return out_refs


def _ordered(plan: ScanPlan, records: dict) -> list[dict]:
    return [records[(f, k)] for f in plan.functionals for k in range(len(plan.values))
            if (f, k) in records]


def collect_scan(plan: ScanPlan, *, plot: bool = True) -> ScanReport:
    """Assemble the curve files from the finished points on disk, computing nothing.

    For ``dm21 scan --collect`` after ``--point`` runs (e.g. a Slurm job array).
    Points not (yet) finished are counted as missing; refuses a scan directory
    holding another scan definition (`OutputExistsError`).
    """
    if not (plan.scan_dir / FILES["definition"]).is_file():
        raise InputError(f"nothing to collect: {plan.scan_dir} holds no scan (run the points first)",
                         field="--collect")
    check_scan_dir(plan, overwrite=False)
    records = {}
    for pt in plan.all_points():
        if pt.data is None:
            records[(pt.functional, pt.index)] = empty_record(pt)
            continue
        stored = finished_result(pt.directory, pt.hash)
        if stored is not None:
            info = read_json(pt.directory / POINT_FILE) or {}
            records[(pt.functional, pt.index)] = make_record(pt, stored, plan.moving, reused=True,
                                                         guess=info.get("guess"))
    references = {}
    for functional, refs in plan.references.items():
        entry: dict[str, Any] = {}
        limit: float | None = 0.0
        for ref in refs:
            stored = None if ref.data is None else finished_result(ref.directory, ref.hash)
            fields = result_fields(stored)
            energy = 0.0 if ref.data is None else fields["energy"]
            entry[ref.role] = {"atoms": [k + 1 for k in ref.atoms], "charge": ref.charge,
                               "multiplicity": ref.multiplicity, "nelectron": ref.nelectron,
                               "energy_hartree": energy,
                               "converged": ref.data is None or fields["converged"],
                               "directory": None if ref.data is None else str(ref.directory),
                               "reused": stored is not None}
            limit = None if limit is None or energy is None else limit + energy
        entry["limit_energy_hartree"] = limit
        entry["converged"] = all(entry[r.role]["converged"] for r in refs)
        references[functional] = entry
    report = ScanReport(_ordered(plan, records), references, expected=len(plan.all_points()))
    write_curves(plan, report, plot=plot)
    return report
