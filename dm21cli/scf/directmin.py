"""Direct minimisation of the SCF energy over orbital rotations.

The fallback when Fock-matrix iteration (DIIS, damping, level shifts) keeps
swapping occupied and virtual orbitals, as DM21 does on stretched bonds.
It is geometric direct minimisation in the spirit of Van Voorhis and
Head-Gordon (Mol. Phys. 100, 1713 (2002)): L-BFGS steps on the occupied-
virtual rotation parameters kappa, preconditioned by orbital-energy
differences, with a backtracking line search on the energy, so the energy
goes down at every accepted step.  After each step the current orbitals
become the new reference (kappa = 0), where the gradient is exact:

    RKS: dE/dkappa_ai = 4 F_ai        UKS: dE/dkappa^s_ai = 2 F^s_ai

with F the Fock matrix in the current molecular-orbital basis (Hartree).
With fractional occupations (`dm21cli.scf.occupations`) the rotations are
those between every two orbitals of different occupation, n_p > n_q, with
dE/dkappa_qp = 2 (n_p - n_q) F_qp (which is the above for occupations 2 or
1 and 0); rotations among orbitals of equal occupation change nothing.
Each energy evaluation costs one Fock build.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from dm21cli.core import interrupts

#: L-BFGS history length.
HISTORY = 8
#: Smallest orbital-energy difference used in the preconditioner (Hartree).
MIN_DENOMINATOR = 0.2
#: Largest allowed norm of one rotation step (radians).
MAX_STEP = 0.5


def _levels(occ: np.ndarray) -> list[np.ndarray]:
    """Masks of the orbitals of each distinct occupation number, highest first."""
    values = sorted(set(np.round(occ, 12).tolist()), reverse=True)
    return [np.isclose(occ, v, rtol=0, atol=1e-12) for v in values]


class _Spins:
    """Orbitals of one or two spin channels, flattened rotation vectors.

    The rotations of a spin are blocks kappa (n_lo x n_hi), one for every two
    occupation levels hi > lo (integer occupations: one block, virtual x
    occupied).
    """

    def __init__(self, mf, mo_coeff, mo_occ):
        self.mf = mf
        self.restricted = np.asarray(mo_occ).ndim == 1
        self.coeff = [mo_coeff] if self.restricted else list(mo_coeff)
        self.occ = [np.asarray(mo_occ)] if self.restricted else [np.asarray(o) for o in mo_occ]
        #: per spin: the orbitals of each occupation level, highest first
        self.levels = [_levels(o) for o in self.occ]
        #: per spin: (hi mask, lo mask, n_hi - n_lo) for every pair of levels
        self.blocks = [[(hi, lo, float(o[hi][0] - o[lo][0]))
                        for i, hi in enumerate(lv) for lo in lv[i + 1:]]
                       for o, lv in zip(self.occ, self.levels)]

    def density(self, coeff):
        occ = self.occ
        if self.restricted:
            c = coeff[0][:, occ[0] > 0]
            return (c * occ[0][occ[0] > 0]) @ c.T
        return np.stack([(c[:, o > 0] * o[o > 0]) @ c[:, o > 0].T for c, o in zip(coeff, occ)])

    def energy_and_fock(self, coeff):
        dm = self.density(coeff)
        vhf = self.mf.get_veff(self.mf.mol, dm)
        fock = self.mf.get_fock(dm=dm, vhf=vhf)
        energy = self.mf.energy_tot(dm=dm, vhf=vhf)
        return float(energy), fock

    def gradient(self, coeff, fock):
        """(flat gradient, flat preconditioner diagonal)."""
        grads, diags = [], []
        focks = [fock] if self.restricted else list(fock)
        for c, f, blocks in zip(coeff, focks, self.blocks):
            fmo = c.T @ f @ c
            eps = np.diag(fmo)
            for hi, lo, dn in blocks:
                grads.append(2.0 * dn * fmo[np.ix_(lo, hi)].ravel())
                diag = eps[lo][:, None] - eps[hi][None, :]
                diags.append(2.0 * dn * np.maximum(diag, MIN_DENOMINATOR).ravel())
        if not grads:
            return np.zeros(0), np.ones(0)
        return np.concatenate(grads), np.concatenate(diags)

    def rotate(self, coeff, step):
        """Orbitals after the rotation exp(K(step)) applied to `coeff`."""
        out, p = [], 0
        for c, blocks in zip(coeff, self.blocks):
            k = np.zeros((c.shape[1], c.shape[1]))
            for hi, lo, _ in blocks:
                nlo, nhi = int(lo.sum()), int(hi.sum())
                kappa = step[p:p + nlo * nhi].reshape(nlo, nhi)
                p += nlo * nhi
                k[np.ix_(lo, hi)] = kappa
                k[np.ix_(hi, lo)] = -kappa.T
            out.append(c @ scipy.linalg.expm(k) if blocks else c)
        return out


def minimize(mf, mo_coeff, mo_occ, *, max_cycle: int, conv_tol: float,
             conv_tol_grad: float, log=None):
    """Minimise mf's energy from the given orbitals with fixed occupations.

    Returns (converged, cycles, energy_hartree, mo_coeff); on return, mf
    holds canonicalised orbitals, orbital energies, occupations and e_tot.
    Convergence: |dE| < conv_tol and ||grad|| < conv_tol_grad, with grad
    measured as PySCF's `mf.get_grad` does.
    """
    spins = _Spins(mf, mo_coeff, mo_occ)
    coeff = spins.coeff
    energy, fock = spins.energy_and_fock(coeff)
    grad, diag = spins.gradient(coeff, fock)
    s_hist: list[np.ndarray] = []
    y_hist: list[np.ndarray] = []
    converged = False
    cycles = 0
    t_init = 1.0  # first trial step length; grows while steps are under-estimated
    for cycles in range(1, max_cycle + 1):
        interrupts.check()  # a SIGINT/SIGTERM lost in a finalizer ends the run here
        # L-BFGS two-loop recursion with a diagonal preconditioner
        q = grad.copy()
        alphas = []
        for s, y in reversed(list(zip(s_hist, y_hist))):
            a = s @ q / (y @ s)
            alphas.append(a)
            q -= a * y
        r = q / diag
        for (s, y), a in zip(zip(s_hist, y_hist), reversed(alphas)):
            b = y @ r / (y @ s)
            r += s * (a - b)
        step = -r
        if step @ grad >= 0:  # not a descent direction: restart from steepest descent
            s_hist.clear()
            y_hist.clear()
            step = -grad / diag
        norm = np.linalg.norm(step)
        if norm > MAX_STEP:
            step *= MAX_STEP / norm
            norm = MAX_STEP
        # backtracking line search (Armijo), from a trial length that adapts
        t = t_first = min(t_init, MAX_STEP / max(norm, 1e-300))
        slope = step @ grad
        for _ in range(12):
            trial = spins.rotate(coeff, t * step)
            e_new, f_new = spins.energy_and_fock(trial)
            if e_new <= energy + 1e-4 * t * slope or abs(e_new - energy) < 0.1 * conv_tol:
                break
            t *= 0.5
        # a full step that gained at least 90% of its linear prediction was too
        # short (flat or negatively curved direction): try twice as far next time
        if t == t_first and e_new - energy <= 0.9 * t * slope:
            t_init = 2.0 * t_first
        else:
            t_init = max(t, 1.0)
        g_new, diag = spins.gradient(trial, f_new)
        # the gradient is expressed in the new orbitals: parallel transport is
        # neglected, as in GDM's first-order treatment
        y = g_new - grad
        s = t * step
        if y @ s > 1e-12:
            s_hist.append(s)
            y_hist.append(y)
            del s_hist[:-HISTORY], y_hist[:-HISTORY]
        d_e = e_new - energy
        coeff, energy, fock, grad = trial, e_new, f_new, g_new
        norm_gorb = np.linalg.norm(_pyscf_grad(mf, coeff, spins, fock))
        if log:
            log(f"  direct-min cycle {cycles}: E = {energy:.10f}  dE = {d_e:.2e}  |g| = {norm_gorb:.2e}")
        if abs(d_e) < conv_tol and norm_gorb < conv_tol_grad:
            converged = True
            break
    _canonicalise(mf, spins, coeff, fock, energy)
    mf.converged = converged
    return converged, cycles, energy, mf.mo_coeff


def _pyscf_grad(mf, coeff, spins, fock):
    mo = coeff[0] if spins.restricted else np.stack(coeff)
    occ = spins.occ[0] if spins.restricted else np.stack(spins.occ)
    return mf.get_grad(mo, occ, fock)


def _canonicalise(mf, spins, coeff, fock, energy):
    """Diagonalise F among the orbitals of each occupation level of each spin
    (integer occupations: the occupied and the virtual space)."""
    focks = [fock] if spins.restricted else list(fock)
    new_c, new_e = [], []
    for c, f, levels in zip(coeff, focks, spins.levels):
        c_out = c.copy()
        e_out = np.empty(c.shape[1])
        for mask in levels:
            sub = c[:, mask]
            e, u = np.linalg.eigh(sub.T @ f @ sub)
            c_out[:, mask] = sub @ u
            e_out[mask] = e
        new_c.append(c_out)
        new_e.append(e_out)
    if spins.restricted:
        mf.mo_coeff, mf.mo_energy, mf.mo_occ = new_c[0], new_e[0], spins.occ[0]
    else:
        mf.mo_coeff, mf.mo_energy = np.stack(new_c), np.stack(new_e)
        mf.mo_occ = np.stack(spins.occ)
    mf.e_tot = energy
