"""Fixed occupation numbers: fractional electron numbers and fractional spins.

A fixed-occupation SCF (always unrestricted) keeps given occupation numbers
0 <= n <= 1 on the orbitals of each spin; the density is D^s = C^s n^s C^s^T.
`FixedOccupations` holds them as two lists, one per spin, for the lowest
orbitals of that spin in order of orbital energy (the rest are empty):
``alpha [1, 1, 1, 0.5], beta [1, 1]`` is the C atom with 5.5 electrons.

Which orbital carries the fractional occupation: **energy order** (aufbau),
re-applied at every Fock diagonalisation, not maximum overlap with the
previous iteration.  Reasons: (1) it is the ground state of the fixed
occupations: by Janak's theorem dE/dn_i = e_i, so moving charge from a
higher into a lower orbital lowers the energy, and the lowest-energy
ensemble fills the orbitals in energy order; (2) it does not depend on the
starting guess, so a point computed in a worker from its own default guess
reaches the same state as one started from its neighbour; (3) the integer
endpoints are then exactly the ordinary aufbau SCF states.  Where energy
order makes the Fock iteration flip between nearly degenerate orbitals (an
open p shell), the escalation ladder's direct minimisation takes over: it
keeps each orbital's occupation and rotates the orbitals continuously.

Nothing else needs to know about fractional occupations: PySCF's UKS, the
DM21 functional (`dm21cli.functional.xc.DM21XC` sees only D^s: its density,
gradient, tau and exact-exchange features are all built from the density
matrices) and the direct minimisation (`dm21cli.scf.directmin`) work with
any occupations.  `apply` installs the occupations on an SCF object: its
``get_occ`` and ``get_grad`` (PySCF's orbital gradient looks only at
occupied-empty pairs; the general one is (n_p - n_q) F_qp for every pair
with n_p > n_q, which is the same for integer occupations).
"""

from __future__ import annotations

import numpy as np


class FixedOccupations:
    """Occupation numbers of the lowest orbitals of each spin, in order of orbital energy."""

    def __init__(self, alpha, beta):
        self.alpha = np.asarray(alpha, dtype=float).ravel()
        self.beta = np.asarray(beta, dtype=float).ravel()

    @classmethod
    def from_spec(cls, occupations) -> FixedOccupations | None:
        """From ``scf.occupations`` (an object with ``alpha``/``beta`` lists, a dict, or None)."""
        if occupations is None:
            return None
        if isinstance(occupations, dict):
            return cls(occupations.get("alpha") or [], occupations.get("beta") or [])
        return cls(list(occupations.alpha), list(occupations.beta))

    @property
    def electrons(self) -> tuple[float, float]:
        """(alpha, beta) electron counts."""
        return float(self.alpha.sum()), float(self.beta.sum())

    def occupations(self, mo_energy) -> np.ndarray:
        """(2, nmo) occupation numbers for these orbital energies (lowest first)."""
        mo_energy = np.asarray(mo_energy)
        out = np.zeros(mo_energy.shape)
        for s, occ in enumerate((self.alpha, self.beta)):
            order = np.argsort(mo_energy[s], kind="stable")
            out[s, order[:len(occ)]] = occ[:mo_energy.shape[-1]]
        return out

    def to_dict(self) -> dict:
        na, nb = self.electrons
        return {"alpha": self.alpha.tolist(), "beta": self.beta.tolist(),
                "alpha_electrons": na, "beta_electrons": nb, "electrons": na + nb,
                "rule": "energy order"}


def orbital_gradient(mo_coeff, mo_occ, fock_ao) -> np.ndarray:
    """Orbital gradient for any occupations: (n_p - n_q) F_qp for every pair with n_p > n_q.

    Unrestricted (mo_occ (2, nmo)) or restricted (mo_occ (nmo,), occupations
    up to 2; the restricted gradient is twice this, as PySCF's).  For integer
    occupations these are PySCF's elements (F_vo), in another order.
    """
    mo_occ = np.asarray(mo_occ)
    restricted = mo_occ.ndim == 1
    coeffs = [mo_coeff] if restricted else list(mo_coeff)
    focks = [fock_ao] if restricted else list(fock_ao)
    occs = [mo_occ] if restricted else list(mo_occ)
    parts = []
    for c, f, n in zip(coeffs, focks, occs):
        fmo = c.conj().T @ f @ c
        dn = n[:, None] - n[None, :]
        pairs = dn > 0
        parts.append(dn[pairs] * fmo[pairs])
    return np.concatenate(parts)


def is_fractional(mo_occ, tol: float = 1e-12) -> bool:
    """Whether any occupation number is not an integer."""
    occ = np.asarray(mo_occ, dtype=float)
    return bool(np.any(np.abs(occ - np.round(occ)) > tol))


def apply(mf, occupations: FixedOccupations) -> None:
    """Make `mf` (an unrestricted PySCF SCF object) keep these occupations.

    Replaces ``get_occ`` (energy order, see the module's docstring) and
    ``get_grad`` (all pairs of different occupation), and records them as
    ``mf.fixed_occupations``.
    """

    def get_occ(mo_energy=None, mo_coeff=None):
        return occupations.occupations(mf.mo_energy if mo_energy is None else mo_energy)

    def get_grad(mo_coeff, mo_occ, fock=None):
        if fock is None:
            dm1 = mf.make_rdm1(mo_coeff, mo_occ)
            fock = mf.get_fock(dm=dm1)  # (with a solvent's reaction field, if any)
        return orbital_gradient(mo_coeff, mo_occ, fock)

    mf.get_occ = get_occ
    mf.get_grad = get_grad
    mf.fixed_occupations = occupations
    mf._keys = set(getattr(mf, "_keys", ())) | {"fixed_occupations", "get_occ", "get_grad"}


def fixed(mf) -> FixedOccupations | None:
    """The occupations `apply` installed on `mf`, or None."""
    return getattr(mf, "fixed_occupations", None)


def electron_count(mf) -> float:
    """The number of electrons the SCF `mf` holds: its fixed occupations' sum, or the
    molecule's electron count."""
    occupations = fixed(mf)
    if occupations is not None:
        return float(sum(occupations.electrons))
    return float(mf.mol.nelectron)


def reoccupy(mo_energy, guess_occ, targets) -> np.ndarray:
    """Occupations `targets` (per spin, highest first) put on orbitals that carried
    `guess_occ`: the orbitals most occupied before come first, then by energy.

    The occupied orbitals of a guess keep their occupied character even where
    they lie above an empty one (a non-aufbau state, as DM21 has for the C atom
    with a fractional electron: the empty 2p beta orbital below the occupied 2s);
    an electron added goes into the lowest empty orbital.
    """
    mo_energy = np.asarray(mo_energy)
    out = np.zeros(mo_energy.shape)
    for s, target in enumerate(targets):
        order = np.lexsort((mo_energy[s], -np.asarray(guess_occ[s], dtype=float)))
        target = np.asarray(target, dtype=float)[:mo_energy.shape[-1]]
        out[s, order[:len(target)]] = target
    return out
