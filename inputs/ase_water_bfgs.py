"""Water relaxed by ASE's BFGS optimiser with DM21/def2-SVP forces (dm21cli's ASE calculator).

Run from the repository root:   python inputs/ase_water_bfgs.py
It needs ASE (pip install -e '.[ase]') and the DM21 weights.  The settings
(functional, basis, SCF) and the starting geometry are those of
inputs/water.yaml; the calculator writes no files, so its outputs section
does not apply.  ASE prints one line per step (energy in eV, largest force
in eV/Angstrom); each step starts from the previous step's density.
"""

from pathlib import Path

from ase.optimize import BFGS

from dm21cli.ase import DM21Calculator, job_atoms

job = Path(__file__).with_name("water.yaml")
atoms = job_atoms(job)
calc = DM21Calculator(job)
atoms.calc = calc
BFGS(atoms).run(fmax=0.01, steps=20)  # eV/Angstrom (0.01 eV/A = 1.9e-4 Ha/bohr)

print(f"E = {calc.info['energy_hartree']:.8f} Ha, r(OH) = {atoms.get_distance(0, 1):.4f} "
      f"{atoms.get_distance(0, 2):.4f} A, angle HOH = {atoms.get_angle(1, 0, 2):.2f} deg "
      f"({calc.counts['scf']} SCFs, {calc.counts['gradient']} gradients)")
