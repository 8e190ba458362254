"""DM21 as a QCEngine program: ``qcengine.compute(atomic_input, "dm21")``.

``import dm21cli.qcengine`` (or `register`) registers `DM21Harness` under
the name ``dm21``.  The harness runs in-process: the AtomicInput becomes a
job exactly as ``dm21 run input.json`` reads it
(`dm21cli.io.inputs.load.load_atomic_input`), `dm21cli.jobs.run.run_job`
computes it (driver ``energy`` or ``gradient``), and its result.json
document is the AtomicResult returned; geomeTRIC's optimisations through
QCEngine ask for gradients.
QCEngine's TaskConfig sets the threads (``ncores``), the memory (``memory``,
GiB, on top of what the calling process holds: `memory_budget_mb`) and where
the run's files go (``scratch_directory``; removed afterwards unless
``scratch_messy``).

Failures come back as QCEngine's errors, so that ``qcengine.compute`` returns
a FailedOperation: a bad AtomicInput is an ``input_error`` (also one that
qcelemental refuses before the harness runs: `DM21Harness.build_input_model`), an SCF that did
not converge a ``convergence_error`` (its last iteration in
``error.extras``), missing weights or memory, or a scratch directory that
cannot hold the run's folder, a ``resource_error``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Dict

from qcengine import exceptions as qcng_errors
from qcengine.programs.model import ProgramHarness

from dm21cli import __version__
from dm21cli.core.errors import DM21Error, InputError, OutputLocationError, WeightsError
from dm21cli.core.resources import current_rss_mb, physical_memory_mb
from dm21cli.io.inputs.qcschema import check_molecule
from dm21cli.io.outputs.qcschema import error_type

#: the program name QCEngine knows DM21 by
NAME = "dm21"

#: text files of a run returned as ``native_files`` (protocol ``native_files: all``)
NATIVE_TEXT_FILES = ("input.resolved.yaml", "dm21.log", "summary.txt", "orbitals.molden")

_QCENGINE_ERRORS = {
    "input_error": qcng_errors.InputError,
    "convergence_error": qcng_errors.ConvergenceError,
    "resource_error": qcng_errors.ResourceError,
    "random_error": qcng_errors.RandomError,
}


def memory_mb(memory_gib: float | None) -> int | None:
    """TaskConfig's memory (GiB, 2^30 bytes) in dm21's unit (MB, 10^6 bytes)."""
    if not memory_gib:
        return None
    return max(1, int(memory_gib * 2**30 / 1e6))


def memory_budget_mb(memory_gib: float | None) -> int | None:
    """dm21's memory budget (MB) for TaskConfig's memory (GiB).

    dm21's budget is the whole process's (`dm21cli.jobs.memory`); QCEngine's
    memory is what the program may use (its default is 90% of the memory
    available now), and the harness runs inside the caller's process, whose
    memory is not the run's.  So the budget is what this process holds now
    plus TaskConfig's memory, at most the machine's memory.
    """
    extra = memory_mb(memory_gib)
    if extra is None:
        return None
    budget = current_rss_mb() + extra
    physical = physical_memory_mb()
    if physical is not None:
        budget = min(budget, physical)
    return max(1, int(budget))


def _qcengine_error(document_or_error, message: str | None = None, extras: dict | None = None):
    kind = document_or_error if isinstance(document_or_error, str) else error_type(document_or_error)
    cls = _QCENGINE_ERRORS.get(kind, qcng_errors.UnknownError)
    return cls(message if message is not None else str(document_or_error), extras)


@contextlib.contextmanager
def _process_settings(threads: int | None, scratch: Path):
    """BLAS/OpenMP threads and PySCF's temporary folder for the run, restored afterwards
    (the harness runs inside the caller's process)."""
    from pyscf import lib

    saved_threads, saved_tmp = lib.num_threads(), lib.param.TMPDIR
    lib.param.TMPDIR = str(scratch)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover
            limits = contextlib.nullcontext()
        else:
            limits = threadpool_limits(limits=threads) if threads else contextlib.nullcontext()
        with limits:
            yield
    finally:
        lib.num_threads(saved_threads)
        lib.param.TMPDIR = saved_tmp


def run_atomic_input(document: dict, *, ncores: int | None = None, memory_gib: float | None = None,
                     scratch_directory: str | None = None, scratch_messy: bool = False,
                     checkpoints=None) -> tuple[dict, dict]:
    """Run a QCSchema AtomicInput (version 1, as a dict) in this process.

    Returns (result.json document, {file name: text} of the run's text
    files).  ncores / memory_gib set the threads and memory (TaskConfig's
    units); the run's files go to a new folder in scratch_directory (the
    system's temporary folder if None), removed afterwards unless
    scratch_messy or the keywords name an ``output_dir``.  Raises
    `dm21cli.core.errors.DM21Error` like `run_job`.
    """
    from dm21cli.io.inputs.load import load_atomic_input
    from dm21cli.jobs.task import run_task

    keywords = document.get("keywords") or {}
    for key, setting in (("threads", "ncores"), ("memory", "memory")):
        if key in keywords:
            raise InputError(f"under QCEngine, set the {key} with the task_config's {setting!r}, "
                             f"not a keyword", file="AtomicInput", field=f"keywords.{key}")
    try:
        scratch = Path(tempfile.mkdtemp(prefix="dm21-", dir=scratch_directory))
    except OSError as exc:
        raise OutputLocationError(f"scratch_directory {scratch_directory or tempfile.gettempdir()}: "
                                  f"cannot create the run's folder there: "
                                  f"{exc.strerror or exc}") from exc
    keep = scratch_messy
    try:
        overrides = {"threads": ncores, "memory": memory_budget_mb(memory_gib)}
        if "output_dir" not in keywords:
            overrides["output_dir"] = str(scratch / "job")
        spec = load_atomic_input(document, overrides)
        keep = keep or "output_dir" in keywords
        out = spec.output_path()
        with _process_settings(ncores, scratch):
            try:
                if spec.job.task == "freq":  # driver hessian
                    from dm21cli.jobs.freq import plan_freq, run_freq

                    result = run_freq(plan_freq(spec), checkpoints=checkpoints)
                else:
                    result = run_task(spec, checkpoints=checkpoints)
            except DM21Error as exc:
                exc.document = _read_json(out / "result.json")
                raise
        files = {}
        for name in NATIVE_TEXT_FILES:
            with contextlib.suppress(OSError, UnicodeDecodeError):
                files[name] = (out / name).read_text(encoding="utf-8")
        return result, files
    finally:
        if not keep:
            gc.collect()  # PySCF's temporary files in the scratch folder close with their objects
            shutil.rmtree(scratch, ignore_errors=True)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class DM21Harness(ProgramHarness):
    """QCEngine's program ``dm21``: DM21 (and any PySCF functional) through dm21cli, in-process."""

    _defaults: ClassVar[Dict[str, Any]] = {
        "name": NAME,
        "scratch": True,
        "thread_safe": False,  # sets the process's BLAS/OpenMP threads while it runs
        "thread_parallel": True,
        "node_parallel": False,
        "managed_memory": True,
    }

    @staticmethod
    def found(raise_error: bool = False) -> bool:
        from qcelemental.util import which_import

        return which_import("pyscf", return_bool=True, raise_error=raise_error,
                            raise_msg="dm21cli needs PySCF: pip install dm21cli")

    def get_version(self) -> str:
        return __version__

    def build_input_model(self, data, *, return_input_schema_version: bool = False):
        """QCEngine's AtomicInput model of `data`; a malformed input raises QCEngine's
        ``InputError`` (a FailedOperation ``input_error``), never another error type.

        A molecule given as a dict is first checked as ``dm21 run input.json`` checks
        it (`check_molecule`: array shapes and atom indices; the error names
        the field); what qcelemental's Molecule then refuses with its own exceptions,
        or fails on (AttributeError, KeyError, IndexError: QCEngine 0.52 lets all of
        them through as an ``unknown_error``), is an input error too.
        """
        from qcelemental import exceptions as qcel_errors

        molecule = data.get("molecule") if isinstance(data, dict) else None
        try:
            check_molecule(molecule, "AtomicInput")
        except InputError as exc:
            raise _qcengine_error(exc) from None
        try:
            return super().build_input_model(
                data, return_input_schema_version=return_input_schema_version)
        except (qcel_errors.ValidationError, qcel_errors.NotAnElementError,
                qcel_errors.MoleculeFormatError, qcel_errors.ChoicesError) as exc:
            message = getattr(exc, "message", None) or str(exc)
            raise qcng_errors.InputError(f"AtomicInput: molecule: {message}") from None
        except (AttributeError, KeyError, IndexError) as exc:
            raise qcng_errors.InputError(f"AtomicInput: qcelemental cannot read it "
                                         f"({type(exc).__name__}: {exc})") from None

    def compute(self, input_model, config):
        """A v2 AtomicInput (QCEngine's own) -> v2 AtomicResult; failures raise QCEngine's errors."""
        from qcelemental.models import v1

        document = input_model.convert_v(1).dict(encoding="json")
        try:
            result, files = run_atomic_input(
                document, ncores=config.ncores, memory_gib=config.memory,
                scratch_directory=config.scratch_directory, scratch_messy=config.scratch_messy)
        except (InputError, WeightsError) as exc:
            raise _qcengine_error(exc) from exc
        except DM21Error as exc:
            failed = getattr(exc, "document", None) or {}
            raise _qcengine_error(exc, extras=failed.get("extras")) from exc
        if not result.get("success"):  # did not converge: a FailedOperation document
            error = result.get("error") or {}
            raise _qcengine_error(error.get("error_type") or "unknown_error",
                                  error.get("error_message") or "failed", result.get("extras"))
        protocols = input_model.specification.protocols
        if protocols.stdout:
            result["stdout"] = files.get("dm21.log")
        if protocols.native_files == "all":
            result["native_files"] = files
        elif protocols.native_files == "input":
            result["native_files"] = {"input": files.get("input.resolved.yaml")}
        return v1.AtomicResult(**result).convert_v(2, external_input_data=input_model)


def register() -> None:
    """Register `DM21Harness` with QCEngine as ``dm21`` (once; again is a no-op)."""
    from qcengine.programs.base import programs, register_program

    if NAME not in programs:
        register_program(DM21Harness())
