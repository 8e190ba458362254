"""Physical constants and unit conversions, pinned in one place.

Everything inside dm21cli is in atomic units (bohr, hartree); Angstrom,
kcal/mol and eV appear only at the edges (input parsing, reports).

Source of every constant: CODATA 2018 (E. Tiesinga et al., Rev. Mod. Phys. 93,
025010 (2021); https://physics.nist.gov/cuu/Constants/).  Since the 2019 SI the
speed of light, Planck, Boltzmann and Avogadro constants and the elementary
charge are exact.
"""

import math

#: CODATA 2018 Bohr radius in Angstrom (the value PySCF uses).
BOHR_ANGSTROM = 0.529177210903
ANGSTROM_BOHR = 1.0 / BOHR_ANGSTROM
#: CODATA 2018 Hartree energy in eV and kcal/mol.
HARTREE_EV = 27.211386245988
HARTREE_KCAL_MOL = 627.5094740631
#: atomic unit of electric dipole moment in Debye.
AU_DEBYE = 2.541746473

# --- SI values (CODATA 2018), for vibrations and thermochemistry -----------------------
#: speed of light in vacuum, m/s (exact)
SPEED_OF_LIGHT_M_S = 299792458.0
#: Planck constant, J s (exact)
PLANCK_J_S = 6.62607015e-34
#: Boltzmann constant, J/K (exact)
BOLTZMANN_J_K = 1.380649e-23
#: Avogadro constant, 1/mol (exact)
AVOGADRO_PER_MOL = 6.02214076e23
#: elementary charge, C (exact)
ELEMENTARY_CHARGE_C = 1.602176634e-19
#: vacuum electric permittivity, F/m
VACUUM_PERMITTIVITY_F_M = 8.8541878128e-12
#: Hartree energy, J
HARTREE_J = 4.3597447222071e-18
#: Bohr radius, m
BOHR_M = 0.529177210903e-10
#: atomic mass constant (1 u = 1 dalton), kg
AMU_KG = 1.66053906660e-27
#: electron mass in u; 1 u is 1/ELECTRON_MASS_AMU = 1822.888... electron masses
ELECTRON_MASS_AMU = 5.48579909065e-4
#: standard atmosphere, Pa (exact, by definition)
ATM_PA = 101325.0
#: thermochemical calorie, J (exact, by definition)
CALORIE_J = 4.184

# --- derived conversions ------------------------------------------------------------
#: the Boltzmann constant in hartree per kelvin
BOLTZMANN_HARTREE_K = BOLTZMANN_J_K / HARTREE_J
#: hartree per particle -> cal/mol (entropies: Eh/K -> cal/(mol K))
HARTREE_CAL_MOL = HARTREE_J * AVOGADRO_PER_MOL / CALORIE_J
#: sqrt(eigenvalue of the mass-weighted Hessian in Eh/(bohr^2 u)) -> wavenumber in cm^-1
#: (omega = sqrt(k/m) in rad/s, divided by 2 pi c; about 5140.49)
MW_HESSIAN_WAVENUMBER_CM1 = (math.sqrt(HARTREE_J / (BOHR_M ** 2 * AMU_KG))
                             / (2 * math.pi * SPEED_OF_LIGHT_M_S * 100.0))
#: one wavenumber (cm^-1) as an energy h c (1/cm) in hartree
WAVENUMBER_HARTREE = PLANCK_J_S * SPEED_OF_LIGHT_M_S * 100.0 / HARTREE_J
#: force constant Eh/bohr^2 -> mdyn/Angstrom (1 mdyn/A = 100 N/m; about 15.569)
HARTREE_BOHR2_MDYN_ANGSTROM = HARTREE_J / BOHR_M ** 2 / 100.0
#: IR intensity: |d mu / d Q|^2 in e^2/u (dipole derivative in atomic units e a0/a0 along a
#: normal coordinate in bohr u^1/2) -> integrated absorption coefficient in km/mol,
#: N_A pi / (3 * 4 pi eps0 c^2) |d mu/d Q|^2 (SI) / 1000; about 974.88
IR_INTENSITY_KM_MOL = (AVOGADRO_PER_MOL * ELEMENTARY_CHARGE_C ** 2
                       / (12.0 * VACUUM_PERMITTIVITY_F_M * SPEED_OF_LIGHT_M_S ** 2 * AMU_KG)
                       / 1000.0)


def angstrom_to_bohr(x):
    return x * ANGSTROM_BOHR


def bohr_to_angstrom(x):
    return x * BOHR_ANGSTROM
