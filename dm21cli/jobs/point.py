"""One geometry: the SCF, its final energy and checks, properties, and the nuclear gradient.

`compute_point` is the single path every job takes at a geometry: `dm21 run`
(`dm21cli.jobs.run.run_job`, and through it QCEngine and every point of a rigid
scan), every step of `dm21 opt` and of a relaxed scan, the ASE calculator, and
every displaced geometry of a Hessian.  It builds the grid and the SCF object
(a fresh `DM21XC`: the exchange integrals of this geometry), chooses the
starting density (`Guess`: a chkfile, the orbitals of the same atoms at another
geometry, the warm start, or the SCF's own guess), runs the escalation ladder,
evaluates DM21's final energy on the full grid with its checks, adds D3(BJ),
and collects the properties.  `Point.nuclear_gradient` adds the gradient.

A point's result is not written anywhere here: the caller owns the files (an
optional `checkpoint` receives every SCF state, for a restart file).  Atomic
units throughout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from dm21cli.jobs.build import (
    build_grids,
    build_scf,
    dispersion_energy,
    prepare_grids,
    warm_start,
)
from dm21cli.jobs.result import final_dm21_energy, properties
from dm21cli.scf.guess import carried_density, guess_from_chkfile, orbitals_of

Log = Callable[[str], None]

#: DM21 phases that get a log line when an evaluation starts them (the long ones).
LOGGED_PHASES = {"integral memory": "mapping the memory of the exchange-integral cache",
                 "exchange integrals": "computing the exchange integrals (grid points in {blocks})"}
#: A PySCF functional's grid pruned by ``scf.small_rho_cutoff`` at the starting density is
#: chosen again from the converged density, and the SCF continued from it, at most this
#: many times, while the points pruned hold more than small_rho_cutoff electrons there.
MAX_GRID_REPRUNES = 3


def dm21_progress(log: Log):
    """A `DM21XC.progress` hook: a log line when an evaluation starts one of
    LOGGED_PHASES, and every phase to the reporter's live status line if the log has
    a reporter with one (``log.reporter.status(text)``, see `dm21cli.cli.common`)."""
    status = getattr(getattr(log, "reporter", None), "status", None)
    logged: set = set()

    def progress(step: str, phase: str, block: int, nblocks: int) -> None:
        if phase in LOGGED_PHASES and (step, phase) not in logged:
            logged.add((step, phase))
            blocks = f"{nblocks} block{'s' if nblocks > 1 else ''}"
            log(f"  DM21 {step}: " + LOGGED_PHASES[phase].format(blocks=blocks))
        if status is not None:
            status(f"DM21 {step}: {phase}, block {block + 1} of {nblocks}")

    return progress


@dataclass
class Guess:
    """Where the SCF at a geometry starts.

    chkfile: a PySCF chkfile (`dm21cli.scf.guess.guess_from_chkfile`: its orbitals,
    orthonormalised when written at another geometry, occupied again for fixed
    occupations); orbitals: (mo_coeff, mo_occ) of the same atoms converged at another
    geometry (`carried_density`); warm_orbitals:
    the warm start's orbitals there.  With orbitals and warm_orbitals, a DM21 point
    runs its warm start from the carried warm orbitals (a few cycles) and starts DM21
    from that density plus the carried difference between DM21's and the warm start's
    densities: that difference changes slowly with the geometry, the density itself
    does not.  Measured (water, def2-SVP and STO-3G, grid level 1; one H moved by d,
    the other by d/2), DM21 evaluations with this start / with the carried DM21
    density alone / from a cold warm start: d = 0.0002 A 2 / 2 / 3; 0.005 and 0.02 A
    3 / 3 / 3; 0.2 A 3 / 4 / 3.  Nothing given: the warm start for DM21 (unless
    ``scf.warm_start`` is null), else the SCF's own guess.
    """

    chkfile: Path | str | None = None
    orbitals: tuple | None = None
    warm_orbitals: tuple | None = None

    @classmethod
    def from_point(cls, point: Point) -> Guess:
        """Start from the converged orbitals (and warm-start orbitals) of `point`."""
        mf = point.mf
        return cls(orbitals=(np.asarray(mf.mo_coeff), np.asarray(mf.mo_occ)),
                   warm_orbitals=point.warm_orbitals)


class Point:
    """The computed geometry: what `compute_point` returns.

    mf: the PySCF SCF object (converged or as far as it got); converged: the SCF
    converged and its density passed the final checks; failure: why not, in words
    (None when converged); props: energies and properties by dm21cli's names
    (`dm21cli.jobs.result.properties`, plus the SCF's attempts, the warm start and
    DM21's own records); timings: wall seconds per phase; warm_orbitals: the warm
    start's converged orbitals (for the next geometry's `Guess`), or None; guess:
    what the SCF started from, in words.
    """

    def __init__(self, spec, mf, converged: bool, failure: str | None, attempts: list,
                 props: dict, warm: dict | None, final_energy: dict | None, timings: dict,
                 warm_orbitals=None, guess: str = "default"):
        self.spec, self.mf, self.converged, self.failure = spec, mf, converged, failure
        self.attempts, self.props, self.warm = attempts, props, warm
        self.final_energy, self.timings = final_energy, timings
        self.warm_orbitals, self.guess = warm_orbitals, guess
        #: the nuclear gradient's record (`nuclear_gradient`), once computed
        self.gradient: dict | None = None

    @property
    def energy_hartree(self) -> float:
        """The total energy (SCF plus dispersion) in Ha."""
        return float(self.props["return_energy"])

    def nuclear_gradient(self, log: Log | None = None, *, grid_response: bool = True) -> dict:
        """dE/dR of the converged point (`dm21cli.jobs.gradient.nuclear_gradient`), put
        into props (Hartree/bohr: the gradient, its maximum, RMS and norm, and its SCF,
        dispersion and implicit solvent's parts) and kept (a second call returns it);
        ValueError for a point that did not converge: an unconverged density has no
        gradient worth reporting."""
        from dm21cli.jobs.gradient import nuclear_gradient, summary

        if self.gradient is not None:
            return self.gradient
        if not self.converged:
            raise ValueError(f"no nuclear gradient: {self.failure}")
        t0 = time.perf_counter()
        grad = nuclear_gradient(self.mf, self.spec, grid_response=grid_response)
        g = grad["gradient_hartree_per_bohr"]
        stats = summary(g)
        disp = grad["dispersion_gradient_hartree_per_bohr"]
        self.props.update({
            "gradient_hartree_per_bohr": g.tolist(),
            "gradient_max_hartree_per_bohr": stats["max_hartree_per_bohr"],
            "gradient_rms_hartree_per_bohr": stats["rms_hartree_per_bohr"],
            "gradient_norm_hartree_per_bohr": float(np.linalg.norm(g)),
            "gradient_grid_response": grad["grid_response"],
            "scf_gradient_hartree_per_bohr": grad["scf_gradient_hartree_per_bohr"].tolist(),
            "dispersion_gradient_hartree_per_bohr": None if disp is None else disp.tolist(),
        })  # result.json: the gradient is QCSchema's return_gradient, the rest under extras
        if grad["solvent_gradient_hartree_per_bohr"] is not None:
            self.props["solvent_gradient_hartree_per_bohr"] = \
                grad["solvent_gradient_hartree_per_bohr"].tolist()
        self.timings["gradient"] = time.perf_counter() - t0
        if log is not None:
            log(f"nuclear gradient: max {stats['max_hartree_per_bohr']:.3e}, RMS "
                f"{stats['rms_hartree_per_bohr']:.3e} Ha/bohr ({self.timings['gradient']:.1f} s)")
        self.gradient = grad
        return grad


def compute_point(spec, mol, *, network, memory_mb: float, log: Log, checkpoint=None,
                  guess: Guess | None = None, gradient: bool = False) -> Point:
    """The SCF of `spec` on the built molecule `mol` (its geometry may differ from the
    spec's), from `guess`, with its final DM21 energy and checks, D3(BJ) and properties;
    with `gradient`, also the nuclear gradient (of a converged point; DM21 then keeps
    the last evaluation's exchange features for it).

    network: the loaded `DM21Network` for a DM21 job, else None; memory_mb: the
    process's budget; log: called with one line at a time (PySCF's own log goes to
    ``mol.stdout``); checkpoint: an object with ``update(e_tot, mo_energy, mo_coeff,
    mo_occ, final=False)`` that receives every SCF state (the last with final=True).
    """
    from dm21cli.scf.escalation import run_with_escalation

    timings: dict = {}
    grids = build_grids(mol, spec)
    mf = build_scf(mol, spec, grids, network, max_memory_mb=memory_mb)
    mf.chkfile = None  # the caller keeps its own restart file
    if spec.solvent is not None:
        from dm21cli.scf import solvent as solvation

        log(f"implicit solvent {spec.solvent.label()}: "
            f"{solvation.describe(solvation.parameters(mf.with_solvent))}; PySCF's defaults")
    if network is not None:
        mf.dm21.progress = dm21_progress(log)
        mf.dm21.keep_features = bool(gradient)
    on_state = None if checkpoint is None else checkpoint.update
    dm0, warm, warm_orbitals, started = _starting_density(spec, mol, mf, grids, network,
                                                          memory_mb, log, checkpoint,
                                                          guess or Guess())
    if warm is not None:
        timings["warm_start"] = warm["wall_s"]
    prepare_grids(mf, spec, dm0)
    log(f"{len(mf.grids.weights)} grid points")

    t0 = time.perf_counter()
    converged, attempts = run_with_escalation(mf, dm0, max_attempts=spec.scf.max_attempts,
                                              log=log, on_state=on_state)
    failure = None
    if converged and _prunes(spec):
        converged, failure = _settle_pruned_grid(mf, spec, log, attempts, on_state)
    final_energy = final_dm21_energy(mf, log) if network is not None and converged else None
    timings["scf"] = time.perf_counter() - t0

    e_disp = None
    if spec.dispersion == "d3bj":
        e_disp = dispersion_energy(mol, spec.functional)
        log(f"D3(BJ) dispersion energy {e_disp:.10f} Ha")

    props = properties(mf, spec, e_disp)
    if spec.solvent is not None:
        cds = props["solvent_cds_energy"]
        log(f"solvation: polarisation energy {props['solvent_polarization_energy']:.10f} Ha"
            + ("" if cds is None else f", SMD cavity-dispersion-solvent-structure {cds:.10f} Ha")
            + f"; the solute's own energy (gas-phase-like) {props['solute_energy']:.10f} Ha"
            + ("" if props["solvent_surface_points"] is None else
               f" ({props['solvent_surface_points']} surface points)"))
    if props["non_aufbau"] and converged:
        from dm21cli.io.outputs.summary import non_aufbau_text

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
    if checkpoint is not None:
        checkpoint.update(mf.e_tot, mf.mo_energy, mf.mo_coeff, mf.mo_occ, final=True)
    if failure is None and not converged:
        failure = (f"SCF not converged after {len(attempts)} attempts "
                   f"({props['scf_iterations']} cycles)")
    elif converged and final_energy is not None and final_energy["problems"]:
        failure = ("the SCF converged to a density that fails the final checks: "
                   + "; ".join(final_energy["problems"]))
        converged = False
    point = Point(spec, mf, bool(converged), failure, attempts, props, warm, final_energy,
                  timings, warm_orbitals, started)
    if gradient and point.converged:
        point.nuclear_gradient(log)
    elif gradient:
        log(f"no nuclear gradient: {failure}")
    return point


def _starting_density(spec, mol, mf, grids, network, memory_mb, log, checkpoint, guess: Guess):
    """(dm0 or None, warm-start record or None, warm-start orbitals or None, what it is)."""
    dm21_warm = network is not None and spec.scf.warm_start
    if guess.chkfile is not None:
        return guess_from_chkfile(mf, str(guess.chkfile)), None, None, "chkfile"
    if guess.orbitals is not None:
        carried = carried_density(mf, *guess.orbitals)
        if not dm21_warm or guess.warm_orbitals is None:
            log("initial guess: the orbitals of the same atoms at the previous geometry")
            return carried, None, None, "previous orbitals"
        warm_before = carried_density(mf, *guess.warm_orbitals)
        dm, warm = warm_start(mol, spec, grids, memory_mb, log, main=mf, checkpoint=checkpoint,
                              dm0=warm_before)
        orbitals = orbitals_of(dm)
        if np.shape(dm) != np.shape(carried):
            return dm, warm, orbitals, "warm start"
        log("initial guess: the warm start plus the previous geometry's DM21 - warm start "
            "density difference")
        return np.asarray(dm) + carried - warm_before, warm, orbitals, \
            "warm start + previous difference"
    if dm21_warm:
        dm, warm = warm_start(mol, spec, grids, memory_mb, log, main=mf, checkpoint=checkpoint)
        return dm, warm, orbitals_of(dm), "warm start"
    return None, None, None, "default"


def _prunes(spec) -> bool:
    """Whether ``scf.small_rho_cutoff`` prunes the grid (PySCF prunes above 1e-20)."""
    cutoff = spec.scf.small_rho_cutoff
    return cutoff is not None and cutoff > 1e-20


def _electrons_on(mol, grids, dm) -> float:
    """The density `dm` (restricted, or (2, nao, nao)) integrated on `grids`."""
    from pyscf.dft import numint

    total = dm if np.ndim(dm) == 2 else dm[0] + dm[1]
    ni = numint.NumInt()
    n = 0.0
    for ao, _, weight, _ in ni.block_loop(mol, grids, mol.nao_nr(), deriv=0):
        n += float(np.dot(weight, ni.eval_rho(mol, ao, total, xctype="LDA")))
    return n


def _settle_pruned_grid(mf, spec, log, attempts: list, on_state) -> tuple[bool, str | None]:
    """A PySCF functional's grid, pruned by ``scf.small_rho_cutoff`` at the starting
    density, checked at the converged one: the points pruned must hold at most
    small_rho_cutoff electrons there (what pruning promises).  If they hold more (the
    density moved onto them), the grid is pruned again at the converged density and the
    SCF continues from it, at most MAX_GRID_REPRUNES times.  Returns (converged, failure)."""
    from pyscf.dft.rks import prune_small_rho_grids_

    from dm21cli.scf.escalation import run_with_escalation

    cutoff = spec.scf.small_rho_cutoff
    mol = mf.mol
    for reprunes in range(MAX_GRID_REPRUNES + 1):
        dm = mf.make_rdm1()
        full = build_grids(mol, spec)
        full.build(with_non0tab=True)
        lost = _electrons_on(mol, full, dm) - _electrons_on(mol, mf.grids, dm)
        log(f"grid pruned by scf.small_rho_cutoff {cutoff:g}: the points left out hold "
            f"{lost:.2e} electrons at the converged density")
        if lost <= cutoff * (1 + 1e-6) + 1e-12:
            return True, None
        if reprunes == MAX_GRID_REPRUNES:
            break
        log("  more than small_rho_cutoff: the grid is pruned again at this density and the SCF "
            "continues")
        mf.grids = prune_small_rho_grids_(mf, mol, dm, full)
        converged, more = run_with_escalation(mf, dm, max_attempts=spec.scf.max_attempts,
                                              log=log, on_state=on_state)
        attempts.extend(more)
        if not converged:
            return False, None
    return False, (f"the grid pruned by scf.small_rho_cutoff {cutoff:g} still leaves out "
                   f"{lost:.2e} electrons after {MAX_GRID_REPRUNES} new prunings; lower "
                   f"small_rho_cutoff")
