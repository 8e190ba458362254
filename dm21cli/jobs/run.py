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


from dm21cli import __version__
from dm21cli.core import interrupts, resources
from dm21cli.core.errors import ComputeError, DM21Error, from_os_error, reraise_os_error
from dm21cli.io.outputs import qcschema
from dm21cli.io.outputs.atomic import (
    json_default,
    finite,
    open_log,
    write_text_atomic,
    write_text_files_atomic,
)
from dm21cli.io.outputs.checkpoint import ScfCheckpoint
from dm21cli.io.outputs.jobdir import JobDirectory
from dm21cli.io.outputs.orbitals import write_molden
from dm21cli.io.outputs.summary import render_summary
from dm21cli.jobs import memory
from dm21cli.jobs.build import build_molecule, load_network, start_notes
from dm21cli.jobs.point import Guess, compute_point
from dm21cli.jobs.result import base_result, write_cube_files

#: File names inside the job directory.
FILES = {
    "result": "result.json",
    "summary": "summary.txt",
    "molden": "orbitals.molden",
    "chkfile": "scf.chk",
    "input": "input.resolved.yaml",
    "log": "dm21.log",
}


Reporter = Callable[[str], None]


class RunLog:
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


def run_job(spec, *, checkpoints=None, overwrite: bool = False,
            reporter: Reporter | None = None) -> dict:
    """Run the job described by `spec` (a validated `dm21cli.io.inputs.models.JobSpec`).

    checkpoints: DM21 checkpoint root (else the documented search);
    overwrite: replace an existing output directory;
    reporter: called with one progress line at a time; if it has a
    ``status(text)`` method, that is called with each phase of a DM21
    evaluation as it starts (for a live status line, not for logs).
    Returns the QCSchema document (also written to result.json).

    Order of writes (docs/reference/outputs.md): ``input.resolved.yaml``
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
        run = Run(spec, jobdir, res, network, reporter, t_start)

        def compute() -> dict:
            with pyscf_warnings_only_in_log():
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


class Run:
    """One run's output directory, log, restart file and commit state."""

    def __init__(self, spec, jobdir, res: dict, network, reporter: Reporter | None,
                 t_start: float):
        self.spec, self.jobdir, self.res, self.network = spec, jobdir, res, network
        self.reporter = reporter
        self.t_start = t_start
        self.log = RunLog(None, reporter)
        self.checkpoint: ScfCheckpoint | None = None
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
        self.log = RunLog(open_log(path), self.reporter, path)
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
            (self.jobdir.file(FILES["result"]), json_text(document)),
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
                record = base_result(self.spec, self.res, self.network)
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


def json_text(result: dict) -> str:
    """result.json's text (NaN and infinities become null)."""
    import json

    return json.dumps(finite(result), indent=2, allow_nan=False, default=json_default,
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
def pyscf_warnings_only_in_log():
    saved = sys.stderr
    sys.stderr = _DropPySCFWarnings(saved)
    try:
        yield
    finally:
        sys.stderr = saved


def _compute(spec, run: Run, mol, need: dict, guess_chk=None) -> dict:
    jobdir, network, res, log = run.jobdir, run.network, run.res, run.log
    log(f"dm21cli {__version__}: {spec.functional}/{spec.basis_label()} on "
        f"{spec.molecule.formula()} (charge {spec.molecule.charge}, "
        f"multiplicity {spec.molecule.multiplicity}); {res['threads']} threads "
        f"({res['threads_source']}), {res['memory_mb']} MB ({res['memory_source']}); the job "
        f"{memory.describe(need)}")
    for note in start_notes(spec):
        log(note)
    mol.stdout, mol.verbose = log.stream, 4  # PySCF's log from here on
    checkpoint = run.checkpoint = ScfCheckpoint(jobdir.file(FILES["chkfile"]), mol)
    log(f"{'restricted' if spec.resolved_restricted() else 'unrestricted'} "
        f"{'DM21 network (' + spec.scf.precision + ')' if network else 'PySCF/libxc'}, "
        f"{mol.nao_nr()} basis functions, grid level {spec.scf.grid_level}"
        f"{' (legacy radial grids)' if spec.scf.legacy_grids else ''}")
    if guess_chk is not None:
        log(f"initial guess from chkfile {spec.guess_chkfile()}")
    point = compute_point(spec, mol, network=network, memory_mb=res["memory_mb"], log=log,
                          checkpoint=checkpoint, guess=Guess(chkfile=guess_chk),
                          gradient=spec.job.task == "gradient")
    mf, converged, props, timings = point.mf, point.converged, point.props, point.timings
    result = base_result(spec, run.res, network)
    if spec.job.task == "gradient":
        result["driver"] = "gradient"
        if converged:
            log_gradient_table(log, spec.molecule.symbols, props["gradient_hartree_per_bohr"])
    t0 = time.perf_counter()
    result.update({"success": bool(converged), "converged": bool(converged),
                   "status": "success" if converged else "not-converged",
                   "return_energy": props["return_energy"], "properties": props})
    run.finished = result  # from here on a failure to write the files keeps the energy
    if not converged:
        result["error"] = {"error_type": "convergence_error", "error_message": point.failure}
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


def log_gradient_table(log: RunLog, symbols, gradient_hartree_per_bohr) -> None:
    """The gradient, one log line per atom (Hartree/bohr)."""
    log(f"  {'atom':<8}{'dE/dx':>14}{'dE/dy':>14}{'dE/dz':>14}   Hartree/bohr")
    for k, (symbol, row) in enumerate(zip(symbols, gradient_hartree_per_bohr), start=1):
        log(f"  {k:>3} {symbol:<4}" + "".join(f"{x:14.8f}" for x in row))
