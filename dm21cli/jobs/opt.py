"""Geometry optimisation: `run_opt(spec)` minimises a job's energy with geomeTRIC (``dm21 opt``).

Each step is a whole single point with its nuclear gradient, computed by the
same code as ``dm21 run --gradient`` (`dm21cli.jobs.point.compute_point`) at the
geometry geomeTRIC asks for: a new molecule, a new
grid and a new DM21XC (the exchange integrals of that geometry; nothing of
the previous geometry's caches is reused), started from the previous step's
density (the run's ``scf.chk``).  The first step starts as ``dm21 run`` does
(the B3LYP warm start, or ``scf.guess``).

Why geomeTRIC's engine API (`geometric.engine.Engine`, driven by
`geometric.optimize.Optimizer`) and not PySCF's `pyscf.geomopt.geometric_solver`:
PySCF's interface runs PySCF's own SCF kernel through a gradient scanner at
every geometry, which would skip what makes a dm21cli single point - the warm
start, the escalation ladder that converges stretched DM21 cases, the float64
final DM21 energy, D3(BJ) in energy and gradient, the restart file and the
interruption points.  It also overwrites geomeTRIC's unit constants for the
whole process and goes through ``run_optimizer``, which configures logging
globally and writes its own log and files into the working directory.  The
engine API asks us for an energy and a gradient and nothing else; the output
directory stays ours (`dm21cli.jobs.run`'s rules: result.json is the commit
point, ``.running``, overwrite, interruption).

Files besides those of ``dm21 run``: ``trajectory.xyz`` (one frame per step,
rewritten atomically after each), ``final.xyz`` (the last geometry), and in
result.json the section ``optimization`` (criteria, constraints, the history
of every step).  ``restart=True`` continues an interrupted, failed or
unconverged optimisation from the last geometry of its history (or, without
result.json, of its trajectory.xyz), with its ``scf.chk`` as the first density:
``scf.chk`` always holds the density at that geometry, since a step's SCF
state replaces it only once the step is in the history.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import re
import shlex
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from dm21cli import __version__
from dm21cli.core import interrupts, resources
from dm21cli.core.errors import ComputeError, InputError, OutputExistsError
from dm21cli.core.units import ANGSTROM_BOHR, BOHR_ANGSTROM
from dm21cli.io.outputs.atomic import finite, write_bytes_atomic, write_text_atomic
from dm21cli.io.outputs.jobdir import JobDirectory
from dm21cli.io.outputs.orbitals import write_molden
from dm21cli.io.outputs.qcschema import fields
from dm21cli.jobs import memory
from dm21cli.jobs.build import build_molecule, load_network
from dm21cli.io.outputs.checkpoint import ScfCheckpoint
from dm21cli.jobs.point import Guess, compute_point
from dm21cli.jobs.result import base_result, write_cube_files
from dm21cli.jobs.run import (
    FILES,
    Reporter,
    Run,
    RunLog,
    input_files,
    log_gradient_table,
    pyscf_warnings_only_in_log,
)

#: files of an optimisation besides those of a single point
OPT_FILES = {"trajectory": "trajectory.xyz", "final": "final.xyz"}
#: a transition-state search's folders: the Hessian it starts from, the final frequencies
TS_HESSIAN_DIR = "start-hessian"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _ScfNotConverged(Exception):
    """The SCF of an optimisation step did not converge: the optimisation stops."""


class _Quiet:
    """A reporter that shows DM21's phases on the live status line but prints no lines
    (the details of each step go to dm21.log only)."""

    def __init__(self, reporter):
        self.status = getattr(reporter, "status", None) or (lambda text: None)

    def __call__(self, message: str) -> None:
        pass


def run_opt(spec, *, checkpoints=None, overwrite: bool = False, restart: bool = False,
            reporter: Reporter | None = None, resume_command: str | None = None,
            interrupted_hint: str | None = None, start_hessian=None) -> dict:
    """Optimise the geometry of `spec` (a validated JobSpec; its ``opt`` section or the
    defaults) and write the output directory; returns the result dict (result.json).

    overwrite: replace an existing output directory; restart: continue the optimisation
    in it from its last complete step (`previous_optimisation`; InputError when there is
    nothing to continue).  A run that does not converge (an SCF, the geometry within
    ``opt.maxiter`` steps, or geomeTRIC giving up) returns with ``success: False``; the
    caller decides the exit status.  SIGINT/SIGTERM, disk full and other failures are
    recorded in result.json as `dm21cli.jobs.run.run_job` records them, with the steps
    finished so far.  resume_command: the command that continues this optimisation, named
    by the messages of an interruption and of maxiter (default `restart_command` of the
    spec); interrupted_hint: what an interruption's message says instead, and then no
    command is named (a relaxed scan's point: the scan's own way to continue).
    start_hessian: a transition-state search's (``opt.transition``) first Hessian, a callable
    (spec, coords_bohr (N, 3), folder, log) -> (Hessian (3N, 3N) Eh/bohr^2, its
    classification in words); `dm21cli.jobs.freq.ts.run_ts` passes dm21 freq's.
    """
    t_start = time.perf_counter()
    res = resources.resolve(spec.resources.threads, spec.memory_mb())
    resources.apply_threads(res["threads"])
    network = load_network(spec, checkpoints)
    if network is not None:
        network.workers = res["threads"]
    mol0 = build_molecule(spec, max_memory_mb=res["memory_mb"])
    need = memory.estimate(spec, mol0, res["threads"])
    memory.check(res["memory_mb"], need, res["memory_source"])
    previous = previous_optimisation(spec) if restart else None
    if interrupted_hint is None:
        resume_command = resume_command or restart_command(spec)
    else:  # (a scan's point: no dm21 opt command continues it)
        resume_command = None

    with tempfile.TemporaryDirectory(prefix="dm21-opt-") as scratch:
        guess_chk = None
        chk_source = previous["chkfile"] if previous else spec.guess_chkfile()
        if chk_source is not None:
            # copy first: it may live in the directory an overwrite (or restart) moves aside
            guess_chk = Path(scratch) / "guess.chk"
            shutil.copyfile(chk_source, guess_chk)
        jobdir = JobDirectory(spec.output_path(), overwrite=overwrite or previous is not None,
                              inputs=input_files(spec))
        jobdir.prepare()
        run = Run(spec, jobdir, res, network, reporter, t_start)
        run.routine = "dm21cli.jobs.opt.run_opt"
        opt = _Optimisation(spec, run, mol0, need, guess_chk, previous, Path(scratch),
                            resume_command)
        opt.start_hessian_provider = start_hessian
        run.failure_fields = opt.failure_fields
        run.restart_hint = interrupted_hint or (
            f"the steps so far are in {jobdir.file(FILES['result'])} and "
            f"{jobdir.file(OPT_FILES['trajectory'])}; continue with '{resume_command}'")

        def compute() -> dict:
            with pyscf_warnings_only_in_log(), opt.geometric_log():
                return opt.execute()

        return run.execute(compute)


def restart_command(spec, file: str | None = None, options: list[str] | None = None) -> str:
    """``dm21 opt FILE [OPTIONS] --restart -o DIR``: the command that continues the optimisation
    of `spec` in its output directory.  file: the input as the user named it (default: the
    spec's source file); options: the command-line options that shaped the spec."""
    name = file or (str(spec.source_path) if spec.source_path is not None else "FILE")
    words = ["dm21", "opt", name, *(options or []), "--restart", "-o", str(spec.output_path())]
    return shlex.join(words)


def _restart_key(resolved: dict) -> dict:
    """What must not change for a restart: the resolved input without names, folders,
    resources, output files, the geometry, the starting guess and the limits on cycles,
    attempts and iterations (none of which changes a converged result)."""
    key = {k: v for k, v in resolved.items() if k not in ("job", "resources", "outputs")}
    key["molecule"] = {k: v for k, v in (key.get("molecule") or {}).items() if k != "xyz"}
    key["scf"] = {k: v for k, v in (key.get("scf") or {}).items()
                  if k not in ("guess", "max_cycle", "max_attempts")}
    key["opt"] = {k: v for k, v in (key.get("opt") or {}).items() if k != "maxiter"}
    return json.loads(json.dumps(key))


def previous_optimisation(spec) -> dict:
    """The optimisation to continue in the output directory of `spec` (``--restart``).

    From result.json when there is one (the history of every step, the initial geometry),
    else, after SIGKILL or a full disk, from the last complete frame of trajectory.xyz
    (`read_trajectory`) of a folder whose input.resolved.yaml is this input's.  Returns
    {"path", "history", "geometry_bohr" (None: no step finished), "initial_geometry_bohr",
    "chkfile" (None: none usable), "source"}.  InputError (exit 2) when there is nothing
    to continue (no directory, an empty one); OutputExistsError (exit 5) for a directory
    holding a converged optimisation, another input's, or no optimisation.
    """
    path = spec.output_path()
    if not path.is_dir() or not any(p for p in path.iterdir() if not p.name.startswith(".")):
        what = "is empty" if path.is_dir() else "does not exist"
        raise InputError(f"{path} {what}: there is no optimisation to continue; start one "
                         f"without --restart", field="--restart")
    try:
        result = fields(json.loads((path / FILES["result"]).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        result = None
    if isinstance(result, dict):
        previous = _from_result(spec, path, result)
    else:
        previous = _from_trajectory(spec, path)
    history = previous["history"]
    previous["geometry_bohr"] = np.array(history[-1]["geometry_bohr"]) if history else None
    chk = path / FILES["chkfile"]
    previous["chkfile"] = chk if _readable_chkfile(chk) else None
    return previous


def _no_optimisation(path: Path) -> OutputExistsError:
    return OutputExistsError(f"output directory {path} holds no geometry optimisation to "
                             f"restart; use --overwrite to replace it or -o to choose another")


def _check_same_input(path: Path, resolved: dict, symbols, spec) -> None:
    """OutputExistsError unless `resolved` (the folder's resolved input) and `symbols` (its
    atoms) are those of `spec`, up to what a restart may change (`_restart_key`)."""
    if symbols != spec.molecule.symbols or \
            _restart_key(resolved) != _restart_key(spec.to_resolved_dict()):
        raise OutputExistsError(f"output directory {path} holds an optimisation of another input "
                                f"(molecule, basis, functional, SCF or opt settings differ); use "
                                f"--overwrite to replace it or -o to choose another")


def _from_result(spec, path: Path, result: dict) -> dict:
    opt = result.get("optimization")
    if not isinstance(opt, dict):
        raise _no_optimisation(path)
    _check_same_input(path, result.get("input") or {}, (result.get("molecule") or {}).get("symbols"),
                      spec)
    if result.get("status") == "success":
        raise OutputExistsError(f"output directory {path} holds a converged optimisation: nothing "
                                f"to restart; use --overwrite to start again or -o for another "
                                f"directory")
    history = [h for h in opt.get("history") or [] if h.get("geometry_bohr") is not None]
    initial = opt.get("initial_geometry_bohr") or (history[0]["geometry_bohr"] if history else None)
    return {"path": path, "history": history, "initial_geometry_bohr": initial,
            "source": FILES["result"]}


def _from_trajectory(spec, path: Path) -> dict:
    """The steps of an optimisation that left no result.json (SIGKILL, a full disk)."""
    import yaml

    try:
        resolved = yaml.safe_load((path / FILES["input"]).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        resolved = None
    if not isinstance(resolved, dict) or (resolved.get("job") or {}).get("task") != "opt":
        raise _no_optimisation(path)
    xyz = str((resolved.get("molecule") or {}).get("xyz") or "")
    _check_same_input(path, resolved, [line.split()[0] for line in xyz.splitlines() if line.split()],
                      spec)
    history = read_trajectory(path / OPT_FILES["trajectory"], spec.molecule.symbols)
    initial = history[0]["geometry_bohr"] if history and history[0]["step"] == 1 else None
    return {"path": path, "history": history, "initial_geometry_bohr": initial,
            "source": OPT_FILES["trajectory"]}


def _readable_chkfile(path: Path) -> bool:
    """Whether `path` is a PySCF chkfile with orbitals (a restart's starting density)."""
    if not path.is_file():
        return False
    try:
        import h5py

        with h5py.File(path, "r") as h5:
            return all(isinstance(h5.get(f"scf/{k}"), h5py.Dataset) for k in ("mo_coeff", "mo_occ"))
    except Exception:  # noqa: BLE001 - h5py raises OSError, KeyError, ... for broken files
        return False


#: trajectory.xyz's comment line: step, energy (Ha), largest gradient component (Ha/bohr), run
_FRAME_COMMENT = re.compile(r"step (\d+)\s+E = (\S+) Ha\s+max \|dE/dR\| = (\S+) Ha/bohr"
                            r"(?:\s+run (\d+))?")


def read_trajectory(path: Path, symbols: list[str]) -> list[dict]:
    """The complete frames of a trajectory.xyz as history entries (geometry in bohr).

    A frame is complete when it parses in full: the atom count and the symbols are those
    of `symbols`, every coordinate is a finite number, and its comment line names the step,
    its energy and its largest gradient component.  Reading stops at the first frame that
    is not (a truncated last frame is dropped).  A missing file has no frames.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError):
        return []
    natm = len(symbols)
    history: list[dict] = []
    k = 0
    while k + 2 + natm <= len(lines):
        match = _FRAME_COMMENT.match(lines[k + 1].strip())
        if lines[k].strip() != str(natm) or match is None:
            break
        rows = [line.split() for line in lines[k + 2:k + 2 + natm]]
        if any(len(row) != 4 for row in rows) or [row[0] for row in rows] != list(symbols):
            break
        try:
            coords = np.array([[float(x) for x in row[1:]] for row in rows])
            energy, gmax = float(match.group(2)), float(match.group(3))
        except ValueError:
            break
        if not (np.isfinite(coords).all() and math.isfinite(energy) and math.isfinite(gmax)):
            break
        history.append({"step": int(match.group(1)), "run": int(match.group(4) or 1),
                        "energy_hartree": energy, "gradient_max_hartree_per_bohr": gmax,
                        "scf_converged": True, "geometry_bohr": (coords * ANGSTROM_BOHR).tolist(),
                        "recovered_from": OPT_FILES["trajectory"]})
        k += 2 + natm
    return history


class _Optimisation:
    """One optimisation: the engine geomeTRIC calls, the history, the files."""

    def __init__(self, spec, run: Run, mol0, need: dict, guess_chk, previous: dict | None,
                 scratch: Path, resume_command: str):
        self.spec, self.run, self.mol0, self.need = spec, run, mol0, need
        self.settings = spec.opt_settings()
        self.scratch = scratch
        self.guess = guess_chk
        self.previous = previous
        self.resume_command = resume_command
        self.history: list[dict] = [dict(h) for h in previous["history"]] if previous else []
        self.run_number = 1 + max((int(h.get("run", 1)) for h in self.history), default=0)
        start = previous["geometry_bohr"] if previous and previous["geometry_bohr"] is not None \
            else mol0.atom_coords(unit="Bohr")
        self.start_bohr = np.asarray(start, dtype=float).reshape(-1, 3)
        #: where the optimisation began (its first run's input geometry), bohr
        initial = previous["initial_geometry_bohr"] if previous else None
        self.initial_bohr = np.asarray(initial if initial is not None else
                                       mol0.atom_coords(unit="Bohr"), dtype=float).reshape(-1, 3)
        self.step = None  # the latest step's Point (only the latest is kept: its caches are large)
        #: a transition-state search's first Hessian: (spec, coords_bohr, folder, log) ->
        #: (3N x 3N Hessian in Eh/bohr^2, its classification in words) (`run_opt`)
        self.start_hessian_provider = None
        self.step_coords: np.ndarray | None = None
        self.detail: RunLog | None = None
        self.message = ""
        #: the exception our own code (the engine, the step hook) raised inside geomeTRIC
        self.raised: BaseException | None = None

    # -- the record -----------------------------------------------------------------
    def record(self, converged: bool, message: str) -> dict:
        """result.json's ``optimization`` section."""
        import geometric

        opt = self.settings
        return {
            "optimizer": f"geomeTRIC {geometric.__version__}", "converged": bool(converged),
            "message": message, "maxiter": opt.maxiter, "coordsys": opt.coordsys,
            "transition": bool(opt.transition),
            "criteria": opt.criteria(),
            "constraints": opt.constraints.listed(),
            "constraints_text": [f"{mode} {line}" for mode, line in opt.constraints.lines()],
            "steps": len(self.history),
            "steps_this_run": sum(1 for h in self.history if h.get("run") == self.run_number),
            "initial_geometry_bohr": self.initial_bohr.tolist(),
            "restarted_from": None if self.previous is None else self._restarted_from(),
            "history": self.history,
        }

    def _restarted_from(self) -> str:
        """``step 3 of outputs/w`` (``..., from its trajectory.xyz`` without result.json)."""
        history, path = self.previous["history"], self.previous["path"]
        where = f"step {history[-1]['step']} of {path}" if history else f"{path} (no step finished)"
        if self.previous["source"] != FILES["result"]:
            where += f", from its {self.previous['source']}"
        return where

    def failure_fields(self) -> dict:
        """What result.json adds when the run fails or is interrupted: the steps so far."""
        files = dict(FILES)
        files.update(OPT_FILES)
        message = self.message or ("interrupted" if self.run.status == "interrupted" else
                                   "failed (see error)")
        return {"optimization": self.record(False, message), "files": files}

    # -- geomeTRIC's log ------------------------------------------------------------
    @contextlib.contextmanager
    def geometric_log(self):
        """geomeTRIC's own log lines (its step table, constraints) go to dm21.log only."""
        import logging

        run = self.run

        class _ToJobLog(logging.Handler):
            def emit(self, record):
                stream = run.log.stream
                if stream is None:
                    return
                with contextlib.suppress(Exception):
                    stream.write(_ANSI.sub("", record.getMessage()))
                    stream.flush()

        logger = logging.getLogger("geometric")
        handler = _ToJobLog(level=logging.INFO)
        saved = logger.propagate
        logger.addHandler(handler)
        logger.propagate = False  # no warnings through the root logger onto stderr
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.propagate = saved

    # -- the optimisation -----------------------------------------------------------
    def execute(self) -> dict:
        import geometric
        from geometric.errors import GeomOptNotConvergedError

        spec, run = self.spec, self.run
        log, res = run.log, run.res
        self.detail = RunLog(log.stream, _Quiet(log.reporter), log.path)
        log(f"dm21cli {__version__}: geometry optimisation of {spec.molecule.formula()} with "
            f"{spec.functional}/{spec.basis_label()} (charge {spec.molecule.charge}, multiplicity "
            f"{spec.molecule.multiplicity}); {res['threads']} threads ({res['threads_source']}), "
            f"{res['memory_mb']} MB ({res['memory_source']}); each step {memory.describe(self.need)}")
        opt = self.settings
        criteria = opt.criteria()
        log(f"geomeTRIC {geometric.__version__}, {opt.coordsys} coordinates; converged when every "
            f"criterion holds (convergence_set {criteria['convergence_set']}): energy change < "
            f"{criteria['convergence_energy']:.1e} Ha, RMS gradient < {criteria['convergence_grms']:.1e} "
            f"and max gradient < {criteria['convergence_gmax']:.1e} Ha/bohr, RMS displacement < "
            f"{criteria['convergence_drms']:.1e} and max displacement < "
            f"{criteria['convergence_dmax']:.1e} Angstrom; at most {opt.maxiter} iterations (maxiter)")
        for mode, line in opt.constraints.lines():
            log(f"constraint: {mode} {line}")
        if self.previous is not None:
            self._carry_over()
        elif self.guess is not None:
            log(f"initial guess from chkfile {spec.guess_chkfile()}")
        converged = False
        try:
            final = self._optimise()
            converged = True
            self.message = f"converged in {len(self.history)} steps"
            if self.step_coords is None or not np.allclose(final, self.step_coords, atol=1e-10):
                log("the converged geometry is not the last one computed: computing it again")
                with self.ours():
                    self.energy_gradient(final)
        except GeomOptNotConvergedError:
            self.message = (f"geometry not converged in {opt.maxiter} steps (opt.maxiter); raise "
                            f"maxiter" + (f", or continue with '{self.resume_command}'"
                                          if self.resume_command else ""))
        except _ScfNotConverged as exc:
            self.message = str(exc)
        except Exception as exc:
            if exc is self.raised:  # ours (an SCF failure, a full disk, ...): the run fails
                raise
            self.message = self._geometric_stopped(exc)
            log(self.message)
        return self._commit(converged)

    def _carry_over(self) -> None:
        """A restart: log where it continues from, and put the earlier steps' trajectory.xyz
        and the density it starts from (scf.chk) into the new folder at once, so that an
        interruption before its first step (SIGKILL included) leaves a folder that
        restarts again, with its trajectory where the messages say."""
        previous, log = self.previous, self.run.log
        history = previous["history"]
        if not history:
            log(f"restart from the input geometry: {previous['path']} holds no finished step")
        elif previous["source"] == FILES["result"]:
            log(f"restart from the last geometry of {previous['path']} (step {history[-1]['step']})"
                + (f", density from its {FILES['chkfile']}" if self.guess else ""))
        else:
            log(f"restart from the last complete frame of {previous['path'] / previous['source']} "
                f"(step {history[-1]['step']}; the folder has no {FILES['result']})"
                + (f", density from its {FILES['chkfile']}" if self.guess else ""))
        if history:
            self._write_trajectory()
        if self.guess is not None:
            write_bytes_atomic(self.run.jobdir.file(FILES["chkfile"]), Path(self.guess).read_bytes())

    def _geometric_stopped(self, exc: Exception) -> str:
        """The message of geomeTRIC's own failure (not converged); ComputeError before any step."""
        from geometric.errors import GeomOptStructureError

        text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        if "Cannot continue a constrained optimization" in text:
            reason = ("it could not take a step that holds the constraints (its step back to "
                      "Cartesian coordinates failed twice)")
        elif isinstance(exc, GeomOptStructureError):
            reason = f"{text} (a constrained dihedral became undefined)"
        else:
            reason = f"{exc.__class__.__name__}: {text}"
        if self.step is None:
            raise ComputeError(f"geomeTRIC stopped before the first step: {reason}") from exc
        return f"geomeTRIC stopped after {len(self.history)} steps: {reason}"

    def _optimise(self) -> np.ndarray:
        """geomeTRIC's optimisation from the start geometry; the final geometry (bohr)."""
        from geometric import nifty
        from geometric.engine import Engine
        from geometric.internal import (
            CartesianCoordinates,
            DelocalizedInternalCoordinates,
            PrimitiveInternalCoordinates,
        )
        from geometric.molecule import Molecule
        from geometric.optimize import Optimizer
        from geometric.params import OptParams
        from geometric.prepare import parse_constraints
        from geometric.step import calc_drms_dmax

        owner = self
        molecule = Molecule()
        molecule.elem = list(self.spec.molecule.symbols)
        molecule.xyzs = [self.start_bohr * nifty.bohr2ang]  # geomeTRIC's Molecule is in Angstrom
        molecule.build_topology()

        class _Engine(Engine):
            def calc_new(self, coords, dirname):
                with owner.ours():
                    energy, gradient = owner.energy_gradient(np.asarray(coords).reshape(-1, 3))
                return {"energy": energy, "gradient": gradient.ravel()}

        class _Optimizer(Optimizer):
            def evaluateStep(self):
                with owner.ours():
                    owner.on_geometric_step(self, calc_drms_dmax)
                return super().evaluateStep()

        systems = {"cart": (CartesianCoordinates, False, False),
                   "prim": (PrimitiveInternalCoordinates, True, False),
                   "dlc": (DelocalizedInternalCoordinates, True, False),
                   "hdlc": (DelocalizedInternalCoordinates, False, True),
                   "tric-p": (PrimitiveInternalCoordinates, False, False),
                   "tric": (DelocalizedInternalCoordinates, False, False)}
        cls, connect, addcart = systems[self.settings.coordsys]
        text = self.settings.constraints.geometric_text()
        constraints = cvals = None
        if text:
            constraints, values = parse_constraints(molecule, text)
            cvals = values[0]
        ic = cls(molecule, build=True, connect=connect, addcart=addcart, constraints=constraints,
                 cvals=cvals)
        extra = {}
        if self.settings.transition:  # from dm21's Hessian at the start; geomeTRIC updates it
            # (dm21 freq analyses the Hessian; geomeTRIC's own analysis writes files)
            extra = {"transition": True, "hessian": f"file:{self.start_hessian()}",
                     "frequency": False}
        params = OptParams(maxiter=self.settings.maxiter,
                           **{k: v for k, v in self.settings.criteria().items()}, **extra)
        engine = _Engine(molecule)
        optimizer = _Optimizer(self.start_bohr.ravel().copy(), molecule, ic, engine,
                               str(self.scratch), params)
        optimizer.optimizeGeometry()
        return np.asarray(optimizer.X, dtype=float).reshape(-1, 3)

    def start_hessian(self) -> Path:
        """A transition-state search's first Hessian, from `start_hessian_provider` (`run_opt`'s
        start_hessian) at the starting geometry, its files in the folder's TS_HESSIAN_DIR;
        written for geomeTRIC as text (3N x 3N, Eh/bohr^2); returns the file."""
        if self.start_hessian_provider is None:
            raise InputError("a transition-state search needs its first Hessian: run it with "
                             "dm21cli.jobs.freq.ts.run_ts (dm21 opt --ts)", field="opt.transition")
        folder = self.run.jobdir.path / TS_HESSIAN_DIR
        self.run.log(f"transition-state search (geomeTRIC's transition): its first Hessian by "
                     f"central differences of gradients at the starting geometry, in {folder}")
        with self.ours():
            hessian, verdict = self.start_hessian_provider(self.spec, self.start_bohr, folder,
                                                           self.detail)
        self.run.log(f"  at the start: {verdict}")
        path = self.scratch / "hessian.txt"
        np.savetxt(path, np.asarray(hessian, dtype=float))
        return path

    @contextlib.contextmanager
    def ours(self):
        """Code of ours called by geomeTRIC: what it raises is remembered (`raised`), so that
        it is not taken for geomeTRIC's own failure."""
        try:
            yield
        except BaseException as exc:
            self.raised = exc
            raise

    def energy_gradient(self, coords_bohr: np.ndarray) -> tuple[float, np.ndarray]:
        """One step: the SCF and the nuclear gradient at `coords_bohr` (natm, 3)."""
        interrupts.check()
        spec, run = self.spec, self.run
        detail = self.detail
        t0 = time.perf_counter()
        n = len(self.history) + 1
        # release the previous step (its exchange integrals) before this one sizes its caches
        self.step = None
        gc.collect()
        mol = self.mol0.set_geom_(coords_bohr, unit="Bohr", inplace=False)
        mol.stdout, mol.verbose = detail.stream, 4
        detail(f"step {n}: geometry (Angstrom) "
               + "; ".join(f"{s} {x:.6f} {y:.6f} {z:.6f}" for s, (x, y, z)
                           in zip(spec.molecule.symbols, coords_bohr * BOHR_ANGSTROM)))
        # scf.chk holds the density a restart starts from, at the last geometry of the history:
        # the first step of a run writes its states as they come (its geometry is that one);
        # a later step's state replaces the file only once the step is in the history
        interim = self.step_coords is None
        checkpoint = ScfCheckpoint(run.jobdir.file(FILES["chkfile"]), mol, interim=interim)
        run.checkpoint = checkpoint if interim else None
        step = compute_point(spec, mol, network=run.network, memory_mb=run.res["memory_mb"],
                             log=detail, checkpoint=checkpoint, guess=Guess(chkfile=self.guess),
                             gradient=True)
        self.step, self.step_coords = step, np.array(coords_bohr, dtype=float)
        props = step.props
        entry = {"step": n, "run": self.run_number, "energy_hartree": props["return_energy"],
                 "scf_converged": step.converged, "scf_iterations": props["scf_iterations"],
                 "scf_attempts": len(step.attempts), "geometry_bohr": coords_bohr.tolist()}
        if not step.converged:
            entry["wall_s"] = time.perf_counter() - t0
            self.history.append(entry)
            checkpoint.write()  # (a restart continues from this geometry and state)
            run.log(f"step {n}: {step.failure}: the optimisation stops")
            raise _ScfNotConverged(f"step {n}: {step.failure}")
        g = np.asarray(props["gradient_hartree_per_bohr"], dtype=float)
        entry.update({"gradient_max_hartree_per_bohr": props["gradient_max_hartree_per_bohr"],
                      "gradient_rms_hartree_per_bohr": props["gradient_rms_hartree_per_bohr"],
                      "gradient_norm_hartree_per_bohr": props["gradient_norm_hartree_per_bohr"],
                      "wall_s": time.perf_counter() - t0})
        previous = self.history[-1]["energy_hartree"] if self.history else None
        self.history.append(entry)
        self._write_trajectory()
        checkpoint.write()
        self.guess = run.jobdir.file(FILES["chkfile"])  # the next step starts from this density
        change = "" if previous is None else f" ({entry['energy_hartree'] - previous:+.2e})"
        run.log(f"step {n}: E = {entry['energy_hartree']:.10f} Ha{change}, gradient norm "
                f"{entry['gradient_norm_hartree_per_bohr']:.2e} (max {entry['gradient_max_hartree_per_bohr']:.2e}"
                f", RMS {entry['gradient_rms_hartree_per_bohr']:.2e}) Ha/bohr; "
                f"{entry['scf_iterations']} SCF cycles, {entry['wall_s']:.1f} s")
        return float(entry["energy_hartree"]), g

    def on_geometric_step(self, optimizer, calc_drms_dmax) -> None:
        """geomeTRIC's own convergence numbers of a step (its per-atom gradient norms,
        projected on the constraints), logged and kept with the step they belong to."""
        grms, gmax = optimizer.calcGradNorm()
        drms, dmax = calc_drms_dmax(optimizer.X, optimizer.Xprev)
        change = float(optimizer.E - optimizer.Eprev)
        criteria = self.settings.criteria()
        met = {"energy": abs(change) < criteria["convergence_energy"],
               "grms": grms < criteria["convergence_grms"],
               "gmax": gmax < criteria["convergence_gmax"],
               "drms": drms < criteria["convergence_drms"],
               "dmax": dmax < criteria["convergence_dmax"]}
        numbers = {"energy_change_hartree": change, "grms_hartree_per_bohr": float(grms),
                   "gmax_hartree_per_bohr": float(gmax), "drms_angstrom": float(drms),
                   "dmax_angstrom": float(dmax), "criteria_met": [k for k, v in met.items() if v]}
        if self.history and self.step_coords is not None and \
                np.allclose(np.asarray(optimizer.X).reshape(-1, 3), self.step_coords, atol=1e-10):
            self.history[-1]["geometric"] = numbers
        self.run.log(f"  geomeTRIC: energy change {change:+.2e} Ha, gradient RMS {grms:.2e} max "
                     f"{gmax:.2e} Ha/bohr, displacement RMS {drms:.2e} max {dmax:.2e} Angstrom; "
                     f"{sum(met.values())} of 5 criteria met"
                     + (f" ({', '.join(numbers['criteria_met'])})" if numbers["criteria_met"] else ""))

    # -- files ----------------------------------------------------------------------
    def _frame(self, coords_bohr, comment: str) -> str:
        symbols = self.spec.molecule.symbols
        coords = np.asarray(coords_bohr, dtype=float).reshape(-1, 3) * BOHR_ANGSTROM
        return (f"{len(symbols)}\n{comment}\n"
                + "".join(f"{s:<2} {x:16.10f} {y:16.10f} {z:16.10f}\n"
                          for s, (x, y, z) in zip(symbols, coords)))

    def _write_trajectory(self) -> None:
        """trajectory.xyz: one frame per step whose SCF converged (Angstrom), atomically; the
        comment line names the step, its energy, its largest gradient component and the run
        that computed it (what `read_trajectory` reads back)."""
        frames = [self._frame(h["geometry_bohr"],
                              f"step {h['step']}  E = {h['energy_hartree']:.10f} Ha  max |dE/dR| = "
                              f"{h['gradient_max_hartree_per_bohr']:.3e} Ha/bohr  run "
                              f"{h.get('run', 1)}  ({self.spec.job.name}, dm21 opt)")
                  for h in self.history if h.get("gradient_max_hartree_per_bohr") is not None]
        write_text_atomic(self.run.jobdir.file(OPT_FILES["trajectory"]), "".join(frames))

    def _commit(self, converged: bool) -> dict:
        spec, run = self.spec, self.run
        jobdir, log = run.jobdir, run.log
        step = self.step
        t0 = time.perf_counter()
        result = base_result(spec, run.res, run.network)
        result["driver"] = "gradient"
        result["provenance"]["routine"] = run.routine
        if step is None:  # (cannot happen: geomeTRIC computes the first step before anything)
            raise RuntimeError("the optimisation computed no step")
        props = step.props
        coords = self.step_coords
        converged = bool(converged and step.converged)
        result["molecule"]["geometry_bohr"] = coords.tolist()
        result.update({"success": converged, "converged": converged,
                       "status": "success" if converged else "not-converged",
                       "return_energy": props["return_energy"], "properties": props})
        result["optimization"] = self.record(converged, self.message)
        if not converged:
            result["error"] = {"error_type": "convergence_error", "error_message": self.message}
        if step.converged:
            log_gradient_table(self.detail, spec.molecule.symbols, props["gradient_hartree_per_bohr"])
        self._write_trajectory()
        write_text_atomic(jobdir.file(OPT_FILES["final"]), self._frame(
            coords, f"{'optimised' if converged else 'last (NOT converged)'} geometry, step "
                    f"{self.history[-1]['step']}  E = {props['return_energy']:.10f} Ha  "
                    f"({spec.job.name}, dm21 opt)"))
        files = {"result": FILES["result"], "summary": FILES["summary"], "input": FILES["input"],
                 "log": FILES["log"], "chkfile": FILES["chkfile"], **OPT_FILES}
        if spec.outputs.molden:
            write_molden(jobdir.file(FILES["molden"]), step.mf.mol, step.mf.mo_energy,
                         step.mf.mo_coeff, step.mf.mo_occ)
            files["molden"] = FILES["molden"]
        result["files"] = files
        timings = {"steps": float(sum(h.get("wall_s", 0.0) for h in self.history
                                      if h.get("run") == self.run_number)),
                   "outputs": time.perf_counter() - t0,
                   "total": time.perf_counter() - run.t_start}
        result["timings_s"] = timings
        document = run.commit(result)  # the commit point: from here on the result is on disk

        if spec.outputs.cube_requests():
            t0 = time.perf_counter()
            files["cubes"] = write_cube_files(jobdir, spec, step.mf, log)
            timings["cubes"] = time.perf_counter() - t0
            timings["total"] = time.perf_counter() - run.t_start
            document = run.commit(result)
        log(f"{'converged' if converged else 'NOT CONVERGED'}: {self.message}; E = "
            f"{props['return_energy']:.10f} Ha; results in {jobdir.path}")
        return finite(document)
