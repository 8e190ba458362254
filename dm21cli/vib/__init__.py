"""Vibrations and thermochemistry from a Cartesian Hessian (issue 23): the analysis layer.

A library, independent of how the Hessian was computed (``dm21 freq`` differentiates
analytic gradients; the tests use PySCF's analytic Hessians):

- `masses`: most-abundant-isotope masses (u), per-atom overrides and isotope labels;
- `harmonic`: `harmonic_analysis` (frequencies, normal modes, reduced masses, force
  constants, IR intensities, translations and rotations projected out), `classify`
  (minimum or transition state) and `stationary` (is the gradient small enough);
- `symmetry`: the point group and rotational symmetry number, tolerant of the noise of
  an optimised geometry;
- `thermo`: ideal-gas rigid-rotor harmonic-oscillator thermochemistry with Grimme's
  (entropy) and Head-Gordon's (enthalpy) quasi-RRHO options, and Psi4's QCVariable names.

Atomic units inside (bohr, hartree, u for masses), spectroscopic units (cm^-1, km/mol,
mdyn/A, kcal/mol, cal/(mol K)) in the names that carry them.  Imports NumPy and SciPy;
PySCF only inside functions (its isotope table and point-group names).  Writing the
results (Molden, .xyz movies, summary tables) is `dm21cli.io.outputs.vibrations`.
"""

from dm21cli.vib.harmonic import (
    IMAGINARY_THRESHOLD_CM1,
    Classification,
    HarmonicResult,
    Stationarity,
    classify,
    harmonic_analysis,
    stationary,
)
from dm21cli.vib.masses import atomic_masses, default_masses_amu
from dm21cli.vib.symmetry import PointGroup, point_group, symmetry_number_of
from dm21cli.vib.thermo import psi4_qcvars, thermochemistry

__all__ = [
    "IMAGINARY_THRESHOLD_CM1",
    "Classification",
    "HarmonicResult",
    "PointGroup",
    "Stationarity",
    "atomic_masses",
    "classify",
    "default_masses_amu",
    "harmonic_analysis",
    "point_group",
    "psi4_qcvars",
    "stationary",
    "symmetry_number_of",
    "thermochemistry",
]
