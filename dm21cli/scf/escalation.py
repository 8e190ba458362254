"""SCF that converges: warm start, then escalating attempts.

The strategy the published DM21 code recommends: converge a conventional
functional (B3LYP) first and start DM21 from its density.  A Fock-iteration
attempt that stalls (its orbital gradient stops improving) ends early; the
next attempt starts from the lowest-energy state seen so far, along the
ESCALATION ladder: direct minimisation over orbital rotations
(`dm21cli.scf.directmin`, which also finds the non-aufbau solutions DM21 has on
stretched bonds), then damping and level shifts, then ADIIS, up to a bounded
number of attempts.  Every attempt is logged and recorded.

A converged restricted state that is non-aufbau (an empty orbital lies below
the highest occupied one, as direct minimisation can leave it) is one of
several solutions that differ in which orbital is occupied: `_occupation_swap`
minimises once more with those two orbitals' occupations exchanged and keeps
the lower state (restricted H2 at 6 A: the warm start ends with sigma_u doubly
occupied, 0.25 mHa above the sigma_g solution).

Fixed (fractional) occupations (`dm21cli.scf.occupations`) hold in every
attempt: the Fock iterations take them from the SCF object's ``get_occ``,
the frozen-XC inner SCF gets the same ones, and direct minimisation keeps
the occupations it starts from.

DM21 runs that start from a density (the warm start, or a chkfile) first try
frozen-XC iterations (`_frozen_xc`): each DM21 evaluation is followed by a
cheap inner SCF in which DM21's potential is held fixed and the density's
response is modelled by the Coulomb potential and a fraction of exact
exchange.  That handles most of the response without evaluating DM21, so
fewer DM21 evaluations are needed (with PySCF's convergence test, water/def2-TZVP:
3 instead of DIIS's 4; methane/def2-TZVP and (H2O)2: 3 instead of 4 with Coulomb
alone; water/def2-TZVP 2 with the step test of FROZEN_XC_PREDICTED_CONVERGENCE).  If they
stall, the ladder above takes over from the lowest-energy state they reached.
Where the two-electron integrals do not fit in memory, the inner SCF's model is
density-fitted (see FROZEN_XC_DENSITY_FITTING).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from dm21cli.core import interrupts
from dm21cli.scf import fitting

#: Escalation ladder: (name, settings applied to the SCF object).  Attempt k
#: uses entry min(k, len - 1).
ESCALATION = (
    ("diis", {}),
    ("direct-minimization", {}),
    ("damping+level-shift", {"damp": 0.5, "level_shift": 0.25, "diis_start_cycle": 3}),
    ("adiis+level-shift+large-diis", {"level_shift": 0.5, "diis_space": 16, "diis": "adiis"}),
    ("direct-minimization", {}),
)
#: Fock-iteration attempts stop early when the orbital gradient has not
#: improved on its best value by this factor within STALL_WINDOW cycles.
STALL_WINDOW = 8
STALL_FACTOR = 0.5
#: Frozen-XC iterations: at most this many DM21 evaluations, and they stop
#: as soon as the orbital gradient grows.
FROZEN_XC_MAX_EVALUATIONS = 8
#: Fraction c of exact exchange in the frozen-XC inner SCF's model of how
#: DM21's potential follows the density (closed shells with in-core integrals):
#: V(D) ~ V_DM21(D_k) - c/2 [K(D) - K(D_k)].  The model term vanishes at
#: D = D_k, so the fixed point (DM21's own SCF solution) is unchanged; it
#: only makes each step go further.
#: Measured from the B3LYP density, |dE| at the third DM21 evaluation (the
#: convergence test needs < 1e-6 Ha to stop there) for c = 0 / 0.4 / 0.5 / 0.6:
#: methane/def2-TZVP 1.2e-6 / 1.5e-7 / 4.7e-8 / 2.5e-7, (H2O)2/def2-SVP
#: 2.9e-6 / 4.2e-7 / 1.5e-7 / 3.0e-7, (H2O)4 6.1e-6 / 8.5e-7 / 3.1e-7,
#: benzene/def2-SVP (4 evaluations at c = 0) / 4.6e-7 / 1.6e-7; c = 1 overshoots and
#: diverges on (H2O)2.  A local model (LDA exchange on a coarse grid) did
#: not help (H2O)2.  Open shells keep c = 0: on the OH radical c = 0.4 / 0.5
#: took 11 / 5 evaluations instead of 4.
FROZEN_XC_EXCHANGE_RESPONSE = 0.5
#: Where the two-electron integrals are not held in memory (PySCF's direct SCF: every
#: J or K build recomputes them), the inner SCF's Coulomb and exchange model is
#: density-fitted (PySCF's `density_fit`, its default auxiliary basis for the orbital
#: basis), and its fixed part carries J(D_k) - J_fit(D_k), the exact Coulomb matrix of
#: D_k (DM21's evaluation has it) less the fitted one: at D = D_k the inner Fock matrix
#: is DM21's own, so the fixed point is unchanged and only the model is fitted.  Each
#: inner cycle then costs a fitted J and K instead of a direct-SCF J, and closed shells
#: get the exchange model there too.  Measured on (H2O)16/def2-SVP
#: (benchmarks/frozen_xc_fit.py): Coulomb alone by direct SCF 5 DM21 evaluations, 52 to
#: 72 s per inner SCF, 1,021 s; fitted 4 evaluations, 12 to 41 s, 752 s, energies 9e-9 Ha
#: apart, the fitted integrals 1.1 GB more at the peak.
FROZEN_XC_DENSITY_FITTING = True
#: The frozen-XC iterations also end at evaluation k when the step the inner SCF proposes
#: from D_k would change DM21's energy by less than FROZEN_XC_PREDICTED_SHARE of conv_tol
#: to first order, |tr F_k (D_k+1 - D_k)|, with |g_k| < conv_tol_grad: D_k and its energy
#: are the result, and the evaluation at D_k+1 that PySCF's test (two energies within
#: conv_tol) needs is saved.  Measured (2026-12-05, def2-SVP unless said, the default grid):
#: the next step's actual change is 0.8 to 1.6 times its first-order term (water,
#: water/def2-TZVP, (H2O)2, benzene, water in IEF-PCM water; the OH and CH3 radicals, whose
#: inner SCF has Coulomb alone, 1.2 to 1.4), so at half of conv_tol it changes E by less than
#: conv_tol: what PySCF's test checks one evaluation later.  Saved: water, (H2O)2 and
#: benzene 2 evaluations instead of 3; OH, CH3 3 instead of 4.
FROZEN_XC_PREDICTED_CONVERGENCE = True
FROZEN_XC_PREDICTED_SHARE = 0.5
# In an implicit solvent the inner SCF holds the reaction field of D_k fixed, as it
# holds V_xc (the fixed point is unchanged).  Its exact linear response in the inner
# SCF (the solvent's ``_get_vind`` at every inner cycle) saved one DM21 evaluation
# (water and acetate in water, IEF-PCM, def2-SVP, grid level 1, conv_tol_grad 1e-5:
# 4 instead of 5) but made acetate's SCF take 22 s instead of 9 s: each inner cycle
# solves the PCM equations again (two dense solves of the surface's size).


class _Stalled(Exception):
    """Raised from the SCF callback to end an attempt that makes no progress."""


@dataclass
class Attempt:
    """One SCF attempt: what was tried and how it ended."""

    strategy: str
    converged: bool
    cycles: int
    energy_hartree: float
    wall_s: float
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _apply(mf, settings: dict) -> None:
    from pyscf import scf as pyscf_scf

    for key, value in settings.items():
        if key == "diis":
            mf.DIIS = {"adiis": pyscf_scf.ADIIS, "ediis": pyscf_scf.EDIIS}[value]
        else:
            setattr(mf, key, value)


def _stall_watch(mf, on_state=None):
    """An SCF callback that raises _Stalled when |g| stops improving.

    Before raising it stores the lowest-energy orbitals seen in the attempt
    on `mf` (PySCF's kernel would only store the last ones, at its end), so
    the next attempt starts from the best point found so far.  Every cycle
    it raises a SIGINT/SIGTERM that was lost (`interrupts.check`) and hands
    the cycle's state to `on_state(e_tot, mo_energy, mo_coeff, mo_occ)`.
    """
    history: list[float] = []
    best: dict = {}

    def restore_best():
        for key, value in best.items():
            setattr(mf, key, value)

    def callback(envs):
        interrupts.check()
        if on_state is not None and envs.get("mo_coeff") is not None:
            on_state(envs["e_tot"], envs["mo_energy"], envs["mo_coeff"], envs["mo_occ"])
        if "e_tot" in envs and ("e_tot" not in best or envs["e_tot"] < best["e_tot"]):
            best.update({key: envs[key] for key in ("mo_coeff", "mo_occ", "mo_energy", "e_tot")})
        history.append(float(envs.get("norm_gorb", 0.0)))
        n = len(history)
        if n > 2 * STALL_WINDOW:
            best_before = min(history[:-STALL_WINDOW])
            if min(history[-STALL_WINDOW:]) > STALL_FACTOR * best_before:
                restore_best()
                raise _Stalled(n)

    callback.restore_best = restore_best
    return callback


def _orbitals_from_density(mf, dm):
    """Orbitals and occupations from the Fock matrix of density `dm`."""
    if dm is None:
        dm = mf.get_init_guess()
    fock = mf.get_fock(dm=dm)
    mo_energy, mo_coeff = mf.eig(fock, mf.get_ovlp())
    return mo_coeff, mf.get_occ(mo_energy, mo_coeff)


def _direct_min(mf, dm, log):
    from dm21cli.scf.directmin import minimize

    if dm is None or mf.mo_coeff is None:
        mo_coeff, mo_occ = _orbitals_from_density(mf, dm)
    else:
        mo_coeff, mo_occ = mf.mo_coeff, mf.mo_occ
    _, cycles, _, _ = minimize(
        mf, mo_coeff, mo_occ, max_cycle=mf.max_cycle, conv_tol=mf.conv_tol,
        conv_tol_grad=mf.conv_tol_grad or np.sqrt(mf.conv_tol), log=log)
    return cycles


def _inner_scf(mf, restricted: bool):
    """The frozen-XC iterations' inner SCF on mf's molecule: PySCF's RHF (`restricted`) or
    UHF class, density-fitted where mf's two-electron integrals are not in memory (see
    FROZEN_XC_DENSITY_FITTING), with mf's reproducible sums, fixed occupations and
    max_memory, silent, conv_tol min(1e-9, 1e-3 mf.conv_tol) and at most 100 cycles; its
    get_veff and get_hcore are the caller's to set."""
    from pyscf import scf as pyscf_scf

    from dm21cli.scf import occupations, reproducible

    mol = mf.mol
    # the classes, not PySCF's factories: those give a one-electron system an
    # SCF object that only diagonalises the core Hamiltonian (no J, no occupations)
    inner = pyscf_scf.hf.RHF(mol) if restricted else pyscf_scf.uhf.UHF(mol)
    inner.verbose = 0
    inner.max_memory = mf.max_memory
    if FROZEN_XC_DENSITY_FITTING and not fitting.integrals_in_core(mf, inner):
        inner = inner.density_fit()
        cderi = fitting.handed_over(mf, inner.with_df)  # built by the warm start
        if cderi is not None:
            inner.with_df._cderi = cderi
        else:
            fitting.build(inner.with_df, inner.max_memory)
    reproducible.install(inner)  # as mf (see dm21cli.scf.reproducible)
    if occupations.fixed(mf) is not None:  # the inner SCF keeps the same occupations
        occupations.apply(inner, occupations.fixed(mf))
    inner.conv_tol = min(1e-9, 1e-3 * mf.conv_tol)
    inner.max_cycle = 100
    return inner


def _density_fitted(inner) -> bool:
    """Whether the inner SCF's J and K are density-fitted (`_inner_scf`)."""
    return getattr(inner, "with_df", None) is not None


def _exchange_response(mf, inner, restricted: bool) -> float:
    """c, the fraction of exact exchange in the inner SCF's model:
    FROZEN_XC_EXCHANGE_RESPONSE for a restricted closed shell whose integrals are in
    memory or fitted, else 0."""
    # Coulomb only for open shells (the exchange model's response in their
    # near-degenerate orbital pairs is too strong: OH radical 5 to 11 evaluations
    # instead of 4) and for a direct SCF without fitting (each inner cycle's K would
    # cost a direct-SCF build)
    cheap_k = _density_fitted(inner) or fitting.integrals_in_core(mf, inner)
    return FROZEN_XC_EXCHANGE_RESPONSE if restricted and mf.mol.spin == 0 and cheap_k else 0.0


def _keep_tags(dm) -> np.ndarray:
    """dm as an array, PySCF's tags (mo_coeff, mo_occ) kept: a fitted K is then built from
    the occupied orbitals (measured 2.6 s instead of 10.2 s on (H2O)16/def2-SVP)."""
    return dm if isinstance(dm, np.ndarray) else np.asarray(dm)


def _model_veff(inner, restricted: bool, model: dict):
    """The inner SCF's get_veff(mol, dm): J(D) - c/2 K(D) with c = ``model["c"]`` as it is at
    each call, for the restricted inner SCF; with c = 0, J(D) (of the total density, per
    spin for the unrestricted one: shape (2, nao, nao))."""

    def model_veff(mol=None, dm=None, *args, **kwargs):
        """J(D) - c/2 K(D) for the restricted inner SCF (J(D) per spin otherwise)."""
        dm = _keep_tags(dm)
        if model["c"]:
            vj, vk = inner.get_jk(mol, dm)
            return vj - 0.5 * model["c"] * vk
        vj = inner.get_j(mol, dm if restricted else dm[0] + dm[1])
        return vj if restricted else np.stack([vj, vj])

    return model_veff


def _dm21_evaluation(mf, inner, dm, h1e, restricted: bool):
    """(vhf, E, V_xc) of one DM21 evaluation at density dm: mf's effective potential, the
    total energy (Ha) and that potential without its Coulomb part; the potentials in Ha,
    shape (nao, nao), or (2, nao, nao) when unrestricted.  The inner SCF shares the
    two-electron integrals mf holds after it."""
    vhf = mf.get_veff(mf.mol, dm)
    if inner._eri is None:  # the integrals mf holds, or built in its first evaluation: shared
        inner._eri = mf._eri
    e_tot = mf.energy_tot(dm, h1e, vhf)
    vxc = vhf - (vhf.vj if restricted else np.stack([vhf.vj, vhf.vj]))
    return vhf, e_tot, vxc


def _orbital_gradient(mf, orbitals, fock) -> float | None:
    """|g|, the norm of the orbital gradient of `orbitals` (mo_coeff, mo_occ, mo_energy) in
    DM21's Fock matrix `fock` at their density; None before there are orbitals (the first
    evaluation)."""
    mo, occ, _ = orbitals
    if mo is None:
        return None
    return float(np.linalg.norm(mf.get_grad(mo, occ, fock)))


def _first_order_change(fock, dm, dm_next) -> float:
    """tr F (D' - D) (Ha), summed over spins: the change of DM21's energy to first order
    when the density moves from dm, where DM21's Fock matrix is `fock`, to dm_next."""
    step = np.asarray(dm_next) - np.asarray(dm)
    return float(np.sum(np.asarray(fock) * np.swapaxes(step, -1, -2)))


def _lowest(best: dict, e_tot: float, orbitals: tuple, g: float | None) -> dict:
    """The lowest-energy state so far ({e_tot, mo_coeff, mo_occ, mo_energy}): `best`, or the
    evaluation's energy e_tot with the orbitals it was evaluated at when there are orbitals
    (g is not None) and it is lower."""
    if g is not None and ("e_tot" not in best or e_tot < best["e_tot"]):
        mo, occ, mo_energy = orbitals
        return {"e_tot": e_tot, "mo_coeff": mo, "mo_occ": occ, "mo_energy": mo_energy}
    return best


def _log_evaluation(log, evaluations: int, e_tot: float, e_last: float | None,
                    g: float | None) -> None:
    """The log line of a frozen-XC evaluation: its energy, and the change and |g| once known."""
    if log:
        log(f"  frozen-XC evaluation {evaluations}: E = {e_tot:.10f} Ha"
            + (f", dE = {e_tot - e_last:.2e}" if e_last is not None else "")
            + (f", |g| = {g:.2e}" if g is not None else ""))


def _evaluation_converged(mf, e_tot: float, e_last: float | None, g: float | None) -> bool:
    """PySCF's convergence test: |E_k - E_k-1| < conv_tol and |g_k| < conv_tol_grad
    (sqrt(conv_tol) when unset)."""
    return (g is not None and e_last is not None and abs(e_tot - e_last) < mf.conv_tol
            and g < (mf.conv_tol_grad or np.sqrt(mf.conv_tol)))


def _step_converged(mf, change: float, g: float) -> bool:
    """The frozen-XC test on the step the inner SCF proposes from D_k (see
    FROZEN_XC_PREDICTED_CONVERGENCE): |tr F_k (D_k+1 - D_k)| < FROZEN_XC_PREDICTED_SHARE
    conv_tol and |g_k| < conv_tol_grad (sqrt(conv_tol) when unset)."""
    return (abs(change) < FROZEN_XC_PREDICTED_SHARE * mf.conv_tol
            and g < (mf.conv_tol_grad or np.sqrt(mf.conv_tol)))


def _inner_step(inner, mol, dm, h1e, vhf, vxc, c_model: float, model: dict,
                in_solvent: bool) -> bool:
    """Solve the inner SCF from dm with h + V_xc(D_k) (and in a solvent the reaction field of
    D_k) fixed, with c = c_model and, should that not converge, with c = 0; returns whether
    it converged (its orbitals and density are then inner's)."""
    base = h1e + vxc
    if _density_fitted(inner):  # at D_k the exact J (vhf.vj), not the fitted one
        base = base + (vhf.vj - inner.get_j(mol, dm if dm.ndim == 2 else dm[0] + dm[1]))
    for c in dict.fromkeys((c_model, 0.0)):
        model["c"] = c
        # the model's constant term +c/2 K(D_k) goes with the fixed potential
        fixed = base + (0.5 * c * inner.get_k(mol, dm) if c else 0.0)
        if in_solvent:  # the reaction field of D_k, held fixed as V_xc is
            fixed = fixed + vhf.v_solvent
        inner.get_hcore = lambda *args, _v=fixed: _v
        inner.kernel(dm0=dm)
        if inner.converged:
            break
    return inner.converged


def _leave_state(mf, e_tot: float, orbitals: tuple, best: dict, e_start: float) -> None:
    """Set mf's e_tot, mo_coeff, mo_occ and mo_energy as PySCF's kernel would leave them: the
    converged state (energy e_tot, `orbitals` (mo_coeff, mo_occ, mo_energy)), else the best
    state if it is lower than e_start, else e_start and no orbitals."""
    if mf.converged:
        mo, occ, mo_energy = orbitals
        mf.e_tot, mf.mo_coeff, mf.mo_occ, mf.mo_energy = e_tot, mo, occ, mo_energy
    elif best and best["e_tot"] < e_start:
        for key, value in best.items():
            setattr(mf, key, value)
    else:  # nothing better than the starting density (e.g. a non-aufbau state): start there
        mf.e_tot, mf.mo_coeff, mf.mo_occ, mf.mo_energy = e_start, None, None, None


def _frozen_xc(mf, dm, log=None, on_state=None) -> int:
    """Frozen-XC iterations from density dm; returns the DM21 evaluations used.

    Evaluation k gives E(D_k), the DM21 Fock matrix F_k and the orbital
    gradient at D_k, with PySCF's convergence test (|E_k - E_k-1| < conv_tol,
    |g_k| < conv_tol_grad).  If not converged, D_k+1 is the self-consistent
    solution of h + J(D) + V_xc(D_k) - c/2 [K(D) - K(D_k)] (closed shells
    with in-core or fitted integrals: c = FROZEN_XC_EXCHANGE_RESPONSE; c = 0
    otherwise): an SCF in which only the Coulomb matrix and the model
    exchange follow the density (in an implicit solvent, the reaction field
    of D_k is held fixed with V_xc: see above FROZEN_XC_EXCHANGE_RESPONSE's
    note); D_k is the result when that step would change the energy by less
    than half of conv_tol to first order (FROZEN_XC_PREDICTED_CONVERGENCE).
    Should that inner SCF not converge, the step is retried with c = 0.  On
    return mf holds the converged state, or the lowest-energy one reached, as
    PySCF's kernel would leave it; if that is no lower than the starting
    density's energy, mf.mo_coeff is None so the next attempt starts from dm
    again (the inner SCF fills the lowest orbitals and cannot keep a non-aufbau
    state).
    """
    from pyscf import lib

    from dm21cli.scf.solvent import solvent_of

    mol = mf.mol
    dm = _keep_tags(dm)  # (the first step's K(D_k) from the orbitals, as in model_veff)
    restricted = dm.ndim == 2
    inner = _inner_scf(mf, restricted)
    h1e, s1e = mf.get_hcore(), mf.get_ovlp()
    c_model = _exchange_response(mf, inner, restricted)
    model = {"c": c_model}
    in_solvent = solvent_of(mf) is not None
    inner.get_veff = _model_veff(inner, restricted, model)
    if log:
        log("  inner SCF: Coulomb" + (f" + {c_model:g} of exact exchange" if c_model else " only")
            + (", density-fitted" if _density_fitted(inner) else ""))
    orbitals = (None, None, None)  # mo_coeff, mo_occ, mo_energy
    e_last = None
    g_last = np.inf
    best: dict = {}
    evaluations = 0
    mf.converged = False
    while evaluations < FROZEN_XC_MAX_EVALUATIONS:
        interrupts.check()
        vhf, e_tot, vxc = _dm21_evaluation(mf, inner, dm, h1e, restricted)
        evaluations += 1
        if evaluations == 1:
            e_start = e_tot
        fock = mf.get_fock(h1e, s1e, vhf, dm)
        g = _orbital_gradient(mf, orbitals, fock)
        best = _lowest(best, e_tot, orbitals, g)
        _log_evaluation(log, evaluations, e_tot, e_last, g)
        if _evaluation_converged(mf, e_tot, e_last, g):
            mf.converged = True
            break
        if g is not None and g > g_last:
            break  # the outer iteration does not contract here: leave it to the ladder
        e_last, g_last = e_tot, (g if g is not None else np.inf)
        if not _inner_step(inner, mol, dm, h1e, vhf, vxc, c_model, model, in_solvent):
            break
        dm_next = inner.make_rdm1()
        if FROZEN_XC_PREDICTED_CONVERGENCE and g is not None:
            change = _first_order_change(fock, dm, dm_next)
            if _step_converged(mf, change, g):
                if log:
                    log(f"  frozen-XC: converged at evaluation {evaluations}: the next step "
                        f"would change E by {change:.1e} Ha to first order")
                mf.converged = True
                break
        orbitals = (inner.mo_coeff, inner.mo_occ, inner.mo_energy)
        dm = dm_next
        if on_state is not None:
            on_state(e_tot, orbitals[2], orbitals[0], orbitals[1])
    _leave_state(mf, e_tot, orbitals, best, e_start)
    mf.cycles = evaluations
    lib.logger.info(mf, "frozen-XC: %s after %d DM21 evaluations",
                    "converged" if mf.converged else "stopped", evaluations)
    return evaluations


def _occupation_swap(mf, log=None) -> Attempt | None:
    """For a converged restricted non-aufbau state: the same minimisation with the
    occupations of the highest occupied orbital and the lowest empty one (which lies
    below it) exchanged.  mf keeps the lower of the two states (the swapped one must be
    lower by more than conv_tol and converged).  Returns the attempt, or None when the
    state is aufbau or not restricted.
    """
    from dm21cli.scf.directmin import minimize

    if getattr(mf, "fixed_occupations", None) is not None:  # the caller's occupations hold
        return None
    occ = np.asarray(mf.mo_occ)
    energy = np.asarray(mf.mo_energy)
    if mf.mo_coeff is None or occ.ndim != 1 or not (occ > 0).any() or not (occ == 0).any():
        return None
    occupied, empty = np.flatnonzero(occ > 0), np.flatnonzero(occ == 0)
    homo = int(occupied[np.argmax(energy[occupied])])
    low = int(empty[np.argmin(energy[empty])])
    if energy[low] >= energy[homo]:
        return None
    saved = {key: getattr(mf, key) for key in ("mo_coeff", "mo_occ", "mo_energy", "e_tot")}
    swapped = occ.copy()
    swapped[[homo, low]] = occ[[low, homo]]
    if log:
        log(f"SCF check: non-aufbau state (empty orbital {low + 1} at {energy[low]:.4f} Ha below "
            f"occupied orbital {homo + 1} at {energy[homo]:.4f} Ha): direct minimisation with "
            "their occupations exchanged")
    t0 = time.perf_counter()
    converged, cycles, e_swapped, _ = minimize(
        mf, saved["mo_coeff"], swapped, max_cycle=mf.max_cycle, conv_tol=mf.conv_tol,
        conv_tol_grad=mf.conv_tol_grad or np.sqrt(mf.conv_tol), log=log)
    kept = bool(converged and e_swapped < saved["e_tot"] - mf.conv_tol)
    if not kept:
        for key, value in saved.items():
            setattr(mf, key, value)
    mf.converged = True
    return Attempt(strategy="occupation-swap", converged=bool(converged), cycles=cycles,
                   energy_hartree=float(e_swapped), wall_s=time.perf_counter() - t0,
                   settings={"orbitals": [homo + 1, low + 1], "kept": kept})


def _fock_iteration(mf, dm, on_state=None):
    """mf.kernel from dm, ended early when stalled; returns the cycles run."""
    watch = _stall_watch(mf, on_state)
    mf.callback = watch
    try:
        mf.kernel(dm0=dm)
        if not mf.converged:
            watch.restore_best()
        return int(getattr(mf, "cycles", mf.max_cycle) or 0)
    except _Stalled as stalled:
        mf.converged = False
        return int(stalled.args[0])
    finally:
        mf.callback = None


def _record(mf, attempts: list, attempt: Attempt, log, on_attempt, on_state=None,
            unit: str = "cycles") -> None:
    """Append a finished attempt, log its line, tell on_attempt, and hand mf's state
    (converged, or the best reached) to on_state(..., final=True)."""
    attempts.append(attempt)
    if on_state is not None and mf.mo_coeff is not None:
        on_state(mf.e_tot, mf.mo_energy, mf.mo_coeff, mf.mo_occ, final=True)
    if log:
        state = "converged" if attempt.converged else "NOT converged"
        log(f"  {state} after {attempt.cycles} {unit}, E = {attempt.energy_hartree:.10f} Ha "
            f"({attempt.wall_s:.1f} s)")
    if on_attempt:
        on_attempt(attempt)


def run_with_escalation(mf, dm0: np.ndarray | None, *, max_attempts: int,
                        log=None, on_attempt=None, on_state=None) -> tuple[bool, list[Attempt]]:
    """Run `mf.kernel` until it converges or `max_attempts` are used.

    mf: a configured PySCF SCF object (tolerances, max_cycle set);
    dm0: initial density matrix or None for mf's own guess.  Each further
    attempt starts from the lowest-energy state the previous one reached.
    Returns (converged, attempts).  `log(msg)` receives one line per attempt;
    `on_state(e_tot, mo_energy, mo_coeff, mo_occ, final=False)` each SCF
    state as it is reached (final=True: the state an attempt ended with), so
    that the caller can keep a restart file.  A SIGINT/SIGTERM lost on the
    way is raised again within a cycle (`dm21cli.core.interrupts.check`).
    A converged restricted non-aufbau state is followed by `_occupation_swap`
    (recorded as the attempt "occupation-swap", not counted in max_attempts).
    """
    attempts: list[Attempt] = []
    dm = dm0
    defaults = {k: getattr(mf, k) for k in ("damp", "level_shift", "diis_space",
                                            "diis_start_cycle", "DIIS")}
    if dm0 is not None and hasattr(mf, "dm21"):  # DM21 from a density: frozen-XC first
        t0 = time.perf_counter()
        if log:
            log("SCF attempt: frozen-XC iterations (before the ladder)")
        cycles = _frozen_xc(mf, dm0, log, on_state)
        attempt = Attempt(strategy="frozen-xc", converged=bool(mf.converged), cycles=cycles,
                          energy_hartree=float(mf.e_tot), wall_s=time.perf_counter() - t0)
        _record(mf, attempts, attempt, log, on_attempt, on_state, unit="DM21 evaluations")
        if attempt.converged:
            _swap_if_lower(mf, attempts, log, on_attempt, on_state)
            return True, attempts
        dm = mf.make_rdm1() if mf.mo_coeff is not None else dm0
    for k in range(max_attempts):
        name, settings = ESCALATION[min(k, len(ESCALATION) - 1)]
        for key, value in defaults.items():
            setattr(mf, key, value)
        _apply(mf, settings)
        t0 = time.perf_counter()
        if log:
            log(f"SCF attempt {k + 1}/{max_attempts}: {name} {settings or ''}".rstrip())
        if name == "direct-minimization":
            cycles = _direct_min(mf, dm, log)
        else:
            cycles = _fock_iteration(mf, dm, on_state)
        attempt = Attempt(strategy=name, converged=bool(mf.converged), cycles=cycles,
                          energy_hartree=float(mf.e_tot), wall_s=time.perf_counter() - t0,
                          settings={key: (v if not isinstance(v, type) else v.__name__)
                                    for key, v in settings.items()})
        _record(mf, attempts, attempt, log, on_attempt, on_state)
        if attempt.converged:
            break
        dm = mf.make_rdm1() if mf.mo_coeff is not None else dm
    for key, value in defaults.items():
        setattr(mf, key, value)
    converged = attempts[-1].converged
    if converged:
        _swap_if_lower(mf, attempts, log, on_attempt, on_state)
    return converged, attempts


def _swap_if_lower(mf, attempts, log, on_attempt, on_state) -> None:
    """After convergence: `_occupation_swap`, recorded as an attempt; on_state
    receives the state kept."""
    swap = _occupation_swap(mf, log)
    if swap is None:
        return
    _record(mf, attempts, swap, log, on_attempt, on_state)
    if log:
        log(f"  kept the {'swapped' if swap.settings['kept'] else 'previous'} state: "
            f"E = {float(mf.e_tot):.10f} Ha")
