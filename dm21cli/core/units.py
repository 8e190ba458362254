"""Physical constants and unit conversions, pinned in one place.

Everything inside dm21cli is in atomic units (bohr, hartree); Angstrom,
kcal/mol and eV appear only at the edges (input parsing, reports).
"""

#: CODATA 2018 Bohr radius in Angstrom (the value PySCF uses).
BOHR_ANGSTROM = 0.529177210903
ANGSTROM_BOHR = 1.0 / BOHR_ANGSTROM
#: CODATA 2018 Hartree energy in eV and kcal/mol.
HARTREE_EV = 27.211386245988
HARTREE_KCAL_MOL = 627.5094740631
#: atomic unit of electric dipole moment in Debye.
AU_DEBYE = 2.541746473


def angstrom_to_bohr(x):
    return x * ANGSTROM_BOHR


def bohr_to_angstrom(x):
    return x * BOHR_ANGSTROM
