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
point, ``.running``, overwrite, interruption).  The engine and the optimiser that
reports each step are `dm21cli.jobs.geometric_engine`'s.

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
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from dm21cli import __version__
from dm21cli.core import interrupts, resources
from dm21cli.core.errors import ComputeError, InputError
from dm21cli.core.units import BOHR_ANGSTROM
from dm21cli.io.outputs.atomic import finite, write_bytes_atomic, write_text_atomic
from dm21cli.io.outputs.checkpoint import ScfCheckpoint
from dm21cli.io.outputs.jobdir import JobDirectory
from dm21cli.io.outputs.orbitals import write_molden
from dm21cli.jobs import memory
from dm21cli.jobs.build import build_molecule, load_network, start_notes
from dm21cli.jobs.opt_restart import OPT_FILES, previous_optimisation, restart_command
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

#: a transition-state search's folders: the Hessian it starts from, and those recomputed
#: every opt.hessian_every steps (one folder per step, named by it: step-007)
TS_HESSIAN_DIR = "start-hessian"
TS_HESSIANS_DIR = "hessians"

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
    start_hessian: the first Hessian of a transition-state search (``opt.transition``) or a
    reaction path (``opt.irc``), a callable (spec, coords_bohr (N, 3), folder, log) ->
    (Hessian (3N, 3N) Eh/bohr^2, its classification as a transition state's: the
    ``vibrations.classification`` dict of dm21 freq); `dm21cli.jobs.freq.ts.run_ts` passes
    dm21 freq's.
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
    # a reaction path walks again from its transition state (the input's geometry), with the
    # Hessian there from the folder it continues (its start-hessian/, resumed, not recomputed)
    irc_again = previous is not None and spec.opt_settings().irc
    if irc_again:
        previous = None
    # a transition-state search stopped in its first Hessian (no step finished) continues that
    # Hessian: the same starting geometry, its finished points read from start-hessian/
    first_hessian_again = (previous is not None and spec.opt_settings().transition
                           and previous["geometry_bohr"] is None
                           and _same_geometry(previous["initial_geometry_bohr"],
                                              mol0.atom_coords(unit="Bohr")))
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
        jobdir = JobDirectory(spec.output_path(),
                              overwrite=overwrite or previous is not None or irc_again,
                              inputs=input_files(spec))
        jobdir.prepare()
        kept = (jobdir.old_path / TS_HESSIAN_DIR
                if (irc_again or first_hessian_again) and jobdir.old_path else None)
        if kept is not None and kept.is_dir():
            shutil.copytree(kept, jobdir.path / TS_HESSIAN_DIR,
                            ignore=shutil.ignore_patterns(".running*"))
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


def _same_geometry(recorded, coords_bohr: np.ndarray) -> bool:
    """Whether `recorded` (a geometry from result.json, bohr, or None) is `coords_bohr`
    (N, 3) to 1e-8 bohr (the round trip through Angstrom text)."""
    if recorded is None:
        return False
    recorded = np.asarray(recorded, dtype=float).reshape(-1, 3)
    return recorded.shape == coords_bohr.shape and bool(
        np.allclose(recorded, coords_bohr, rtol=0, atol=1e-8))


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
        #: the first Hessian of a transition-state search or a reaction path: (spec,
        #: coords_bohr, folder, log) -> (3N x 3N Hessian in Eh/bohr^2, its classification)
        self.start_hessian_provider = None
        #: geomeTRIC's optimiser, once made (an IRC labels each step with its leg)
        self.optimizer = None
        #: a reaction path: leg -> whether it converged to its minimum
        self.irc_legs: dict[str, bool] = {}
        #: the exact Hessians of a transition-state search: {"step", "folder", "verdict"}
        self.hessians: list[dict] = []
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
            **({"hessian_every": opt.hessian_every} if opt.transition else {}),
            **({"irc": True} if opt.irc else {}),
            **({"hessians": self.hessians} if opt.transition or opt.irc else {}),
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
        for note in start_notes(spec):
            log(note)
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
            if opt.irc:
                converged = self.irc_legs.get("forward", False)
                self.message = self._irc_message()
            if self.step_coords is None or not np.allclose(final, self.step_coords, atol=1e-10):
                log("the converged geometry is not the last one computed: computing it again")
                with self.ours():
                    self.energy_gradient(final)
        except GeomOptNotConvergedError:
            if opt.irc:
                self.message = self._irc_message()
            else:
                self.message = (f"geometry not converged in {opt.maxiter} steps (opt.maxiter); "
                                f"raise maxiter" + (f", or continue with '{self.resume_command}'"
                                                    if self.resume_command else ""))
        except _ScfNotConverged as exc:
            self.message = str(exc)
        except Exception as exc:
            if exc is self.raised:  # ours (an SCF failure, a full disk, ...): the run fails
                raise
            self.message = self._geometric_stopped(exc)
            log(self.message)
        return self._commit(converged)

    def _irc_message(self) -> str:
        """How a reaction path ended: each leg's points and whether it reached its minimum."""
        parts = []
        for leg in ("forward", "backward"):
            n = sum(1 for h in self.history if h.get("leg") == leg and h.get("accepted"))
            done = self.irc_legs.get(leg, False)
            parts.append(f"the {leg} leg {'reached its minimum' if done else 'did NOT reach its minimum'} "
                         f"({n} points)")
        message = "reaction path from the transition state: " + "; ".join(parts)
        if not all(self.irc_legs.get(leg, False) for leg in ("forward", "backward")):
            message += (f"; each leg has at most opt.maxiter ({self.settings.maxiter}) steps: raise "
                        f"it" + (f" and walk the path again with '{self.resume_command}' (the "
                                 f"Hessian at the transition state is kept)"
                                 if self.resume_command else ""))
        return message

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
        from geometric.internal import (
            CartesianCoordinates,
            DelocalizedInternalCoordinates,
            PrimitiveInternalCoordinates,
        )
        from geometric.molecule import Molecule
        from geometric.params import OptParams
        from geometric.prepare import parse_constraints

        from dm21cli.jobs.geometric_engine import ReportingOptimizer, StepEngine

        molecule = Molecule()
        molecule.elem = list(self.spec.molecule.symbols)
        molecule.xyzs = [self.start_bohr * nifty.bohr2ang]  # geomeTRIC's Molecule is in Angstrom
        molecule.build_topology()

        systems = {"cart": (CartesianCoordinates, False, False),
                   "prim": (PrimitiveInternalCoordinates, True, False),
                   "dlc": (DelocalizedInternalCoordinates, True, False),
                   "hdlc": (DelocalizedInternalCoordinates, False, True),
                   "tric-p": (PrimitiveInternalCoordinates, False, False),
                   "tric": (DelocalizedInternalCoordinates, False, False)}
        coordsys = self.settings.coordsys
        if self.settings.irc and coordsys == "tric" and len(molecule.molecules) == 1:
            coordsys = "dlc"  # (as geomeTRIC's own IRC: TRIC's small eigenvalues fail it)
            self.run.log("reaction path of one molecule: geomeTRIC's dlc coordinates, as its "
                         "own IRC does (tric fails there)")
        cls, connect, addcart = systems[coordsys]
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
        elif self.settings.irc:  # both legs from the transition state, from dm21's Hessian
            # there (geomeTRIC analyses it for the imaginary mode: its files go to scratch)
            extra = {"irc": True, "irc_direction": "both",
                     "hessian": f"file:{self.start_hessian()}",
                     "xyzout": str(self.scratch / "geometric_irc.xyz")}
        params = OptParams(maxiter=self.settings.maxiter,
                           **{k: v for k, v in self.settings.criteria().items()}, **extra)
        engine = StepEngine(molecule, self)
        optimizer = ReportingOptimizer(self.start_bohr.ravel().copy(), molecule, ic, engine,
                                       str(self.scratch), params, owner=self)
        self.optimizer = optimizer
        optimizer.optimizeGeometry()
        if self.settings.irc:  # the backward leg ended the run: it converged
            self.irc_legs["backward"] = True
        return np.asarray(optimizer.X, dtype=float).reshape(-1, 3)

    def on_irc_step(self, optimizer, leg_before) -> None:
        """A reaction path: when geomeTRIC turns from the forward leg to the backward one,
        whether the forward leg converged to its minimum (every criterion met at its last
        step; else it ran out of steps, opt.maxiter per leg)."""
        if leg_before == 1 and optimizer.IRC_info.get("direction") == -1:
            met = self.history[-1].get("geometric", {}).get("criteria_met", [])
            self.irc_legs["forward"] = len(met) == 5
            ended = ("reached its minimum" if len(met) == 5 else
                     "ran out of steps (opt.maxiter per leg) before its minimum")
            steps = sum(1 for h in self.history if h.get("leg") == "forward")
            self.run.log(f"reaction path: the forward leg {ended} after {steps} steps; the "
                         f"backward leg starts at the transition state")

    def on_accepted_step(self, optimizer) -> None:
        """A transition-state search with opt.hessian_every N: after every N-th accepted step
        (counted from the last exact Hessian), the Hessian at that geometry from
        `start_hessian_provider`, handed to geomeTRIC as its own recomputation would be: the
        files it reads before computing one (``hessian/hessian.txt`` and ``coords.xyz`` in its
        folder), and its ``recalcHess``, which makes it replace its updated Hessian."""
        every = self.settings.hessian_every
        if not (self.settings.transition and every):
            return
        from geometric.optimize import OPT_STATE

        if optimizer.state in (OPT_STATE.CONVERGED, OPT_STATE.FAILED):
            return
        last = self.hessians[-1]["step"]
        step = self.history[-1]["step"]
        if step - last < every:
            return
        coords = np.asarray(optimizer.X, dtype=float).reshape(-1, 3)
        folder = self.run.jobdir.path / TS_HESSIANS_DIR / f"step-{step:03d}"
        self.run.log(f"transition-state search: the Hessian again after {step - last} steps "
                     f"(opt.hessian_every {every}), at the geometry of step {step}, in {folder}")
        hessian, verdict = self.start_hessian_provider(self.spec, coords, folder, self.detail)
        verdict = verdict["message"]
        self.run.log(f"  at step {step}: {verdict}")
        self.hessians.append({"step": step, "folder": str(folder.relative_to(self.run.jobdir.path)),
                              "verdict": verdict})
        target = self.scratch / "hessian"
        target.mkdir(exist_ok=True)
        np.savetxt(target / "hessian.txt", np.asarray(hessian, dtype=float))
        write_text_atomic(target / "coords.xyz", self._frame(coords, f"step {step}"))
        optimizer.recalcHess = True

    def start_hessian(self) -> Path:
        """The first Hessian of a transition-state search or a reaction path, from
        `start_hessian_provider` (`run_opt`'s start_hessian) at the starting geometry, its files
        in the folder's TS_HESSIAN_DIR; written for geomeTRIC as text (3N x 3N, Eh/bohr^2);
        returns the file.  A reaction path must start at a transition state (exactly one
        imaginary mode): else ComputeError, before any step."""
        irc = self.settings.irc
        if self.start_hessian_provider is None:
            raise InputError(f"a {'reaction path' if irc else 'transition-state search'} needs "
                             f"its first Hessian: run it with dm21cli.jobs.freq.ts.run_ts "
                             f"(dm21 opt {'--irc' if irc else '--ts'})",
                             field="opt.irc" if irc else "opt.transition")
        folder = self.run.jobdir.path / TS_HESSIAN_DIR
        what = ("reaction path (geomeTRIC's IRC): the Hessian at the transition state it starts "
                "from" if irc else "transition-state search (geomeTRIC's transition): its first "
                "Hessian")
        self.run.log(f"{what}, by central differences of gradients at the starting geometry")
        with self.ours():
            hessian, verdict = self.start_hessian_provider(self.spec, self.start_bohr, folder,
                                                           self.detail)
        where = Path(verdict.get("folder", folder))
        self.run.log(f"  at the start: {verdict['message']} (the Hessian's files: {where})")
        if where.resolve().is_relative_to(self.run.jobdir.path.resolve()):
            where = where.resolve().relative_to(self.run.jobdir.path.resolve())
        self.hessians.append({"step": len(self.history) + 1, "folder": str(where),
                              "verdict": verdict["message"]})
        if irc and not verdict.get("ok"):
            self.raised = ComputeError(
                f"a reaction path starts at a transition state, and the starting geometry is "
                f"{verdict['message']}: find the transition state first (dm21 opt --ts, or "
                f"--ts --irc for both); its Hessian is in {folder}")
            raise self.raised
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
        if self.settings.irc:  # which leg of the reaction path (the first point: the TS)
            leg = "ts" if not any(h.get("leg") for h in self.history) else (
                "forward" if self.optimizer.IRC_info.get("direction") == 1 else "backward")
            entry.update({"leg": leg, "accepted": leg == "ts"})
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

    def on_geometric_step(self, optimizer) -> None:
        """geomeTRIC's own convergence numbers of a step (its per-atom gradient norms,
        projected on the constraints), logged and kept with the step they belong to."""
        grms, gmax = optimizer.calcGradNorm()
        from geometric.step import calc_drms_dmax

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

    def _write_irc(self, result: dict) -> dict:
        """A reaction path's files (`dm21cli.jobs.irc`: irc.xyz, irc.csv) and result.json's
        ``optimization.irc``; returns the files written."""
        from dm21cli.jobs.irc import (
            IRC_FILES,
            path_csv,
            path_points,
            path_record,
            path_xyz,
        )

        symbols = list(self.spec.molecule.symbols)
        points = path_points(self.history, symbols)
        record = path_record(points, self.irc_legs)
        result["optimization"]["irc"] = record
        if not points:
            return {}
        jobdir = self.run.jobdir
        write_text_atomic(jobdir.file(IRC_FILES["path"]), path_xyz(points, symbols, self.spec.job.name))
        write_text_atomic(jobdir.file(IRC_FILES["table"]), path_csv(points))
        for leg, end in record["legs"].items():
            if end["end_step"] is not None:
                self.run.log(f"reaction path, {leg} leg: {end['points']} points, its end "
                             f"(step {end['end_step']}) {end['barrier_kcal_mol']:.3f} kcal/mol "
                             f"below the transition state"
                             + ("" if end["converged"] else " (NOT at its minimum)"))
        return dict(IRC_FILES)

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
        files = {"result": FILES["result"], "summary": FILES["summary"], "input": FILES["input"],
                 "log": FILES["log"], "chkfile": FILES["chkfile"], **OPT_FILES}
        if self.settings.irc:
            files.update(self._write_irc(result))
        write_text_atomic(jobdir.file(OPT_FILES["final"]), self._frame(
            coords, f"{'optimised' if converged else 'last (NOT converged)'} geometry, step "
                    f"{self.history[-1]['step']}  E = {props['return_energy']:.10f} Ha  "
                    f"({spec.job.name}, dm21 opt)"))
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
