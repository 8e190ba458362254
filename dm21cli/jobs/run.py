"""Run one job: geometry, basis, functional, SCF, properties, gradient if asked, output files.

`run_job(spec)` is the library entry point that ``dm21 run`` wraps; scripts
can call it too.  It returns the document that is also written to
``result.json``: a QCSchema AtomicResult (`dm21cli.io.outputs.qcschema`).  A
non-converged SCF is returned as a QCSchema FailedOperation (error type
``convergence_error``, ``extras.dm21cli.converged`` false, the last SCF
iteration's properties kept); the caller decides the exit status.  Errors
before the output directory is created leave no directory behind; errors
after it leave a ``result.json`` (a FailedOperation) saying what failed.
"""

from __future__ import annotations

import contextlib
import datetime
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from dm21cli import __version__
from dm21cli.core import interrupts, resources
from dm21cli.core.errors import ComputeError, DM21Error, from_os_error, reraise_os_error
from dm21cli.io.outputs import qcschema
from dm21cli.io.outputs.atomic import (
    _json_default,
    finite,
    open_log,
    write_bytes_atomic,
    write_text_atomic,
    write_text_files_atomic,
)
from dm21cli.io.outputs.jobdir import JobDirectory
from dm21cli.io.outputs.orbitals import chkfile_bytes, write_molden
from dm21cli.io.outputs.summary import non_aufbau_text, render_summary
from dm21cli.jobs import memory
from dm21cli.jobs.build import (
    _warm_start,
    build_grids,
    build_molecule,
    build_scf,
    dispersion_energy,
    load_network,
    prepare_grids,
)
from dm21cli.jobs.result import (
    _base_result,
    _final_dm21_energy,
    properties,
    write_cube_files,
)

#: File names inside the job directory.
FILES = {
    "result": "result.json",
    "summary": "summary.txt",
    "molden": "orbitals.molden",
    "chkfile": "scf.chk",
    "input": "input.resolved.yaml",
    "log": "dm21.log",
}


#: The SCF state is written to scf.chk at most this often while it changes
#: (every state is kept in memory; the last one is always written when an
#: attempt, the warm start or the run ends, also when it is interrupted).
CHECKPOINT_INTERVAL_S = 10.0


Reporter = Callable[[str], None]


class _Log:
    """Writes timestamped lines to the job log and forwards them to a reporter.

    Every line is also a safe point for a lost SIGINT/SIGTERM
    (`interrupts.check`).  A failed write (disk full) raises the error that
    says so once; the log file is then given up and later lines only go to
    the reporter, so that the failure can still be reported and recorded.
    """

    def __init__(self, stream, reporter: Reporter | None, path: Path | None = None):
        self.stream = stream
        self.reporter = reporter
        self.path = path

    def __call__(self, message: str) -> None:
        interrupts.check()
        stamp = datetime.datetime.now().strftime("%H:%M:%S")
        if self.stream is not None:
            try:
                self.stream.write(f"[dm21 {stamp}] {message}\n")
                self.stream.flush()
            except OSError as exc:
                self.stream = None
                reraise_os_error(exc, self.path)
        if self.reporter is not None:
            self.reporter(message)


class _ScfCheckpoint:
    """The run's last SCF state: kept in memory, written to scf.chk atomically.

    PySCF's own chkfile writing is switched off (``mf.chkfile = None``): it
    updates an HDF5 file in place, so an interruption or a full disk could
    leave half a file, and HDF5 itself crashed on a full disk.  Here the file
    is built in memory (`dm21cli.io.outputs.orbitals.chkfile_bytes`) and renamed into
    place, so ``scf.chk`` is always a complete restart file (or absent).
    """

    def __init__(self, path: Path, mol, interim: bool = True):
        self.path = path
        self.mol = mol
        #: write the states as they come; False: keep them in memory only, and the owner
        #: writes the last one (`write`) once the work it belongs to is complete (a geometry
        #: optimisation's step away from the geometry a restart starts from)
        self.interim = interim
        self.state: tuple | None = None
        self.written = False  # the file holds the current state
        self._last_write = -float("inf")

    def update(self, e_tot, mo_energy, mo_coeff, mo_occ, final: bool = False) -> None:
        """Keep this state; write it if `interim` and `final` or CHECKPOINT_INTERVAL_S have passed."""
        self.state = (float(e_tot), mo_energy, mo_coeff, mo_occ)
        self.written = False
        if self.interim and (final or time.monotonic() - self._last_write >= CHECKPOINT_INTERVAL_S):
            self.write()

    def write(self) -> bool:
        """Write the current state unless the file already holds it; returns whether a file exists."""
        if self.state is not None and not self.written:
            e_tot, mo_energy, mo_coeff, mo_occ = self.state
            write_bytes_atomic(self.path, chkfile_bytes(self.mol, e_tot, mo_energy,
                                                                 mo_coeff, mo_occ))
            self.written = True
            self._last_write = time.monotonic()
        return self.written


#: DM21 phases that get a log line when an evaluation starts them (the long ones).
_LOGGED_PHASES = {"integral memory": "mapping the memory of the exchange-integral cache",
                  "exchange integrals": "computing the exchange integrals (grid points in {blocks})"}


def _dm21_progress(log: _Log):
    """A `DM21XC.progress` hook: a log line when an evaluation starts one of
    _LOGGED_PHASES, and every phase to the reporter's live status line if the
    reporter has one (``reporter.status(text)``, see `dm21cli.cli.common`)."""
    status = getattr(log.reporter, "status", None)
    logged: set = set()

    def progress(step: str, phase: str, block: int, nblocks: int) -> None:
        if phase in _LOGGED_PHASES and (step, phase) not in logged:
            logged.add((step, phase))
            blocks = f"{nblocks} block{'s' if nblocks > 1 else ''}"
            log(f"  DM21 {step}: " + _LOGGED_PHASES[phase].format(blocks=blocks))
        if status is not None:
            status(f"DM21 {step}: {phase}, block {block + 1} of {nblocks}")

    return progress


def run_job(spec, *, checkpoints=None, overwrite: bool = False,
            reporter: Reporter | None = None) -> dict:
    """Run the job described by `spec` (a validated `dm21cli.io.inputs.models.JobSpec`).

    checkpoints: DM21 checkpoint root (else the documented search);
    overwrite: replace an existing output directory;
    reporter: called with one progress line at a time; if it has a
    ``status(text)`` method, that is called with each phase of a DM21
    evaluation as it starts (for a live status line, not for logs).
    Returns the QCSchema document (also written to result.json).

    Order of writes (README, "The output directory"): ``input.resolved.yaml``
    and ``dm21.log`` first; ``scf.chk`` whenever the SCF state is saved;
    then ``orbitals.molden``; then ``result.json``, the commit point of the
    run, with ``summary.txt`` (rendered from it) renamed into place right
    after it; then the cube files, after which result.json is written again
    listing them.  The commit runs to its end even if SIGINT/SIGTERM arrives
    (`interrupts.deferred`); a signal after it leaves result.json as it is
    and still ends the run with KeyboardInterrupt (exit 130).  A run that
    fails or is interrupted before the commit writes result.json and
    summary.txt saying so, and scf.chk holds its last SCF state.
    """
    t_start = time.perf_counter()
    res = resources.resolve(spec.resources.threads, spec.memory_mb())
    resources.apply_threads(res["threads"])
    network = load_network(spec, checkpoints)  # weights errors before any directory exists
    if network is not None:
        network.workers = res["threads"]
    # the budget is the whole process's: refuse one the job cannot run in, before any directory
    mol = build_molecule(spec, max_memory_mb=res["memory_mb"])
    need = memory.estimate(spec, mol, res["threads"])
    memory.check(res["memory_mb"], need, res["memory_source"])

    with tempfile.TemporaryDirectory(prefix="dm21-guess-") as scratch:
        guess_chk = None
        if spec.scf.guess_is_chkfile():
            # copy first: the chkfile may live in the directory an overwrite moves aside
            guess_chk = Path(scratch) / "guess.chk"
            shutil.copyfile(spec.guess_chkfile(), guess_chk)
        jobdir = JobDirectory(spec.output_path(), overwrite=overwrite,
                              inputs=input_files(spec)).prepare()
        run = _Run(spec, jobdir, res, network, reporter, t_start)

        def compute() -> dict:
            with _pyscf_warnings_only_in_log():
                return _compute(spec, run, mol, need, guess_chk)

        return run.execute(compute)


def input_files(spec) -> list[Path]:
    """The files the job was read from (its job file, an external .xyz file): an
    --overwrite never replaces a folder that holds one (`JobDirectory`)."""
    files = [spec.source_path]
    if spec.molecule.file is not None and spec.molecule.source_file:
        files.append(Path(spec.molecule.source_file))
    return [Path(f).absolute() for f in files if f is not None]


def unsaved_result_text(record: dict) -> str:
    """What a finished run whose result.json could not be written says about its result:
    'the SCF converged (E = -1.1654192614 Ha), but this result could not be saved'."""
    energy = record.get("return_energy")
    state = "converged" if record.get("converged") else "did not converge"
    value = f" (E = {energy:.10f} Ha)" if isinstance(energy, (int, float)) else ""
    return f"the SCF {state}{value}, but this result could not be saved"


class _Run:
    """One run's output directory, log, restart file and commit state."""

    def __init__(self, spec, jobdir, res: dict, network, reporter: Reporter | None,
                 t_start: float):
        self.spec, self.jobdir, self.res, self.network = spec, jobdir, res, network
        self.reporter = reporter
        self.t_start = t_start
        self.log = _Log(None, reporter)
        self.checkpoint: _ScfCheckpoint | None = None
        #: result.json holds this run's finished result (success or not-converged)
        self.committed = False
        #: the finished result (record) while its files are written: if writing them fails,
        #: the failure record and the error message keep its energy
        self.finished: dict | None = None
        self.status: str | None = None
        #: fields a failure record adds (a geometry optimisation: its history so far)
        self.failure_fields: Callable[[], dict] | None = None
        #: how to restart an interrupted run, for the message (default: from scf.chk)
        self.restart_hint: str | None = None
        #: the library function recorded in a failure's provenance
        self.routine = "dm21cli.jobs.run.run_job"

    def start(self) -> None:
        path = self.jobdir.file(FILES["log"])
        self.log = _Log(open_log(path), self.reporter, path)
        write_text_atomic(self.jobdir.file(FILES["input"]), self.spec.to_resolved_yaml())

    def commit(self, record: dict) -> dict:
        """Write result.json (the commit point) and summary.txt; nothing interrupts it.

        `record` is the run in dm21cli's layout; result.json holds its QCSchema
        document (`qcschema.to_qcschema`), which is returned.
        """
        with interrupts.deferred():
            self.finished = record
            document = self._write_result(record)
            self.committed = True
            self.status = record["status"]
            return document

    def _write_result(self, record: dict) -> dict:
        document = qcschema.to_qcschema(record, self.spec.atomic_input)
        write_text_files_atomic([
            (self.jobdir.file(FILES["result"]), _json_text(document)),
            (self.jobdir.file(FILES["summary"]), render_summary(document)),
        ])
        return document

    def execute(self, compute):
        """Start the run and return compute()'s result.  A failure or interruption on the
        way is recorded (`fail`) and raised as what `fail` makes of it; the run is closed
        in every case.  The one frame around `run_job`'s and `run_opt`'s work."""
        try:
            self.start()
            return compute()
        except BaseException as exc:
            error = self.fail(exc)
            if error is exc:
                raise
            raise error from exc
        finally:
            self.close()

    def fail(self, exc: BaseException) -> BaseException:
        """Record a run that ends with `exc`; returns the exception to raise.

        Before the commit: the last SCF state goes to scf.chk, and result.json
        and summary.txt say what happened.  After it, result.json is kept as
        it is.  KeyboardInterrupt comes back with a message saying what is on
        disk; an OSError for a full disk or an unwritable file becomes the
        dm21cli error that says so; any other unexpected error a ComputeError.
        """
        with interrupts.deferred():
            interrupted = isinstance(exc, KeyboardInterrupt)
            if interrupted:
                interrupts.acknowledge()
            error: BaseException = exc
            if isinstance(exc, OSError):
                error = from_os_error(exc)
            if not isinstance(error, (DM21Error, KeyboardInterrupt, MemoryError)):
                error = ComputeError(f"calculation failed: {exc.__class__.__name__}: {exc} "
                                     f"(log: {self.jobdir.file(FILES['log'])})")
            result_path = self.jobdir.file(FILES["result"])
            if self.committed:
                what = f"{result_path} holds the finished result ({self.status})"
                self._safe_log(f"run {'interrupted' if interrupted else 'failed'} after the "
                               f"results were written: {exc.__class__.__name__}: {exc}; {what}")
                if interrupted:
                    return KeyboardInterrupt(f"{interrupts.message()} after the results were "
                                             f"written; {what}")
                if isinstance(error, DM21Error):
                    error.args = (f"{error}; {what}",)
                return error
            self.status = "interrupted" if interrupted else "failed"
            self._safe_log(f"run {self.status}: {exc.__class__.__name__}: {exc}")
            unsaved = "" if self.finished is None else f"; {unsaved_result_text(self.finished)}"
            if unsaved:
                self._safe_log(unsaved[2:])
            chk = self._save_checkpoint()
            self._write_failure(error, exc)
            if interrupted:
                restart = (self.restart_hint if self.restart_hint else
                           f"the last SCF state is in {chk} (restart with scf.guess)" if chk
                           else "no SCF cycle had finished")
                return KeyboardInterrupt(f"{interrupts.message()}; {restart}{unsaved}")
            if unsaved and isinstance(error, DM21Error):
                error.args = (f"{error}{unsaved}",)
            return error

    def close(self) -> None:
        """Remove .running, deal with the directory an overwrite moved aside, close the log."""
        with interrupts.deferred():
            try:
                kept = self.jobdir.finalize(self.status or "failed", keep_old=not self.committed)
                if kept is not None:
                    self._safe_log(f"the previous results were kept in {kept}")
            finally:
                if self.log.stream is not None:
                    with contextlib.suppress(OSError):
                        self.log.stream.close()

    def _safe_log(self, message: str) -> None:
        with contextlib.suppress(Exception):
            self.log(message)

    def _save_checkpoint(self) -> Path | None:
        """Write the last SCF state to scf.chk if not done yet; its path, or None."""
        if self.checkpoint is None:
            return None
        try:
            return self.checkpoint.path if self.checkpoint.write() else None
        except Exception as exc:  # noqa: BLE001 - a full disk must not hide the original error
            self._safe_log(f"could not write {self.checkpoint.path}: {exc}")
            return self.checkpoint.path if self.checkpoint.path.exists() else None

    def _write_failure(self, error: BaseException, exc: BaseException) -> None:
        try:
            if self.finished is not None:  # a finished result that could not be written: keep it
                record = {**self.finished, "success": False, "converged": False}
            else:
                record = _base_result(self.spec, self.res, self.network)
            record["status"] = self.status
            record["error"] = {"error_type": qcschema.error_type(error),
                               "error_message": str(error) or str(exc) or self.status,
                               "extras": {"exception": exc.__class__.__name__}}
            record["timings_s"] = {"total": time.perf_counter() - self.t_start}
            record["provenance"]["routine"] = self.routine
            if self.failure_fields is not None:
                record.update(self.failure_fields())
            record["files"] = {k: v for k, v in (record.get("files") or FILES).items()
                               if k in ("result", "summary") or self.jobdir.file(v).exists()}
            self._write_result(record)
        except Exception as write_error:  # noqa: BLE001 - never mask the original error
            self._safe_log(f"could not record the failure in {FILES['result']}: {write_error}")


def _json_text(result: dict) -> str:
    """result.json's text (NaN and infinities become null)."""
    import json

    return json.dumps(finite(result), indent=2, allow_nan=False, default=_json_default,
                      ensure_ascii=False) + "\n"


class _DropPySCFWarnings:
    """A stderr that drops PySCF's copies of its warnings (they are in dm21.log).

    PySCF's logger writes each warning to the log file and, when the log is a
    file, once more to stderr.  For DM21 some are routine (HOMO >= LUMO at a
    non-aufbau solution, a chkfile guess from another geometry in a scan), and
    they would break the one-line-per-event stderr of the command line.
    """

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        if text.startswith("WARN: "):
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def _pyscf_warnings_only_in_log():
    saved = sys.stderr
    sys.stderr = _DropPySCFWarnings(saved)
    try:
        yield
    finally:
        sys.stderr = saved


class ScfStep:
    """One converged (or not) SCF of a job at one geometry: what `scf_step` returns.

    converged is True only for an SCF that converged and whose density passed the
    final checks (`DM21XC.final_correction`); failure says why not, in words
    (None when converged).
    """

    def __init__(self, mf, converged: bool, attempts: list, props: dict, warm: dict | None,
                 final_energy: dict | None, timings: dict, failure: str | None = None):
        self.mf, self.converged, self.attempts = mf, converged, attempts
        self.props, self.warm, self.final_energy, self.timings = props, warm, final_energy, timings
        self.failure = failure


def scf_step(spec, mol, log: _Log, res: dict, network, checkpoint: _ScfCheckpoint, *,
             guess_chk=None) -> ScfStep:
    """The SCF of `spec` on the built molecule `mol` (its geometry may differ from the spec's):
    grid, SCF object (a fresh DM21XC: the exchange integrals of this geometry), starting
    density (a chkfile `guess_chk`, else for DM21 the warm start, else the SCF's own
    guess), the escalation ladder, the float64 final DM21 energy, D3(BJ), and the properties.

    Every SCF state goes to `checkpoint` (the last one written, final=True).  Used by the
    single point and by every step of a geometry optimisation (`dm21cli.jobs.opt`).
    """
    from dm21cli.scf.escalation import run_with_escalation
    from dm21cli.scf.occupations import guess_from_chkfile

    timings: dict = {}
    grids = build_grids(mol, spec)
    mf = build_scf(mol, spec, grids, network, max_memory_mb=res["memory_mb"])
    mf.chkfile = None  # the run keeps its own restart file
    if network is not None:
        mf.dm21.progress = _dm21_progress(log)
    dm0 = None
    warm = None
    if guess_chk is not None:
        dm0 = guess_from_chkfile(mf, str(guess_chk))
    elif network is not None and spec.scf.warm_start:
        dm0, warm = _warm_start(mol, spec, grids, res["memory_mb"], log, main=mf,
                                checkpoint=checkpoint)
        timings["warm_start"] = warm["wall_s"]
    prepare_grids(mf, spec, dm0)
    grids = mf.grids  # (pruned by scf.small_rho_cutoff, if set)
    log(f"{len(grids.weights)} grid points")

    t0 = time.perf_counter()
    converged, attempts = run_with_escalation(mf, dm0, max_attempts=spec.scf.max_attempts,
                                              log=log, on_state=checkpoint.update)
    final_energy = (_final_dm21_energy(mf, log) if network is not None and converged else None)
    timings["scf"] = time.perf_counter() - t0

    e_disp = None
    if spec.dispersion == "d3bj":
        e_disp = dispersion_energy(mol, spec.functional)
        log(f"D3(BJ) dispersion energy {e_disp:.10f} Ha")

    props = properties(mf, spec, e_disp)
    if props["non_aufbau"] and converged:
        log(f"WARNING: {non_aufbau_text(props['non_aufbau'])}")
    props["scf_iterations"] = int(sum(a.cycles for a in attempts))
    props["scf_attempts"] = [a.to_dict() for a in attempts]
    props["warm_start"] = warm
    if network is not None:
        props["dm21_evaluations"] = int(mf.dm21.n_evaluations)
        props["dm21_timings_s"] = dict(mf.dm21.timings_s)
        props["dm21_exchange_integrals"] = mf.dm21.integrals_summary()
        props["dm21_network_points"] = int(network.points_evaluated
                                           + mf.dm21.scf_network.points_evaluated * mf.dm21.mixed)
        props["dm21_final_energy"] = final_energy
    checkpoint.update(mf.e_tot, mf.mo_energy, mf.mo_coeff, mf.mo_occ, final=True)
    failure = None
    if not converged:
        failure = (f"SCF not converged after {len(attempts)} attempts "
                   f"({props['scf_iterations']} cycles)")
    elif final_energy is not None and final_energy["problems"]:
        failure = ("the SCF converged to a density that fails the final checks: "
                   + "; ".join(final_energy["problems"]))
        converged = False
    return ScfStep(mf, bool(converged), attempts, props, warm, final_energy, timings, failure)


def gradient_step(step: ScfStep, spec, log: _Log) -> dict | None:
    """The nuclear gradient (`dm21cli.jobs.gradient.nuclear_gradient`) of a converged SCF
    step, put into its properties (Hartree/bohr: the gradient, its maximum and RMS); None,
    and nothing put, when the SCF did not converge: an unconverged density has no gradient
    worth reporting."""
    from dm21cli.jobs.gradient import nuclear_gradient, summary

    if not step.converged:
        log("no nuclear gradient: the SCF did not converge")
        return None
    t0 = time.perf_counter()
    grad = nuclear_gradient(step.mf, spec)
    g = grad["gradient_hartree_per_bohr"]
    stats = summary(g)
    step.props.update({
        "gradient_hartree_per_bohr": g.tolist(),
        "gradient_max_hartree_per_bohr": stats["max_hartree_per_bohr"],
        "gradient_rms_hartree_per_bohr": stats["rms_hartree_per_bohr"],
        "gradient_norm_hartree_per_bohr": float(np.linalg.norm(g)),
        "gradient_grid_response": grad["grid_response"],
        "scf_gradient_hartree_per_bohr": grad["scf_gradient_hartree_per_bohr"].tolist(),
        "dispersion_gradient_hartree_per_bohr": (
            None if grad["dispersion_gradient_hartree_per_bohr"] is None
            else grad["dispersion_gradient_hartree_per_bohr"].tolist()),
    })  # result.json: the gradient is QCSchema's return_gradient, the rest under extras
    step.timings["gradient"] = time.perf_counter() - t0
    log(f"nuclear gradient: max {stats['max_hartree_per_bohr']:.3e}, RMS "
        f"{stats['rms_hartree_per_bohr']:.3e} Ha/bohr ({step.timings['gradient']:.1f} s)")
    return grad


def _compute(spec, run: _Run, mol, need: dict, guess_chk=None) -> dict:
    jobdir, network, res, log = run.jobdir, run.network, run.res, run.log
    log(f"dm21cli {__version__}: {spec.functional}/{spec.basis_label()} on "
        f"{spec.molecule.formula()} (charge {spec.molecule.charge}, "
        f"multiplicity {spec.molecule.multiplicity}); {res['threads']} threads "
        f"({res['threads_source']}), {res['memory_mb']} MB ({res['memory_source']}); the job "
        f"{memory.describe(need)}")
    note = spec.multiplicity_note()
    if note:
        log(note)
    mol.stdout, mol.verbose = log.stream, 4  # PySCF's log from here on
    checkpoint = run.checkpoint = _ScfCheckpoint(jobdir.file(FILES["chkfile"]), mol)
    log(f"{'restricted' if spec.resolved_restricted() else 'unrestricted'} "
        f"{'DM21 network (' + spec.scf.precision + ')' if network else 'PySCF/libxc'}, "
        f"{mol.nao_nr()} basis functions, grid level {spec.scf.grid_level}"
        f"{' (legacy radial grids)' if spec.scf.legacy_grids else ''}")
    if guess_chk is not None:
        log(f"initial guess from chkfile {spec.guess_chkfile()}")
    step = scf_step(spec, mol, log, res, network, checkpoint, guess_chk=guess_chk)
    mf, converged, props, timings = step.mf, step.converged, step.props, step.timings
    result = _base_result(spec, run.res, network)
    if spec.job.task == "gradient":
        result["driver"] = "gradient"
        gradient_step(step, spec, log)
        if converged:
            log_gradient_table(log, spec.molecule.symbols, props["gradient_hartree_per_bohr"])
    t0 = time.perf_counter()
    result.update({"success": bool(converged), "converged": bool(converged),
                   "status": "success" if converged else "not-converged",
                   "return_energy": props["return_energy"], "properties": props})
    run.finished = result  # from here on a failure to write the files keeps the energy
    if not converged:
        result["error"] = {"error_type": "convergence_error", "error_message": step.failure}
    # files that claim nothing by themselves come first, each complete under its name
    files = {"result": FILES["result"], "summary": FILES["summary"], "input": FILES["input"],
             "log": FILES["log"], "chkfile": FILES["chkfile"]}
    if spec.outputs.molden:
        write_molden(jobdir.file(FILES["molden"]), mf.mol, mf.mo_energy, mf.mo_coeff,
                         mf.mo_occ)
        files["molden"] = FILES["molden"]
    result["files"] = files
    timings["outputs"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - run.t_start
    result["timings_s"] = timings
    document = run.commit(result)  # the commit point: from here on the result is on disk

    cube_jobs = spec.outputs.cube_requests()
    if cube_jobs:
        t0 = time.perf_counter()
        files["cubes"] = write_cube_files(jobdir, spec, mf, log)
        timings["cubes"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - run.t_start
        document = run.commit(result)  # the same result, now listing the cube files
    state = "converged" if converged else "NOT CONVERGED"
    log(f"{state}: E = {props['return_energy']:.10f} Ha; results in {jobdir.path}")
    return finite(document)


def log_gradient_table(log: _Log, symbols, gradient_hartree_per_bohr) -> None:
    """The gradient, one log line per atom (Hartree/bohr)."""
    log(f"  {'atom':<8}{'dE/dx':>14}{'dE/dy':>14}{'dE/dz':>14}   Hartree/bohr")
    for k, (symbol, row) in enumerate(zip(symbols, gradient_hartree_per_bohr), start=1):
        log(f"  {k:>3} {symbol:<4}" + "".join(f"{x:14.8f}" for x in row))
