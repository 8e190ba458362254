"""Ideal-gas thermochemistry: rigid rotor, harmonic oscillator, and the quasi-RRHO option.

Formulas (D. A. McQuarrie, "Statistical Mechanics", 1976; the same as Gaussian's
"Thermochemistry in Gaussian" white paper), per molecule, k the Boltzmann constant:

- translation: U = 3/2 kT, S = k [ln((2 pi m kT / h^2)^3/2 kT/P) + 5/2];
- rotation (rigid rotor, moments I from the masses and geometry, sigma the rotational
  symmetry number): linear U = kT, S = k [ln(8 pi^2 I kT / (sigma h^2)) + 1]; otherwise
  U = 3/2 kT, S = k [ln(sqrt(pi I_A I_B I_C) / sigma (8 pi^2 kT / h^2)^3/2) + 3/2];
- vibration (harmonic, x = h nu / kT, real modes only: imaginary modes, as the
  transition state's reaction coordinate, are left out and counted):
  ZPVE = sum h nu / 2, U = ZPVE + sum h nu / (e^x - 1),
  S = k sum [x / (e^x - 1) - ln(1 - e^-x)];
- electronic: S = k ln(multiplicity) (no excited states);
- H = U + kT, G = H - TS, with U = E_electronic + the sums above.

Quasi-RRHO (``qrrho``), for low modes the harmonic oscillator describes badly; a mode
of wavenumber w gets the weight f(w) = 1 / (1 + (w0/w)^4) (w0 = ``cutoff_cm1``,
default 100 cm^-1):

- entropy, Grimme (S. Grimme, Chem. Eur. J. 18, 9955 (2012), eqs. 4-7):
  S = f S_harmonic + (1 - f) S_free_rotor, with S_free_rotor = k [1/2 +
  ln(sqrt(8 pi^3 mu' kT / h^2))], mu = h / (8 pi^2 nu), mu' = mu B / (mu + B),
  B = 1e-44 kg m^2 (Grimme's average molecular moment of inertia);
- enthalpy, Head-Gordon (Y.-P. Li, J. Gomes, S. M. Sharada, A. T. Bell, M. Head-Gordon,
  J. Phys. Chem. C 119, 1840 (2015)): each mode's vibrational energy (its zero-point
  energy included) becomes f (h nu/2 + h nu/(e^x - 1)) + (1 - f) kT/2 (as GoodVibes
  computes it).  The reported ZPVE stays the harmonic one.

Why written here and not called from a library (issue 23 asks to prefer one): PySCF's
``pyscf.hessian.thermo.thermo`` takes an SCF object, uses isotope-averaged masses (no
per-atom masses) and its own strict symmetry detection, which ignores isotopes (HDO gets
sigma 2) and cannot be overridden; ASE's ``IdealGasThermo`` has the formulas behind a
fitting interface but is an optional extra of dm21cli (it would become a dependency of
``dm21 freq`` for ten lines), works in eV with CODATA 2014 constants, and its quasi-RRHO
(``MSRRHOThermo``) is the 2021 msRRHO variant (the molecule's own mean moment of inertia,
Otlyotov-Minenkov energies), not Grimme 2012 / Head-Gordon 2015.  geomeTRIC's
``free_energy_harmonic`` has no symmetry number.  So the textbook formulas are written once
here with the CODATA 2018 constants of `dm21cli.core.units`, and `tests/test_vib.py`
checks them against both PySCF's ``thermo`` and ASE's ``IdealGasThermo`` (and Grimme's
entropy against ASE's ``RRHOMode``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from dm21cli.core.errors import InputError
from dm21cli.core.units import (
    AMU_KG,
    ATM_PA,
    BOHR_M,
    BOLTZMANN_HARTREE_K,
    BOLTZMANN_J_K,
    HARTREE_CAL_MOL,
    HARTREE_KCAL_MOL,
    PLANCK_J_S,
    SPEED_OF_LIGHT_M_S,
    WAVENUMBER_HARTREE,
)
from dm21cli.vib.symmetry import centred, point_group

#: Grimme's average moment of inertia for the free-rotor entropy, kg m^2
GRIMME_INERTIA_KG_M2 = 1e-44
#: default quasi-RRHO cutoff w0 (cm^-1) and damping exponent (Grimme 2012)
QRRHO_CUTOFF_CM1 = 100.0
QRRHO_ALPHA = 4
#: the quasi-RRHO schemes there are
QRRHO_ENTROPY = ("grimme",)
QRRHO_ENTHALPY = ("head-gordon",)


def check_conditions(temperatures_K, pressure_Pa, multiplicity, symmetry_number, qrrho):
    """(temperatures list, pressure, multiplicity, sigma or None, qrrho dict or None), checked;
    InputError naming the field otherwise (``temperatures``, ``pressure``, ...)."""
    temps = [temperatures_K] if isinstance(temperatures_K, (int, float)) else temperatures_K
    try:
        if isinstance(temps, (str, bytes)) or any(isinstance(t, bool) for t in temps):
            raise TypeError
        temps = [float(t) for t in temps]
    except (TypeError, ValueError):
        raise InputError(f"temperatures must be numbers (K), not {temperatures_K!r}",
                         field="temperatures") from None
    if not temps or any(not math.isfinite(t) or t <= 0 for t in temps):
        raise InputError(f"temperatures must be one or more positive numbers (K), not "
                         f"{temperatures_K!r}", field="temperatures")
    pressure = _positive(pressure_Pa, "pressure", "Pa")
    if isinstance(multiplicity, bool) or not isinstance(multiplicity, (int, np.integer)) \
            or multiplicity < 1:
        raise InputError(f"multiplicity must be an integer >= 1, not {multiplicity!r}",
                         field="multiplicity")
    if symmetry_number is not None and (isinstance(symmetry_number, bool) or not isinstance(
            symmetry_number, (int, np.integer)) or symmetry_number < 1):
        raise InputError(f"symmetry_number must be an integer >= 1 (or unset: from the point "
                         f"group), not {symmetry_number!r}", field="symmetry_number")
    return temps, pressure, int(multiplicity), symmetry_number, check_qrrho(qrrho)


def _positive(value, name: str, unit: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise InputError(f"{name} must be a positive number ({unit}), not {value!r}", field=name)
    return number


def check_qrrho(qrrho) -> dict | None:
    """The quasi-RRHO settings with defaults filled in, or None (pure RRHO)."""
    if qrrho is None:
        return None
    if not isinstance(qrrho, Mapping):
        raise InputError(f"qrrho must be a mapping (entropy, enthalpy, cutoff_cm1) or unset, not "
                         f"{qrrho!r}", field="qrrho")
    unknown = sorted(set(qrrho) - {"entropy", "enthalpy", "cutoff_cm1"})
    if unknown:
        raise InputError(f"unknown key {unknown[0]!r} (known: entropy, enthalpy, cutoff_cm1)",
                         field="qrrho")
    entropy, enthalpy = qrrho.get("entropy"), qrrho.get("enthalpy")
    if entropy is not None and entropy not in QRRHO_ENTROPY:
        raise InputError(f"unknown scheme {entropy!r} (known: {', '.join(QRRHO_ENTROPY)})",
                         field="qrrho.entropy")
    if enthalpy is not None and enthalpy not in QRRHO_ENTHALPY:
        raise InputError(f"unknown scheme {enthalpy!r} (known: {', '.join(QRRHO_ENTHALPY)})",
                         field="qrrho.enthalpy")
    cutoff = _positive(qrrho.get("cutoff_cm1", QRRHO_CUTOFF_CM1), "qrrho.cutoff_cm1", "cm^-1")
    return {"entropy": entropy, "enthalpy": enthalpy, "cutoff_cm1": cutoff}


def moments_of_inertia_amu_bohr2(coords_bohr, masses_amu) -> np.ndarray:
    """(3,) principal moments of inertia about the centre of mass, ascending, u bohr^2."""
    r = centred(coords_bohr, masses_amu)
    masses = np.asarray(masses_amu, dtype=float)
    tensor = np.einsum("a,ab,ac->bc", masses, r, r)
    return np.linalg.eigvalsh(np.eye(3) * np.trace(tensor) - tensor)


def rotational_constants_cm1(moments_amu_bohr2, linear: bool) -> list[float]:
    """Rotational constants B = h / (8 pi^2 c I) in cm^-1: [A, B, C] descending, or [B]
    for a linear molecule."""
    moments = np.sort(np.asarray(moments_amu_bohr2, dtype=float))[2 if linear else 0:]
    inertia_si = moments * AMU_KG * BOHR_M ** 2
    constants = PLANCK_J_S / (8 * math.pi ** 2 * SPEED_OF_LIGHT_M_S * 100.0 * inertia_si)
    return sorted(constants.tolist(), reverse=True)


def damping(wavenumbers_cm1, cutoff_cm1: float) -> np.ndarray:
    """Grimme's weight of the harmonic oscillator, 1 / (1 + (w0/w)^4), per mode."""
    w = np.asarray(wavenumbers_cm1, dtype=float)
    with np.errstate(over="ignore", divide="ignore"):
        return 1.0 / (1.0 + (cutoff_cm1 / w) ** QRRHO_ALPHA)


def harmonic_parts(wavenumbers_cm1, temperature_K: float):
    """Per real mode: (zero-point energy, thermal vibrational energy above it) in Eh and the
    entropy in Eh/K, harmonic oscillator."""
    quanta = np.asarray(wavenumbers_cm1, dtype=float) * WAVENUMBER_HARTREE  # h nu, Eh
    kt = BOLTZMANN_HARTREE_K * temperature_K
    x = quanta / kt
    with np.errstate(over="ignore"):
        bose = 1.0 / np.expm1(x)  # 0 where exp overflows (x > 709)
    entropy = BOLTZMANN_HARTREE_K * (x * bose - np.log1p(-np.exp(-x)))
    return quanta / 2, quanta * bose, entropy


def free_rotor_entropy(wavenumbers_cm1, temperature_K: float) -> np.ndarray:
    """Grimme's free-rotor entropy (Eh/K) of modes of these wavenumbers (eqs. 4-6 of
    Chem. Eur. J. 18, 9955 (2012))."""
    nu = np.asarray(wavenumbers_cm1, dtype=float) * SPEED_OF_LIGHT_M_S * 100.0  # 1/s
    mu = PLANCK_J_S / (8 * math.pi ** 2 * nu)
    mu_eff = mu * GRIMME_INERTIA_KG_M2 / (mu + GRIMME_INERTIA_KG_M2)
    arg = 8 * math.pi ** 3 * mu_eff * BOLTZMANN_J_K * temperature_K / PLANCK_J_S ** 2
    return BOLTZMANN_HARTREE_K * (0.5 + 0.5 * np.log(arg))


def vibrational_terms(wavenumbers_cm1, temperature_K: float, qrrho: dict | None):
    """(ZPVE, vibrational energy including the ZPVE, entropy) of the real modes: Eh, Eh,
    Eh/K; with the quasi-RRHO schemes `qrrho` asks for."""
    zpe, thermal, entropy = harmonic_parts(wavenumbers_cm1, temperature_K)
    energy = zpe + thermal
    if qrrho is not None:
        weight = damping(wavenumbers_cm1, qrrho["cutoff_cm1"])
        if qrrho["entropy"] == "grimme":
            rotor = free_rotor_entropy(wavenumbers_cm1, temperature_K)
            entropy = weight * entropy + (1 - weight) * rotor
        if qrrho["enthalpy"] == "head-gordon":
            half_kt = BOLTZMANN_HARTREE_K * temperature_K / 2
            energy = weight * energy + (1 - weight) * half_kt
    return float(zpe.sum()), float(energy.sum()), float(entropy.sum())


def translational_entropy(total_mass_amu: float, temperature_K: float, pressure_Pa: float):
    """Sackur-Tetrode entropy of an ideal gas of molecules of this mass, Eh/K."""
    mass = total_mass_amu * AMU_KG
    kt = BOLTZMANN_J_K * temperature_K
    q = (2 * math.pi * mass * kt / PLANCK_J_S ** 2) ** 1.5 * kt / pressure_Pa
    return BOLTZMANN_HARTREE_K * (math.log(q) + 2.5)


def rotational_entropy(moments_amu_bohr2, linear: bool, sigma: int, temperature_K: float):
    """Rigid-rotor entropy (high-temperature limit), Eh/K."""
    inertia = np.sort(np.asarray(moments_amu_bohr2, dtype=float)) * AMU_KG * BOHR_M ** 2
    factor = 8 * math.pi ** 2 * BOLTZMANN_J_K * temperature_K / PLANCK_J_S ** 2
    if linear:
        return BOLTZMANN_HARTREE_K * (math.log(factor * inertia[2] / sigma) + 1.0)
    q = math.sqrt(math.pi * float(np.prod(inertia))) / sigma * factor ** 1.5
    return BOLTZMANN_HARTREE_K * (math.log(q) + 1.5)


def thermochemistry(result, coords_bohr, masses_amu, multiplicity: int,
                    electronic_energy_hartree: float, temperatures_K=(298.15,),
                    pressure_Pa: float = ATM_PA, symmetry_number: int | None = None,
                    qrrho: dict | None = None) -> list[dict]:
    """Ideal-gas RRHO thermochemistry at each temperature (see the module docstring).

    result: a `dm21cli.vib.harmonic.HarmonicResult`; coords_bohr (N, 3); masses_amu (N,) u;
    multiplicity 2S+1; electronic_energy_hartree the SCF energy E0; temperatures_K a number
    or a list (K, > 0); pressure_Pa (> 0, default 1 atm); symmetry_number None (from the
    point group, `dm21cli.vib.symmetry.point_group`) or an integer >= 1; qrrho None or
    {"entropy": "grimme" | None, "enthalpy": "head-gordon" | None, "cutoff_cm1": 100}.

    Returns one dict per temperature: energies in Eh (``*_hartree``) and kcal/mol, entropies
    in Eh/K and cal/(mol K), each key naming its unit; the totals (``zpve``, thermal energy,
    enthalpy, Gibbs free energy) include E0, the ``*_correction_*`` values do not.
    """
    temps, pressure, mult, sigma_given, qrrho = check_conditions(
        temperatures_K, pressure_Pa, multiplicity, symmetry_number, qrrho)
    coords = np.asarray(coords_bohr, dtype=float).reshape(-1, 3)
    masses = np.asarray(masses_amu, dtype=float)
    if masses.shape != (len(coords),) or len(coords) != result.normal_modes.shape[1]:
        raise InputError(f"{len(masses)} masses and {len(coords)} atoms do not match the "
                         f"analysis ({result.normal_modes.shape[1]} atoms)", field="masses")
    energy0 = float(electronic_energy_hartree)
    if not math.isfinite(energy0):
        raise InputError("the electronic energy is not a finite number", field="energy")
    group = point_group(coords, masses)
    sigma = group.symmetry_number if sigma_given is None else int(sigma_given)
    moments = moments_of_inertia_amu_bohr2(coords, masses)
    real = result.wavenumbers_cm1[result.wavenumbers_cm1 > 0]  # imaginary modes left out
    common = {
        "pressure_Pa": pressure, "multiplicity": mult, "point_group": group.name,
        "symmetry_number": sigma,
        "symmetry_number_source": "given" if sigma_given is not None else "point group",
        "linear": bool(result.linear),
        "rotational_constants_cm1": rotational_constants_cm1(moments, result.linear),
        "n_modes_used": int(len(real)), "n_imaginary_excluded": int(result.n_imaginary),
        "qrrho": qrrho, "electronic_energy_hartree": energy0,
    }
    return [dict(temperature_K=t, **common,
                 **_terms(real, moments, float(masses.sum()), sigma, mult, result.linear, t,
                          pressure, qrrho, energy0))
            for t in temps]


def _terms(real_cm1, moments, total_mass, sigma, mult, linear, t, pressure, qrrho, energy0):
    """The energies and entropies of one temperature (see `thermochemistry`)."""
    kt = BOLTZMANN_HARTREE_K * t
    zpve, e_vib, s_vib = vibrational_terms(real_cm1, t, qrrho)
    e_trans, e_rot = 1.5 * kt, (1.0 if linear else 1.5) * kt
    s_parts = {"translational": translational_entropy(total_mass, t, pressure),
               "rotational": rotational_entropy(moments, linear, sigma, t),
               "vibrational": s_vib, "electronic": BOLTZMANN_HARTREE_K * math.log(mult)}
    entropy = sum(s_parts.values())
    thermal = e_trans + e_rot + e_vib  # ZPVE included
    enthalpy = thermal + kt
    gibbs = enthalpy - t * entropy
    return {
        "zpve_hartree": zpve, "zpve_kcal_mol": zpve * HARTREE_KCAL_MOL,
        "zero_k_enthalpy_hartree": energy0 + zpve,
        "thermal_energy_correction_hartree": thermal,
        "thermal_energy_correction_kcal_mol": thermal * HARTREE_KCAL_MOL,
        "thermal_energy_parts_kcal_mol": {
            "translational": e_trans * HARTREE_KCAL_MOL, "rotational": e_rot * HARTREE_KCAL_MOL,
            "vibrational": e_vib * HARTREE_KCAL_MOL, "electronic": 0.0},
        "thermal_energy_hartree": energy0 + thermal,
        "enthalpy_correction_hartree": enthalpy,
        "enthalpy_correction_kcal_mol": enthalpy * HARTREE_KCAL_MOL,
        "enthalpy_hartree": energy0 + enthalpy,
        "entropy_hartree_K": entropy, "entropy_cal_mol_K": entropy * HARTREE_CAL_MOL,
        "entropy_parts_cal_mol_K": {k: v * HARTREE_CAL_MOL for k, v in s_parts.items()},
        "ts_kcal_mol": t * entropy * HARTREE_KCAL_MOL,
        "gibbs_correction_hartree": gibbs, "gibbs_correction_kcal_mol": gibbs * HARTREE_KCAL_MOL,
        "gibbs_free_energy_hartree": energy0 + gibbs,
    }


def psi4_qcvars(entry: dict) -> dict:
    """Psi4's QCVariable names for one temperature's `thermochemistry` entry (Eh): ZPVE,
    THERMAL ENERGY / ENTHALPY / GIBBS FREE ENERGY (totals, E0 included), their CORRECTIONs,
    and ZERO K ENTHALPY (E0 + ZPVE)."""
    return {
        "ZPVE": entry["zpve_hartree"],
        "THERMAL ENERGY CORRECTION": entry["thermal_energy_correction_hartree"],
        "ENTHALPY CORRECTION": entry["enthalpy_correction_hartree"],
        "GIBBS FREE ENERGY CORRECTION": entry["gibbs_correction_hartree"],
        "ZERO K ENTHALPY": entry["zero_k_enthalpy_hartree"],
        "THERMAL ENERGY": entry["thermal_energy_hartree"],
        "ENTHALPY": entry["enthalpy_hartree"],
        "GIBBS FREE ENERGY": entry["gibbs_free_energy_hartree"],
    }
