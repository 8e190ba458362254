"""Harmonic vibrational analysis of a Cartesian Hessian: frequencies, normal modes, IR.

Steps (E. B. Wilson, J. C. Decius, P. C. Cross, "Molecular Vibrations", 1955;
the same as Gaussian's "Vibrational Analysis in Gaussian" white paper and PySCF's
``pyscf.hessian.thermo.harmonic_analysis``):

1. the Hessian H (3N, 3N, Eh/bohr^2) is symmetrised, (H + H^T)/2 (a finite-difference
   Hessian is not quite symmetric; the largest |H - H^T|/2 is reported);
2. mass weighting, H_mw = M^-1/2 H M^-1/2 with the masses in u;
3. translations and rotations are projected out (Eckart conditions): the three
   translations sqrt(m_a) e_x and the rotations sqrt(m_a) (e_k x r_a) about the
   principal axes through the centre of mass (two for a linear molecule) span the
   external space; H_mw is diagonalised in its orthogonal complement, so there are
   exactly 3N-6 (3N-5 linear) vibrations.  A molecule is linear when all its atoms lie
   within `dm21cli.vib.symmetry.LINEAR_TOLERANCE_BOHR` (0.01 bohr) of one line;
4. eigenvalues lambda (Eh/(bohr^2 u)) give wavenumbers sign(lambda) sqrt(|lambda|) x
   5140.487 cm^-1: an imaginary frequency is written as a negative wavenumber (and
   flagged in `imaginary`);
5. normal modes as Cartesian displacements: d_k = M^-1/2 L_k (L_k the orthonormal
   mass-weighted eigenvector), normalised to length 1 over all 3N components (the
   convention of Gaussian's output, Psi4's ``x`` and the Molden files they write);
   reduced mass mu_k = 1 / |M^-1/2 L_k|^2 (u) and force constant k_k = mu_k lambda_k
   (Eh/bohr^2, and mdyn/Angstrom), negative for an imaginary mode;
6. IR intensities from the dipole derivatives P (3N, 3) = d mu / d x (atomic units, e):
   d mu / d Q_k = P^T M^-1/2 L_k (e u^-1/2), I_k = 974.880 km/mol x |d mu / d Q_k|^2
   (the integrated absorption coefficient N_A pi / (3 4 pi eps0 c^2) |d mu/dQ|^2, as
   Psi4 and Gaussian report it).

Constants: `dm21cli.core.units` (CODATA 2018).  Everything is NumPy; no PySCF.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import null_space

from dm21cli.core.errors import InputError
from dm21cli.core.units import (
    ELECTRON_MASS_AMU,
    HARTREE_BOHR2_MDYN_ANGSTROM,
    IR_INTENSITY_KM_MOL,
    MW_HESSIAN_WAVENUMBER_CM1,
)
from dm21cli.vib.symmetry import LINEAR_TOLERANCE_BOHR, centred, is_linear

#: default threshold of `classify` (cm^-1): imaginary modes up to this size are taken for
#: numerical noise.  A Hessian error dH (Eh/bohr^2) moves a soft mode of reduced mass mu (u)
#: by about sqrt(dH/mu) x 5140 cm^-1: central differences of gradients accurate to 1e-6
#: Eh/bohr with 0.005 bohr steps (dH ~ 1e-4) give up to ~50 cm^-1 in hydrogen motions.
#: Measured on water (B3LYP/def2-SVP, PySCF): the projected-out translations and rotations,
#: exactly 0 for an exact Hessian, came out at up to 23 cm^-1 for the analytic Hessian,
#: 17 cm^-1 for central differences of gradients (0.005 bohr, grid level 3) and 98 cm^-1
#: on grid level 1; `trans_rot_wavenumbers_cm1` shows this size for any Hessian.
IMAGINARY_THRESHOLD_CM1 = 50.0
#: default threshold of `stationary` (Eh/bohr): geomeTRIC's GAU criterion on the largest
#: per-atom gradient norm, the default of ``dm21 opt``
GRADIENT_THRESHOLD_HARTREE_BOHR = 4.5e-4


@dataclass
class HarmonicResult:
    """The outcome of `harmonic_analysis`; modes sorted by wavenumber (imaginary first).

    Shapes: N atoms, n = 3N-6 (3N-5 linear) vibrations.  Arrays are NumPy; `to_dict` gives
    plain lists for result.json.
    """

    #: (n,) cm^-1, negative for an imaginary frequency
    wavenumbers_cm1: np.ndarray
    #: (n,) bool, True where the frequency is imaginary (negative eigenvalue)
    imaginary: np.ndarray
    #: (n,) eigenvalues of the projected mass-weighted Hessian, Eh/(bohr^2 u)
    eigenvalues_hartree_bohr2_amu: np.ndarray
    #: (n, N, 3) Cartesian displacement of each mode, each of length 1 (dimensionless)
    normal_modes: np.ndarray
    #: (n, 3N) orthonormal eigenvectors of the mass-weighted Hessian (L_k)
    modes_mass_weighted: np.ndarray
    #: (n,) u
    reduced_masses_amu: np.ndarray
    #: (n,) Eh/bohr^2 (mu_k lambda_k), negative for imaginary modes
    force_constants_hartree_bohr2: np.ndarray
    #: (n,) km/mol, or None without dipole derivatives
    ir_intensities_km_mol: np.ndarray | None
    #: whether the molecule was treated as linear (3N-5 vibrations)
    linear: bool
    #: (5 or 6,) wavenumbers (cm^-1, negative if imaginary) of the Hessian in the space of
    #: translations and rotations: ~0 for an exact Hessian at a stationary point; their
    #: size measures the numerical noise of a finite-difference Hessian
    trans_rot_wavenumbers_cm1: np.ndarray
    #: largest |H - H^T| / 2 of the Hessian given, Eh/bohr^2
    hessian_asymmetry_hartree_bohr2: float
    #: (N, 3) bohr and (N,) u, as given
    coords_bohr: np.ndarray = field(repr=False)
    masses_amu: np.ndarray = field(repr=False)

    @property
    def n_vibrations(self) -> int:
        return len(self.wavenumbers_cm1)

    @property
    def n_imaginary(self) -> int:
        return int(np.count_nonzero(self.imaginary))

    @property
    def frequencies_hartree(self) -> np.ndarray:
        """(n,) vibrational quanta h nu = hbar omega in Eh, negative for imaginary modes
        (omega in atomic units: sqrt(lambda / (u in electron masses)))."""
        lam = self.eigenvalues_hartree_bohr2_amu * ELECTRON_MASS_AMU
        return np.sign(lam) * np.sqrt(np.abs(lam))

    @property
    def force_constants_mdyn_angstrom(self) -> np.ndarray:
        """(n,) force constants in mdyn/Angstrom (negative for imaginary modes)."""
        return self.force_constants_hartree_bohr2 * HARTREE_BOHR2_MDYN_ANGSTROM

    def to_dict(self) -> dict:
        """Plain-Python dict for result.json: atomic units and the usual spectroscopic units,
        each key naming its unit; modes as [mode][atom][x, y, z]."""
        return {
            "n_vibrations": self.n_vibrations,
            "n_imaginary": self.n_imaginary,
            "linear": bool(self.linear),
            "wavenumbers_cm1": self.wavenumbers_cm1.tolist(),
            "imaginary": [bool(x) for x in self.imaginary],
            "frequencies_hartree": self.frequencies_hartree.tolist(),
            "reduced_masses_amu": self.reduced_masses_amu.tolist(),
            "force_constants_hartree_bohr2": self.force_constants_hartree_bohr2.tolist(),
            "force_constants_mdyn_angstrom": self.force_constants_mdyn_angstrom.tolist(),
            "ir_intensities_km_mol": (None if self.ir_intensities_km_mol is None
                                      else self.ir_intensities_km_mol.tolist()),
            "normal_modes": self.normal_modes.tolist(),
            "normal_modes_normalisation": "Cartesian displacements, each mode of length 1",
            "trans_rot_wavenumbers_cm1": self.trans_rot_wavenumbers_cm1.tolist(),
            "hessian_asymmetry_hartree_bohr2": float(self.hessian_asymmetry_hartree_bohr2),
            "masses_amu": self.masses_amu.tolist(),
        }


def check_inputs(hessian, coords_bohr, masses_amu, dipole_derivatives=None):
    """The inputs as float arrays (3N, 3N), (N, 3), (N,), (3N, 3) or None, after checking
    their shapes and values; InputError naming the wrong one."""
    coords = np.asarray(coords_bohr, dtype=float)
    if coords.ndim != 2 or coords.shape[1] != 3 or len(coords) == 0:
        raise InputError(f"coordinates must have shape (N, 3), not {coords.shape}",
                         field="coordinates")
    n = len(coords)
    if n == 1:
        raise InputError("a single atom has no vibrations (3N-6 = 0): nothing to analyse",
                         field="molecule")
    masses = np.asarray(masses_amu, dtype=float)
    if masses.shape != (n,):
        raise InputError(f"{masses.size} masses given for {n} atoms", field="masses")
    if not np.all(np.isfinite(masses)) or np.any(masses <= 0):
        raise InputError(f"masses must be positive (u), not {masses.tolist()}", field="masses")
    hess = np.asarray(hessian, dtype=float)
    if hess.ndim == 4 and hess.shape == (n, n, 3, 3):  # PySCF's (atom, atom, x, y) layout
        hess = hess.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n)
    if hess.shape != (3 * n, 3 * n):
        raise InputError(f"the Hessian must be a square {3 * n} x {3 * n} matrix for {n} atoms, "
                         f"not {hess.shape}", field="hessian")
    if not np.all(np.isfinite(hess)):
        raise InputError("the Hessian holds NaN or infinite values", field="hessian")
    if not np.all(np.isfinite(coords)):
        raise InputError("the coordinates hold NaN or infinite values", field="coordinates")
    dip = None
    if dipole_derivatives is not None:
        dip = np.asarray(dipole_derivatives, dtype=float)
        if dip.shape == (3, 3 * n):
            dip = dip.T
        if dip.shape != (3 * n, 3) or not np.all(np.isfinite(dip)):
            raise InputError(f"dipole derivatives must be finite with shape ({3 * n}, 3), not "
                             f"{dip.shape}", field="dipole_derivatives")
    return hess, coords, masses, dip


def external_space(coords_bohr, masses_amu, linear: bool) -> np.ndarray:
    """(3N, 5 or 6) orthonormal basis of the mass-weighted translations and rotations.

    Rotations are about the principal axes through the centre of mass; a linear molecule
    keeps the two about the axes normal to it.
    """
    r = centred(coords_bohr, masses_amu)
    sqrt_m = np.sqrt(np.asarray(masses_amu, dtype=float))
    n = len(r)
    vectors = [np.kron(sqrt_m, unit) for unit in np.eye(3)]
    inertia = np.einsum("a,ab,ac->bc", np.asarray(masses_amu, dtype=float), r, r)
    inertia = np.eye(3) * np.trace(inertia) - inertia
    _, axes = np.linalg.eigh(inertia)  # moments ascending: a linear molecule's axis first
    for k in range(1 if linear else 0, 3):
        vectors.append((sqrt_m[:, None] * np.cross(axes[:, k], r)).reshape(3 * n))
    q, _ = np.linalg.qr(np.column_stack(vectors))
    return q


def harmonic_analysis(hessian_hartree_bohr2, coords_bohr, masses_amu,
                      dipole_derivatives=None, linear: bool | None = None) -> HarmonicResult:
    """Frequencies, normal modes, reduced masses, force constants and IR intensities.

    hessian_hartree_bohr2: (3N, 3N) Cartesian Hessian in Eh/bohr^2 (PySCF's (N, N, 3, 3)
    is accepted too); coords_bohr: (N, 3); masses_amu: (N,) in u; dipole_derivatives:
    (3N, 3) d mu_b / d x_i in atomic units (e), or None; linear: None (detected: all atoms
    within 0.01 bohr of one line), True or False.  Bad shapes or values, a single atom and a
    `linear` that contradicts the geometry raise InputError.  See the module docstring.
    """
    hess, coords, masses, dip = check_inputs(hessian_hartree_bohr2, coords_bohr, masses_amu,
                                             dipole_derivatives)
    detected = is_linear(coords, masses, LINEAR_TOLERANCE_BOHR)
    if linear is None:
        linear = detected
    elif bool(linear) != detected:
        shape = "linear" if detected else "not linear"
        raise InputError(f"linear: {bool(linear)} contradicts the geometry, which is {shape} "
                         f"(tolerance {LINEAR_TOLERANCE_BOHR} bohr)", field="linear")
    asymmetry = float(np.abs(hess - hess.T).max() / 2)
    hess = (hess + hess.T) / 2
    inv_sqrt_m = np.repeat(masses ** -0.5, 3)
    hess_mw = inv_sqrt_m[:, None] * hess * inv_sqrt_m[None, :]

    external = external_space(coords, masses, bool(linear))
    internal = null_space(external.T)  # (3N, n) orthonormal complement of the external space
    eigenvalues, vectors = np.linalg.eigh(internal.T @ hess_mw @ internal)
    modes_mw = phased((internal @ vectors).T)  # (n, 3N), orthonormal rows
    trans_rot = np.linalg.eigvalsh(external.T @ hess_mw @ external)

    cartesian = modes_mw * inv_sqrt_m[None, :]
    reduced_masses = 1.0 / np.einsum("ki,ki->k", cartesian, cartesian)
    normal_modes = cartesian * np.sqrt(reduced_masses)[:, None]
    intensities = None
    if dip is not None:
        dmu_dq = cartesian @ dip  # (n, 3), e u^-1/2
        intensities = IR_INTENSITY_KM_MOL * np.einsum("kb,kb->k", dmu_dq, dmu_dq)
    return HarmonicResult(
        wavenumbers_cm1=to_wavenumbers_cm1(eigenvalues),
        imaginary=eigenvalues < 0,
        eigenvalues_hartree_bohr2_amu=eigenvalues,
        normal_modes=normal_modes.reshape(len(eigenvalues), len(masses), 3),
        modes_mass_weighted=modes_mw,
        reduced_masses_amu=reduced_masses,
        force_constants_hartree_bohr2=reduced_masses * eigenvalues,
        ir_intensities_km_mol=intensities,
        linear=bool(linear),
        trans_rot_wavenumbers_cm1=to_wavenumbers_cm1(trans_rot),
        hessian_asymmetry_hartree_bohr2=asymmetry,
        coords_bohr=coords, masses_amu=masses)


def phased(modes: np.ndarray) -> np.ndarray:
    """Rows of `modes` with their sign chosen so that the largest component is positive (the
    sign of an eigenvector is arbitrary; this makes outputs reproducible)."""
    index = np.argmax(np.abs(modes) > np.abs(modes).max(axis=1, keepdims=True) - 1e-8, axis=1)
    signs = np.sign(modes[np.arange(len(modes)), index])
    signs[signs == 0] = 1.0
    return modes * signs[:, None]


def to_wavenumbers_cm1(eigenvalues_hartree_bohr2_amu) -> np.ndarray:
    """Eigenvalues of a mass-weighted Hessian (Eh/(bohr^2 u)) -> wavenumbers (cm^-1),
    negative for negative eigenvalues (imaginary frequencies)."""
    lam = np.asarray(eigenvalues_hartree_bohr2_amu, dtype=float)
    return np.sign(lam) * np.sqrt(np.abs(lam)) * MW_HESSIAN_WAVENUMBER_CM1


@dataclass(frozen=True)
class Classification:
    """What the imaginary modes say about a stationary point (`classify`)."""

    #: "minimum" or "ts", as asked
    kind: str
    #: whether the structure is what `kind` says
    ok: bool
    #: imaginary modes larger than the threshold, and their wavenumbers (cm^-1, negative)
    n_imaginary: int
    imaginary_cm1: tuple
    #: imaginary modes at or below the threshold (taken for numerical noise)
    n_small_imaginary: int
    threshold_cm1: float
    #: one sentence for summary.txt and result.json
    message: str

    def to_dict(self) -> dict:
        return {"kind": self.kind, "ok": self.ok, "n_imaginary": self.n_imaginary,
                "imaginary_cm1": list(self.imaginary_cm1),
                "n_small_imaginary": self.n_small_imaginary,
                "imaginary_threshold_cm1": self.threshold_cm1, "message": self.message}


def classify(result: HarmonicResult, kind: str = "minimum",
             imaginary_threshold_cm1: float = IMAGINARY_THRESHOLD_CM1) -> Classification:
    """Whether `result` is a minimum (no imaginary mode above the threshold) or a transition
    state ("ts": exactly one), in words.  Imaginary modes at or below the threshold
    (default `IMAGINARY_THRESHOLD_CM1`, 50 cm^-1) are counted apart as numerical noise."""
    if kind not in ("minimum", "ts"):
        raise InputError(f"kind must be 'minimum' or 'ts', not {kind!r}", field="kind")
    threshold = float(imaginary_threshold_cm1)
    if not threshold >= 0:
        raise InputError(f"the imaginary-mode threshold must be >= 0 cm^-1, not {threshold}",
                         field="imaginary_threshold_cm1")
    imag = result.wavenumbers_cm1[result.imaginary]
    large = tuple(float(w) for w in imag if abs(w) > threshold)
    small = len(imag) - len(large)
    shown = ", ".join(f"{abs(w):.1f}i" for w in large)
    noise = (f"; {small} imaginary mode{'s' if small > 1 else ''} of at most {threshold:g} "
             f"cm^-1 taken for numerical noise" if small else "")
    if kind == "minimum":
        ok = not large
        message = (f"a minimum: no imaginary mode above {threshold:g} cm^-1{noise}" if ok else
                   f"not a minimum: {len(large)} imaginary mode{'s' if len(large) > 1 else ''} "
                   f"above {threshold:g} cm^-1 ({shown} cm^-1){noise}")
    else:
        ok = len(large) == 1
        message = (f"a transition state: one imaginary mode above {threshold:g} cm^-1 "
                   f"({shown} cm^-1){noise}" if ok else
                   f"not a transition state: {len(large)} imaginary modes above {threshold:g} "
                   f"cm^-1{' (' + shown + ' cm^-1)' if large else ''}, where a transition state "
                   f"has exactly one{noise}")
    return Classification(kind, ok, len(large), large, small, threshold, message)


@dataclass(frozen=True)
class Stationarity:
    """Whether a gradient is small enough for a harmonic analysis (`stationary`)."""

    ok: bool
    #: largest per-atom gradient norm and the RMS of the per-atom norms (Eh/bohr)
    max_gradient_hartree_bohr: float
    rms_gradient_hartree_bohr: float
    threshold_hartree_bohr: float
    message: str

    def to_dict(self) -> dict:
        return {"ok": self.ok, "max_gradient_hartree_bohr": self.max_gradient_hartree_bohr,
                "rms_gradient_hartree_bohr": self.rms_gradient_hartree_bohr,
                "threshold_hartree_bohr": self.threshold_hartree_bohr, "message": self.message}


def stationary(gradient_hartree_bohr,
               threshold_hartree_bohr: float = GRADIENT_THRESHOLD_HARTREE_BOHR) -> Stationarity:
    """Whether the largest per-atom gradient norm (as geomeTRIC's gmax) is at most
    `threshold_hartree_bohr` (default: the GAU criterion of ``dm21 opt``, 4.5e-4 Eh/bohr).
    gradient: (N, 3) or (3N,) in Eh/bohr.  Not stationary: the frequencies are computed all
    the same, and `message` is the warning to show."""
    grad = np.asarray(gradient_hartree_bohr, dtype=float).reshape(-1, 3)
    if not np.all(np.isfinite(grad)):
        raise InputError("the gradient holds NaN or infinite values", field="gradient")
    norms = np.linalg.norm(grad, axis=1)
    gmax, grms = float(norms.max()), float(np.sqrt(np.mean(norms ** 2)))
    ok = gmax <= threshold_hartree_bohr
    message = (f"the geometry is stationary: largest atomic gradient {gmax:.2e} Eh/bohr <= "
               f"{threshold_hartree_bohr:.2e}" if ok else
               f"the geometry is not stationary: largest atomic gradient {gmax:.2e} Eh/bohr > "
               f"{threshold_hartree_bohr:.2e} (the optimiser's criterion); frequencies at a "
               f"point that is not stationary are not meaningful: optimise the geometry first "
               f"(dm21 opt)")
    return Stationarity(ok, gmax, grms, float(threshold_hartree_bohr), message)
