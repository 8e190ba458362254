"""The ASE calculator (`dm21cli.integrations.ase.DM21Calculator`), with real SCF runs.

Water in STO-3G on grid level 0 (DM21 unless said otherwise); "tight" is a
float64 SCF to conv_tol 1e-10 Ha and an orbital gradient of 1e-6, so that
energies of one geometry reached from different starting densities agree to
about 1e-12 Ha (measured 2e-14 to 6e-13).

* Forces are minus `nuclear_gradient` of the converged SCF, times
  ase.units.Hartree / ase.units.Bohr (1e-8 relative: only rounding).
* Forces against central differences of the calculator's own energy (h = 2e-4
  bohr, as tests/test_grad.py): within 1e-5 Ha/bohr, in eV/A.
* A moved geometry gets exchange integrals of its own: its energy equals a
  fresh calculator's there to 1e-8 Ha (measured below 1e-12).
* The previous density as the guess: after a 0.0005 A move the SCF needs
  fewer DM21 evaluations and warm-start cycles than a cold start (measured at
  default thresholds: 2 and 1 against 3 and 5); nothing is recomputed while
  the atoms stay where they are.
* Energy and dipole equal `run_job`'s for the same job file (1e-9 Ha and 1e-6
  Debye: the same SCF from the same start; measured 1.7e-10 Ha and 2e-8 Debye,
  the geometry differing by 6e-10 relative: ASE's Bohr radius against
  dm21cli's, CODATA 2014 and 2018).
* A few BFGS steps lower the energy; an SCF that does not converge raises.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("ase")

from ase import Atoms, units  # noqa: E402
from ase.calculators.calculator import CalculationFailed, SCFError  # noqa: E402

from dm21cli.core.errors import ConvergenceError, InputError  # noqa: E402
from dm21cli.integrations.ase import DM21Calculator, DM21SCFError, job_atoms  # noqa: E402
from dm21cli.jobs.gradient import nuclear_gradient  # noqa: E402

WATER = [[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]]
TIGHT = {"precision": "float64", "conv_tol": 1e-10, "conv_tol_grad": 1e-6}
#: 1e-5 Ha/bohr in eV/A
FORCE_TOL = 1e-5 * units.Hartree / units.Bohr


def _water(positions=WATER) -> Atoms:
    return Atoms("OH2", positions=positions)


def _calc(checkpoints_dir, **settings) -> DM21Calculator:
    base = {"basis": "sto-3g", "grid_level": 0, "threads": 1}
    return DM21Calculator(checkpoints=checkpoints_dir, **{**base, **settings})


def _moved(atoms: Atoms, atom: int, axis: int, step_angstrom: float) -> Atoms:
    out = atoms.copy()
    out.positions[atom, axis] += step_angstrom
    return out


@pytest.fixture(scope="module")
def walk(checkpoints_dir):
    """One tight DM21 calculator at the water geometry (energy, forces, dipole, each asked
    twice), then at a geometry with one H moved; a fresh calculator at the moved one."""
    calc = _calc(checkpoints_dir, scf=TIGHT)
    atoms = _water()
    atoms.calc = calc
    out = {"calc": calc, "energy": atoms.get_potential_energy(), "forces": atoms.get_forces(),
           "dipole": atoms.get_dipole_moment(), "info": dict(calc.info)}
    out["reference_gradient"] = nuclear_gradient(calc.mf, calc.spec)["gradient_hartree_per_bohr"]
    out["again"] = (atoms.get_potential_energy(), atoms.get_forces(), atoms.get_dipole_moment(),
                    calc.calculate(atoms.copy(), ["energy", "forces", "dipole"]))
    out["counts_after_repeats"] = dict(calc.counts)
    out["first_xc"] = calc.mf.dm21
    moved = _moved(atoms, 1, 1, 0.01)
    out["moved_energy"] = calc.get_potential_energy(moved)
    out["moved_info"] = dict(calc.info)
    out["moved_xc"] = calc.mf.dm21
    fresh = _calc(checkpoints_dir, scf=TIGHT)
    out["fresh_moved_energy"] = fresh.get_potential_energy(moved)
    return out


def test_forces_are_minus_the_library_gradient_in_ev_per_angstrom(walk):
    expected = -walk["reference_gradient"] * units.Hartree / units.Bohr
    assert np.abs(expected).max() > 0.1  # not trivially zero at this geometry
    np.testing.assert_allclose(walk["forces"], expected, rtol=1e-8, atol=1e-8 * np.abs(expected).max())
    assert walk["energy"] == pytest.approx(walk["info"]["energy_hartree"] * units.Hartree, rel=1e-14)


def test_nothing_is_recomputed_while_the_atoms_stay(walk):
    energy, forces, dipole, _ = walk["again"]
    assert walk["counts_after_repeats"] == {"scf": 1, "gradient": 1}
    assert energy == walk["energy"]
    assert np.array_equal(forces, walk["forces"]) and np.array_equal(dipole, walk["dipole"])


def test_a_moved_geometry_gets_its_own_integrals_and_the_fresh_energy(walk):
    assert walk["moved_xc"] is not walk["first_xc"]
    assert walk["moved_info"]["guess"] == "warm start + previous difference"
    assert abs(walk["moved_energy"] - walk["energy"]) > 1e-3  # the move changes the energy
    assert abs(walk["moved_energy"] - walk["fresh_moved_energy"]) / units.Hartree < 1e-8


@pytest.mark.parametrize("scf, fewer_evaluations", [({}, False), ({"conv_tol_grad": 1e-4}, True)])
def test_the_previous_density_saves_warm_start_cycles_and_dm21_evaluations(checkpoints_dir, scf,
                                                                          fewer_evaluations):
    """A small step.  At the default thresholds (what optimisers and dynamics run with) the
    warm start takes fewer cycles (measured 1 instead of 5), and DM21 its fewest evaluations
    from either start (2: the frozen-XC iterations end at the second, see
    FROZEN_XC_PREDICTED_CONVERGENCE); with a tighter orbital gradient one fewer too
    (measured 2 instead of 3)."""
    calc = _calc(checkpoints_dir, scf=scf)
    atoms = _water()
    calc.get_potential_energy(atoms)
    assert calc.info["guess"] == "warm start"
    moved = _moved(atoms, 1, 1, 0.0005)
    calc.get_potential_energy(moved)
    reused = dict(calc.info)
    cold = _calc(checkpoints_dir, scf=scf)
    cold.get_potential_energy(moved)
    assert reused["guess"] == "warm start + previous difference" and cold.info["guess"] == "warm start"
    if fewer_evaluations:
        assert reused["dm21_evaluations"] < cold.info["dm21_evaluations"]
    else:
        assert reused["dm21_evaluations"] == cold.info["dm21_evaluations"] == 2
    assert reused["warm_start"]["cycles"] < cold.info["warm_start"]["cycles"]
    assert calc.counts == {"scf": 2, "gradient": 0}


def test_forces_match_finite_differences_of_the_energy(checkpoints_dir):
    calc = _calc(checkpoints_dir, scf=TIGHT)
    atoms = _water()
    atoms.calc = calc
    forces = atoms.get_forces()
    h = 2e-4 * units.Bohr  # Angstrom
    for atom, axis in [(1, 1), (0, 2)]:
        plus = calc.get_potential_energy(_moved(atoms, atom, axis, h))
        minus = calc.get_potential_energy(_moved(atoms, atom, axis, -h))
        fd = -(plus - minus) / (2 * h)
        assert abs(forces[atom, axis]) > 0.1
        assert abs(forces[atom, axis] - fd) < FORCE_TOL, (atom, axis, forces[atom, axis], fd)


def test_bfgs_steps_lower_the_energy(checkpoints_dir):
    from ase.optimize import BFGS

    atoms = _water([[0.0, 0.0, 0.12], [0.0, 0.83, -0.45], [0.0, -0.70, -0.50]])
    atoms.calc = _calc(checkpoints_dir)
    start = atoms.get_potential_energy()
    start_fmax = np.abs(atoms.get_forces()).max()
    energies = []
    opt = BFGS(atoms, logfile=None)
    opt.attach(lambda: energies.append(atoms.get_potential_energy()))
    opt.run(fmax=1e-3, steps=4)
    assert len(energies) == 5  # the start and four steps
    assert energies[-1] < start - 1e-3  # eV
    assert np.abs(atoms.get_forces()).max() < start_fmax
    assert atoms.calc.counts["scf"] == 5 and atoms.calc.counts["gradient"] == 5


@pytest.mark.parametrize("functional, dispersion", [("DM21", None), ("B3LYP", "d3bj")])
def test_energy_and_dipole_are_the_jobs(tmp_path, checkpoints_dir, functional, dispersion):
    from dm21cli.io.inputs.load import load_job
    from dm21cli.io.outputs.qcschema import fields
    from dm21cli.jobs.run import run_job

    job = tmp_path / "water.yaml"
    job.write_text("molecule:\n  xyz: |\n" + "".join(f"    {s} {x} {y} {z}\n" for s, (x, y, z)
                                                     in zip("OHH", WATER))
                   + f"basis: sto-3g\nfunctional: {functional}\ndispersion: {dispersion or 'null'}\n"
                   "scf: {grid_level: 0, precision: float64, conv_tol: 1e-10, conv_tol_grad: 1e-6}\n"
                   f"job: {{output_dir: {tmp_path / 'out'}}}\nresources: {{threads: 1}}\n")
    result = fields(run_job(load_job(job), checkpoints=checkpoints_dir))  # dm21cli's layout
    calc = DM21Calculator(job, checkpoints=checkpoints_dir)
    assert calc.parameters["functional"] == functional and calc.parameters["grid_level"] == 0
    atoms = job_atoms(job)
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    assert energy / units.Hartree == pytest.approx(result["return_energy"], abs=1e-9)
    dipole_debye = atoms.get_dipole_moment() / units.Debye
    np.testing.assert_allclose(dipole_debye, result["properties"]["dipole_moment_debye"], atol=1e-6)
    assert abs(dipole_debye[2]) > 0.1
    if dispersion:
        assert calc.info["dispersion_energy_hartree"] == pytest.approx(
            result["properties"]["dispersion_energy"], abs=1e-12)
        assert calc.info["dispersion_energy_hartree"] < 0


def test_an_scf_that_does_not_converge_raises(checkpoints_dir):
    calc = _calc(checkpoints_dir, functional="B3LYP", scf={"max_cycle": 1, "max_attempts": 1})
    atoms = _water()
    atoms.calc = calc
    with pytest.raises(DM21SCFError, match="not converged") as err:
        atoms.get_potential_energy()
    assert isinstance(err.value, SCFError) and isinstance(err.value, CalculationFailed)
    assert isinstance(err.value, ConvergenceError)
    assert calc.results == {} and calc.mf is None and not calc.info["converged"]
    with pytest.raises(SCFError):  # asked again: computed again, not a stale number
        atoms.get_forces()
    calc.set(scf={"max_cycle": 50, "max_attempts": 1})
    assert atoms.get_potential_energy() < 0


def test_settings_are_checked_as_a_job_files_are(checkpoints_dir):
    with pytest.raises(InputError, match="scf.conv_tl"):
        _calc(checkpoints_dir, scf={"conv_tl": 1e-8})
    with pytest.raises(InputError, match="grid_level"):
        _calc(checkpoints_dir, grid_level=12)
    with pytest.raises(InputError, match="xc"):
        _calc(checkpoints_dir, xc="b3lyp")
    calc = _calc(checkpoints_dir, functional="DM21", multiplicity=2)
    with pytest.raises(InputError, match="multiplicity"):  # 10 electrons
        calc.get_potential_energy(_water())
    periodic = _water()
    periodic.pbc = True
    periodic.cell = [10, 10, 10]
    with pytest.raises(InputError, match="periodic"):
        _calc(checkpoints_dir).get_potential_energy(periodic)


# ----------------------------------------------------------------------------
# issue 22: set() resets, every keyword checked, the atoms' state not ignored
# ----------------------------------------------------------------------------
#: B3LYP then PBE on water/STO-3G, grid level 0 (a second or two per SCF)
B3LYP = {"functional": "B3LYP", "basis": "sto-3g", "grid_level": 0, "threads": 1}


@pytest.fixture(scope="module")
def switched():
    """One B3LYP calculator made with the atoms: energy and forces; set() with the same
    values, with threads only, then functional='pbe': energy and forces again (asked of the
    calculator, without atoms); a fresh PBE calculator's energy and forces."""
    atoms = _water()
    calc = DM21Calculator(atoms=atoms, **B3LYP)
    out = {"calc": calc, "b3lyp": (atoms.get_potential_energy(), atoms.get_forces())}
    out["same_values"] = calc.set(functional="B3LYP", basis="sto-3g", scf=None)
    out["threads_only"] = calc.set(threads=2)
    out["kept"] = (dict(calc.counts), calc.results.get("energy"), calc.mf is not None)
    out["to_pbe"] = calc.set(functional="pbe", threads=1)
    out["after_set"] = (calc.mf, dict(calc.results))
    out["pbe"] = (calc.get_potential_energy(), calc.get_forces())
    out["counts"] = dict(calc.counts)
    fresh = DM21Calculator(**{**B3LYP, "functional": "pbe"})
    out["fresh_pbe"] = (fresh.get_potential_energy(_water()), fresh.get_forces(_water()))
    return out


def test_set_with_a_new_functional_recomputes_energy_and_forces(switched):
    """The issue: after calc.set(functional=...) the old functional's energy and forces came
    back (ASE's Calculator.set only records parameters; a subclass must reset)."""
    assert switched["to_pbe"] == {"functional": "pbe", "threads": 1}
    mf, results = switched["after_set"]
    assert mf is None and results == {}
    (e_b3lyp, f_b3lyp), (e_pbe, f_pbe) = switched["b3lyp"], switched["pbe"]
    assert abs(e_pbe - e_b3lyp) > 0.1  # eV: another functional
    assert np.abs(f_pbe - f_b3lyp).max() > 1e-3
    e_fresh, f_fresh = switched["fresh_pbe"]
    assert abs(e_pbe - e_fresh) / units.Hartree < 1e-9  # the same SCF from the same start
    np.testing.assert_allclose(f_pbe, f_fresh, rtol=0, atol=1e-6)
    assert switched["counts"] == {"scf": 2, "gradient": 2}


def test_set_with_unchanged_values_or_threads_keeps_the_results(switched):
    """ASE's contract: set() returns what changed; nothing changed (or only threads, which
    do not change the numbers) keeps the results and the SCF."""
    assert switched["same_values"] == {}
    assert switched["threads_only"] == {"threads": 2}
    counts, energy, has_scf = switched["kept"]
    assert counts == {"scf": 1, "gradient": 1} and energy == switched["b3lyp"][0] and has_scf


#: bad keywords: (keywords, the field the error names, what its message says)
BAD_KEYWORDS = {
    "unknown-name": ({"xc": "pbe"}, "xc", "unknown parameter 'xc' (did you mean 'functional'?)"),
    "ase-directory": ({"directory": "run"}, "directory", "unknown parameter 'directory'"),
    "charge-type": ({"charge": "one"}, "charge", "expected an integer, got 'one'"),
    "charge-fraction": ({"charge": 0.5}, "charge", "expected an integer, got 0.5"),
    "multiplicity-zero": ({"multiplicity": 0}, "multiplicity", "must be an integer >= 1"),
    "functional-unknown": ({"functional": "no-such-xc"}, "functional",
                           "unknown functional 'no-such-xc'"),
    "functional-type": ({"functional": ["pbe"]}, "functional", "expected a functional name"),
    "basis-unknown": ({"basis": "no-such-basis"}, "basis", "unknown basis set 'no-such-basis'"),
    "basis-mapping": ({"basis": {"O": "sto-3g", "H": "no-such-basis"}}, "basis.H",
                      "unknown basis set 'no-such-basis'"),
    "dispersion": ({"dispersion": "d4"}, "dispersion", "unknown dispersion correction 'd4'"),
    "grid-level": ({"grid_level": 12}, "grid_level", "must be an integer from 0 to 9"),
    "scf-type": ({"scf": 3}, "scf", "expected a dict of the job file's scf keys"),
    "scf-key": ({"scf": {"conv_tl": 1e-8}}, "scf.conv_tl", "unknown key 'conv_tl'"),
    "scf-grid-level": ({"scf": {"grid_level": 1}}, "scf.grid_level",
                       "give the grid level as the keyword grid_level"),
    "warm-start": ({"functional": "DM21", "scf": {"warm_start": "no-such-xc"}}, "scf.warm_start",
                   "unknown warm-start functional"),
    "memory": ({"memory": "lots"}, "memory", "expected a size like 4000 (MB)"),
    "threads": ({"threads": 0}, "threads", "must be an integer from 1 to 1024"),
    "checkpoints-type": ({"checkpoints": 3}, "checkpoints", "expected the DM21 weights folder"),
}


@pytest.mark.parametrize("case", sorted(BAD_KEYWORDS))
def test_every_keyword_is_checked_when_the_calculator_is_made(case):
    """dm21cli's InputError naming the keyword, on one line; before issue 22 unknown names
    and a non-dict scf were a raw TypeError, functional and basis names were not checked
    until the first geometry, and fields were named by the job file (molecule.charge)."""
    keywords, field, message = BAD_KEYWORDS[case]
    with pytest.raises(InputError) as err:
        DM21Calculator(**{**B3LYP, **keywords})
    assert err.value.field == field, str(err.value)
    assert str(err.value).startswith(f"DM21Calculator: {field}: {message}"), str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("case", sorted(BAD_KEYWORDS))
def test_every_keyword_is_checked_by_set_and_a_refused_set_changes_nothing(case):
    """set() checks as the constructor does, before it changes anything: before issue 22 it
    stored the bad value, and an unknown functional reached the next SCF."""
    keywords, field, message = BAD_KEYWORDS[case]
    calc = DM21Calculator(**B3LYP)
    before = dict(calc.parameters)
    with pytest.raises(InputError) as err:
        calc.set(**keywords)
    assert err.value.field == field and message in str(err.value), str(err.value)
    assert dict(calc.parameters) == before and calc.checkpoints is None


def test_the_job_and_the_atoms_given_are_checked_when_the_calculator_is_made(tmp_path):
    """A job that is not a path, atoms that are not Atoms, and charge and multiplicity that
    do not fit the atoms given: InputError at once (the last one was found only at the
    first energy before issue 22)."""
    with pytest.raises(InputError, match="^DM21Calculator: job: expected a job file"):
        DM21Calculator(3, **B3LYP)
    with pytest.raises(InputError, match="^DM21Calculator: atoms: expected ASE Atoms, got str"):
        DM21Calculator(atoms="H2O", **B3LYP)
    with pytest.raises(InputError, match="^DM21Calculator: multiplicity: multiplicity 2 does not "
                                         "fit 10 electrons"):
        DM21Calculator(atoms=_water(), **{**B3LYP, "multiplicity": 2})
    with pytest.raises(InputError, match="^DM21Calculator: charge: charge 11 leaves -1 electrons"):
        DM21Calculator(atoms=_water(), **{**B3LYP, "charge": 11})
    with pytest.raises(InputError, match="^DM21Calculator: atoms: atom 2: unknown element"):
        DM21Calculator(atoms=Atoms("OX2", positions=WATER), **B3LYP)
    with pytest.raises(InputError, match="^DM21Calculator: atoms: no atoms to compute"):
        DM21Calculator(**B3LYP).get_potential_energy()


def test_a_bad_charge_and_multiplicity_from_set_names_the_keyword():
    """set() checks what needs no atoms; that multiplicity 2 does not fit water's 10
    electrons is found at the next energy, naming the keyword (not molecule.multiplicity)."""
    atoms = _water()
    atoms.calc = DM21Calculator(**B3LYP)
    assert atoms.calc.set(multiplicity=2) == {"multiplicity": 2}
    with pytest.raises(InputError) as err:
        atoms.get_potential_energy()
    assert err.value.field == "multiplicity" and atoms.calc.counts["scf"] == 0


@pytest.fixture(scope="module")
def water_b3lyp():
    """A B3LYP water calculator that has computed the energy (one SCF)."""
    atoms = _water()
    atoms.calc = DM21Calculator(**B3LYP)
    energy = atoms.get_potential_energy()
    return atoms, energy


def test_initial_magnetic_moments_that_contradict_the_multiplicity_are_refused(water_b3lyp):
    """Before issue 22 they were an ignored change: the singlet's cached energy came back.
    Cleared again, the energy is the one already computed (no new SCF)."""
    atoms, energy = water_b3lyp
    calc = atoms.calc
    scfs = calc.counts["scf"]
    atoms.set_initial_magnetic_moments([2.0, 0.0, 0.0])
    try:
        with pytest.raises(InputError) as err:
            atoms.get_potential_energy()
        assert err.value.field == "atoms.initial_magmoms"
        assert "add up to 2, but multiplicity is 1 (0 unpaired electrons): pass multiplicity=3" \
            in str(err.value)
    finally:
        atoms.set_initial_magnetic_moments(None)
    assert atoms.get_potential_energy() == energy and calc.counts["scf"] == scfs
    atoms.set_initial_magnetic_moments([0.5, -0.5, 0.0])  # add up to 0: a singlet
    try:
        assert atoms.get_potential_energy() == energy and calc.counts["scf"] == scfs
    finally:
        atoms.set_initial_magnetic_moments(None)


def test_initial_charges_that_contradict_the_charge_are_refused(water_b3lyp):
    """Before issue 22 they were an ignored change: the neutral molecule's energy came back."""
    atoms, energy = water_b3lyp
    scfs = atoms.calc.counts["scf"]
    atoms.set_initial_charges([1.0, 0.0, 0.0])
    try:
        with pytest.raises(InputError) as err:
            atoms.get_potential_energy()
        assert err.value.field == "atoms.initial_charges"
        assert "add up to 1, but charge is 0: pass charge=1" in str(err.value)
    finally:
        atoms.set_initial_charges(None)
    assert atoms.get_potential_energy() == energy and atoms.calc.counts["scf"] == scfs


def test_cell_pbc_and_numbers_changes(water_b3lyp):
    """A cell without periodic boundaries changes nothing (no new SCF); periodic
    boundaries are refused; other atomic numbers are a new SCF, and so is the way back.
    Before issue 22, back from the refused periodic atoms to the same geometry raised
    ASE's PropertyNotImplementedError: ASE had emptied the results for the change, and
    the calculator, whose SCF was still that geometry's, computed nothing."""
    atoms, energy = water_b3lyp
    calc = atoms.calc
    scfs = calc.counts["scf"]
    atoms.cell = [8.0, 8.0, 8.0]
    assert atoms.get_potential_energy() == energy and calc.counts["scf"] == scfs
    atoms.pbc = [False, False, True]
    try:
        with pytest.raises(InputError, match="atoms.pbc: periodic systems are not supported"):
            atoms.get_potential_energy()
    finally:
        atoms.pbc = False
    assert atoms.get_potential_energy() == energy and calc.counts["scf"] == scfs
    atoms.numbers = [16, 1, 1]  # H2S at water's geometry
    try:
        assert abs(atoms.get_potential_energy() - energy) > 100  # eV
        assert calc.counts["scf"] == scfs + 1
    finally:
        atoms.numbers = [8, 1, 1]
    assert abs(atoms.get_potential_energy() - energy) / units.Hartree < 1e-9
    assert calc.counts["scf"] == scfs + 2


def test_without_ase_the_import_says_how_to_install():
    code = ("import sys; sys.modules['ase'] = None\n"
            "try:\n    import dm21cli.integrations.ase\n"
            "except ImportError as exc:\n    print(exc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "pip install -e '.[ase]'" in proc.stdout


@pytest.mark.slow
def test_open_shell_forces_are_the_library_gradient_and_sum_to_zero(checkpoints_dir):
    """Triplet CH2, unrestricted DM21m (the geometry of tests/test_grad.py)."""
    atoms = Atoms("CH2", positions=[[0, 0, 0], [0, 0.9896, 0.42], [0, -0.9896, 0.42]])
    calc = _calc(checkpoints_dir, functional="DM21m", multiplicity=3, scf=TIGHT)
    atoms.calc = calc
    forces = atoms.get_forces()
    expected = -nuclear_gradient(calc.mf, calc.spec)["gradient_hartree_per_bohr"] * units.Hartree / units.Bohr
    np.testing.assert_allclose(forces, expected, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(forces.sum(axis=0), 0, atol=1e-8 * units.Hartree / units.Bohr)
    moved = _moved(atoms, 1, 2, 0.01)
    energy = calc.get_potential_energy(moved)
    fresh = _calc(checkpoints_dir, functional="DM21m", multiplicity=3, scf=TIGHT)
    assert abs(energy - fresh.get_potential_energy(moved)) / units.Hartree < 1e-8


@pytest.mark.slow
def test_the_readme_example_relaxes_water(tmp_path, checkpoints_dir):
    """inputs/ase_water_bfgs.py as the manual shows it (docs/howto/ase.md; DM21/def2-SVP, grid level 3).
    Measured: 5 BFGS steps, r(OH) 0.9660 A, HOH 103.05 deg."""
    import os
    import re
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "inputs" / "ase_water_bfgs.py"
    env = dict(os.environ, DM21_CHECKPOINTS=str(checkpoints_dir))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = re.findall(r"^BFGS:\s+\d+\s+\S+\s+(\S+)\s+(\S+)$", proc.stdout, re.M)
    assert float(steps[-1][1]) < 0.01 and float(steps[-1][0]) < float(steps[0][0])
    r1, r2, angle = map(float, re.search(r"r\(OH\) = (\S+) (\S+) A, angle HOH = (\S+) deg",
                                         proc.stdout).groups())
    assert 0.95 < r1 < 0.98 and abs(r1 - r2) < 1e-3 and 100 < angle < 106


def test_dm21cli_ase_is_the_calculator():
    """Issue 12 names it dm21cli.ase.DM21Calculator."""
    import dm21cli.ase

    assert dm21cli.ase.DM21Calculator is DM21Calculator
    assert dm21cli.ase.DM21SCFError is DM21SCFError and dm21cli.ase.job_atoms is job_atoms


def test_stretched_h2_energy_is_not_a_zero_xc_number(checkpoints_dir, monkeypatch):
    """Issue 22: restricted DM21 H2 at 21 A (STO-3G) gave E = +0.59 Ha with E_xc = 0 through
    ASE too.  Now a negative energy with a negative E_xc; and a density that fails the
    final checks (the grid points' regrowth switched off: the old behaviour) raises
    DM21SCFError instead of returning its number."""
    from dm21cli.functional.xc import DM21XC

    atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 21.0]])
    atoms.calc = _calc(checkpoints_dir, grid_level=1)
    energy_hartree = atoms.get_potential_energy() / units.Hartree
    final = atoms.calc.info["dm21_final_energy"]
    assert energy_hartree < -0.2 and final["exc_final_hartree"] < -0.5 and final["problems"] == []
    monkeypatch.setattr(DM21XC, "_regrow", lambda self, *args: 0)
    atoms.calc = _calc(checkpoints_dir, grid_level=1)
    with pytest.raises(DM21SCFError, match="fails the final checks"):
        atoms.get_potential_energy()
    assert atoms.calc.results == {}
