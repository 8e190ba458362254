"""Implicit solvation (issue 26): PySCF's continuum models on dm21's SCF, DM21's included.

What is checked, and the tolerance of each:

* B3LYP/def2-SVP water in IEF-PCM (eps 78.3553) through ``run_job`` is PySCF's own
  ``mf.PCM()`` energy (1e-6 Ha, the issue's; measured 1.3e-12: the same code), and so is
  every other model on STO-3G (C-PCM, SS(V)PE, COSMO, ddCOSMO, SMD: 1e-8).  result.json
  records the solvent in keywords and ``extras.dm21cli.model.solvent`` and splits the
  energy: solute (gas-phase-like) + polarisation (+ SMD's CDS) = total (1e-10).
* DM21 in water: the final energy is DM21's own energy of the converged density, float64
  on the full grid, plus PySCF's polarisation energy of that density, once (1e-7 Ha: the
  float32 values the final pass keeps, see `dm21cli.functional.xc.FINAL_SKIP_HARTREE`;
  the polarisation energy is 1e-2 Ha): the solvent's get_veff hook calls DM21's.  The
  warm start and the frozen-XC iterations run in the solvent too, and direct
  minimisation reaches the same energy (1e-6 Ha).
* The memory estimate counts PySCF's dense surface matrices.
* Gradients (PySCF's solvent terms on dm21's DM21 gradient) against central differences of
  the energy (h = 2e-4 bohr, float64, grid level 0): DM21 restricted and unrestricted, B3LYP
  in the other models (1e-6 Ha/bohr; the issue asks 1e-5, measured at most 2e-8).
* dm21 opt (DM21 water converges in water), dm21 freq, a scan (the points and reference
  ions in the solvent; these three through the commands' library calls, `dm21lib`), the ASE
  calculator and QCSchema's keywords.solvent run in a solvent; NaCl's DM21 bond lengthens
  in water (slow).
"""

from __future__ import annotations

import json
import subprocess
import sys

import dm21lib
import numpy as np
import pytest
from pyscf import dft, gto

from dm21cli.core.units import BOHR_ANGSTROM
from dm21cli.io.inputs.load import load_job, load_job_data
from dm21cli.jobs.build import build_molecule, load_network
from dm21cli.jobs.point import compute_point

#: water (Angstrom), as tests/test_grad.py
WATER = "O 0.0 0.0 0.1173\nH 0.0 0.7572 -0.4692\nH 0.0 -0.7572 -0.4692\n"


def _spec(functional="b3lyp", basis="sto-3g", solvent=None, scf=None, **more):
    data = {"molecule": {"xyz": WATER}, "basis": basis, "functional": functional,
            "solvent": solvent, "scf": scf or {}, **more}
    return load_job_data(data)


def _point(spec, network=None, **kwargs):
    return compute_point(spec, build_molecule(spec), network=network, memory_mb=4000,
                         log=lambda line: None, **kwargs)


@pytest.fixture(scope="module")
def network(checkpoints_dir):
    spec = _spec("DM21")
    return load_network(spec, checkpoints_dir)


def _pyscf_in_solvent(basis, xc, model, eps, name=None, level=3):
    """PySCF's own SCF in the solvent, as its documentation makes it."""
    mol = gto.M(atom=WATER, basis=basis, verbose=0)
    mf = dft.RKS(mol, xc=xc)
    if model == "ddCOSMO":
        mf = mf.ddCOSMO()
    elif model == "SMD":
        mf = mf.SMD()
        mf.with_solvent.solvent = name
    else:
        mf = mf.PCM()
        mf.with_solvent.method = model
    if model != "SMD":
        mf.with_solvent.eps = eps
    mf.grids.level = level
    mf.conv_tol = 1e-11
    return mf.kernel()


def test_b3lyp_in_water_is_pyscfs_own_pcm_energy(tmp_path):
    from dm21cli.jobs.run import run_job

    job = tmp_path / "water.yaml"
    job.write_text("molecule:\n  xyz: |\n" + "".join(f"    {line}\n" for line in WATER.splitlines())
                   + "basis: def2-svp\nfunctional: b3lyp\nsolvent: {model: IEF-PCM, eps: 78.3553}\n"
                   f"job: {{output_dir: {tmp_path / 'out'}}}\n")
    document = run_job(load_job(job))
    reference = _pyscf_in_solvent("def2-svp", "b3lyp", "IEF-PCM", 78.3553)
    assert abs(document["return_result"] - reference) < 1e-6
    assert document["keywords"]["solvent"] == {"model": "IEF-PCM", "name": None, "eps": 78.3553}
    ours = document["extras"]["dm21cli"]
    solvent = ours["model"]["solvent"]
    assert solvent["model"] == "IEF-PCM" and solvent["eps"] == 78.3553
    assert (solvent["lebedev_order"], solvent["points_per_sphere"]) == (29, 302)
    assert solvent["pyscf_class"] == "pyscf.solvent.pcm.PCM"
    props = ours["properties"]
    assert props["solvent_polarization_energy"] < -1e-3 and props["solvent_cds_energy"] is None
    assert abs(props["solute_energy"] + props["solvent_polarization_energy"]
               - document["return_result"]) < 1e-10
    assert props["solvent_surface_points"] > 0
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "Solvent                      IEF-PCM, eps 78.3553" in summary
    assert "Solvent polarisation" in summary and "Solute (without solvation)" in summary
    log = (tmp_path / "out" / "dm21.log").read_text()
    assert "implicit solvent IEF-PCM, eps 78.3553: radii 1.2 x modified Bondi" in log
    assert "solvation: polarisation energy" in log
    # the keywords repeat the run
    again = load_job_data({"molecule": {"xyz": WATER}, "solvent": document["keywords"]["solvent"]})
    assert again.solvent.resolved() == document["keywords"]["solvent"]


@pytest.mark.parametrize("model, name, eps", [
    ("C-PCM", None, 78.3553), ("SS(V)PE", None, 35.688), ("COSMO", None, 4.7113),
    ("ddCOSMO", None, 78.3553), ("SMD", "water", 78.355), ("SMD", "methanol", 32.613),
])
def test_every_model_is_pyscfs_own(model, name, eps):
    solvent = {"model": model, "name": name} if name else {"model": model, "eps": eps}
    point = _point(_spec(solvent=solvent, scf={"conv_tol": 1e-11}))
    assert point.converged
    assert abs(point.energy_hartree - _pyscf_in_solvent("sto-3g", "b3lyp", model, eps, name)) < 1e-8
    props = point.props
    total = props["solute_energy"] + props["solvent_polarization_energy"] + \
        (props["solvent_cds_energy"] or 0.0)
    assert abs(total - point.energy_hartree) < 1e-10
    assert (props["solvent_cds_energy"] is not None) == (model == "SMD")


def test_dm21_energy_in_water_is_dm21_plus_the_polarisation_energy_once(network):
    from dm21cli.functional.xc import DM21XC
    from dm21cli.scf.solvent import make_model

    spec = _spec("DM21", solvent={"name": "water"}, scf={"grid_level": 1})
    point = _point(spec, network)
    assert point.converged
    mf = point.mf
    attempts = [a["strategy"] for a in point.props["scf_attempts"]]
    assert attempts == ["frozen-xc"] and point.props["warm_start"]["converged"]
    assert point.props["dm21_evaluations"] <= 5
    # DM21's energy of the converged density, from scratch: float64 network on every point
    dm = mf.make_rdm1()
    mol = mf.mol
    _, exc, _ = DM21XC(network, rho_screen=0.0).evaluate(mol, mf.grids, np.stack([dm, dm]) / 2,
                                                         True)
    h1e = mol.intor_symmetric("int1e_kin") + mol.intor_symmetric("int1e_nuc")
    vj = dft.RKS(mol).get_j(mol, dm)
    e_pol = make_model(mol, "IEF-PCM", 78.355).kernel(dm)[0]
    assert e_pol < -5e-3
    expected = np.einsum("ij,ji", h1e, dm) + 0.5 * np.einsum("ij,ji", vj, dm) + exc \
        + mol.energy_nuc() + e_pol
    assert abs(point.energy_hartree - expected) < 1e-7
    assert abs(point.props["solvent_polarization_energy"] - e_pol) < 1e-10


def test_direct_minimisation_in_solvent_reaches_the_same_energy(network):
    from dm21cli.scf.directmin import minimize

    spec = _spec("DM21", solvent={"model": "C-PCM", "name": "water"},
                 scf={"grid_level": 1, "precision": "float64", "conv_tol": 1e-9})
    point = _point(spec, network)
    mf = point.mf
    e_frozen = mf.e_tot
    # from the warm start's orbitals: orbital rotations with the solvent's Fock matrix
    occ = np.asarray(mf.mo_occ)
    coeff = np.asarray(point.warm_orbitals[0])
    converged, _, energy, _ = minimize(mf, coeff, occ, max_cycle=100, conv_tol=1e-9,
                                       conv_tol_grad=1e-5)
    assert converged and abs(energy - e_frozen) < 1e-6


def test_memory_estimate_counts_the_surface_matrices():
    from dm21cli.jobs.memory import describe, estimate

    gas = _spec()
    for model, task in (("IEF-PCM", "energy"), ("IEF-PCM", "gradient"), ("ddCOSMO", "energy")):
        spec = _spec(solvent={"model": model, "name": "water"}, job={"task": task})
        need = estimate(spec, build_molecule(spec))
        base = estimate(gas, build_molecule(gas))
        assert abs(need["minimum_mb"] - base["minimum_mb"] - need["solvent_mb"]) <= 1  # (rounding)
        if model == "ddCOSMO":
            assert need["solvent_mb"] == 0
        else:
            assert need["solvent_mb"] > 0 and "solvent's surface matrices take" in describe(need)
    energy = estimate(_spec(solvent={"name": "water"}), build_molecule(gas))
    gradient = estimate(_spec(solvent={"name": "water"}, job={"task": "gradient"}),
                        build_molecule(gas))
    assert gradient["solvent_mb"] > 2 * energy["solvent_mb"]


def test_unknown_solvent_exits_2_before_any_scf(tmp_path):
    job = tmp_path / "water.yaml"
    job.write_text("molecule:\n  xyz: |\n" + "".join(f"    {line}\n" for line in WATER.splitlines()))
    proc = subprocess.run([sys.executable, "-m", "dm21cli", "run", str(job), "--solvent", "acetonitril",
                           "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 2, proc.stderr
    assert "--solvent: unknown solvent 'acetonitril'; closest known: acetonitrile" in proc.stderr
    assert not (tmp_path / "out").exists() and proc.stdout == ""


# ----------------------------------------------------------------------
# gradients: PySCF's solvent terms on top of dm21's own DM21 gradient
# ----------------------------------------------------------------------
#: SCF settings of the finite differences: float64 DM21 converged far below the step's
#: energy changes, grid level 0 (a grid that moves with the atoms, as the gradient's)
TIGHT = {"grid_level": 0, "conv_tol": 1e-11, "conv_tol_grad": 1e-7, "precision": "float64"}
#: triplet methylene (as tests/test_grad.py): an unrestricted SCF in the solvent
CH2 = "C 0 0 0\nH 0 0.9896 0.4200\nH 0 -0.9896 0.4200\n"


def _fd_deviation(spec, network, coords, h=2e-4):
    """max |analytic - central difference| (Ha/bohr, h in bohr) over (atom, axis) in
    `coords`, and the analytic gradient's point."""
    mol = build_molecule(spec)
    point = _point(spec, network, gradient=True)
    assert point.converged
    g = np.asarray(point.props["gradient_hartree_per_bohr"])
    worst = 0.0
    for atom, axis in coords:
        energies = []
        for step in (h, -h):
            c = mol.atom_coords().copy()
            c[atom, axis] += step
            moved = mol.set_geom_(c, unit="Bohr", inplace=False)
            energies.append(compute_point(spec, moved, network=network, memory_mb=4000,
                                          log=lambda line: None).energy_hartree)
        assert abs(g[atom, axis]) > 1e-3  # not trivially zero
        worst = max(worst, abs(g[atom, axis] - (energies[0] - energies[1]) / (2 * h)))
    return worst, point


@pytest.mark.parametrize("functional, model, xyz, multiplicity", [
    ("DM21", "IEF-PCM", WATER, 1), ("DM21m", "C-PCM", CH2, 3),
], ids=["water-rks-DM21-IEF-PCM", "CH2-triplet-uks-DM21m-C-PCM"])
def test_dm21_gradient_in_water_matches_finite_differences(network, checkpoints_dir, functional,
                                                           model, xyz, multiplicity):
    """The issue's 1e-5 Ha/bohr; measured 9e-9 (water) and 8e-10 (CH2)."""
    spec = load_job_data({"molecule": {"xyz": xyz, "multiplicity": multiplicity},
                          "basis": "sto-3g", "functional": functional, "scf": TIGHT,
                          "solvent": {"model": model, "name": "water"}})
    net = network if functional == "DM21" else load_network(spec, checkpoints_dir)
    worst, point = _fd_deviation(spec, net, [(1, 1), (0, 2)] if multiplicity == 1 else [(1, 2)])
    assert worst < 1e-6, worst
    g = np.asarray(point.props["gradient_hartree_per_bohr"])
    solvent = np.asarray(point.props["solvent_gradient_hartree_per_bohr"])
    assert np.abs(g.sum(axis=0)).max() < 1e-8  # translational invariance
    assert 1e-5 < np.abs(solvent).max() < np.abs(g).max()


@pytest.mark.parametrize("model", ["SS(V)PE", "COSMO", "ddCOSMO", "SMD"])
def test_b3lyp_gradient_in_each_model_matches_finite_differences(model):
    """Measured at most 4e-9 Ha/bohr in each (SMD with its CDS term)."""
    spec = _spec(solvent={"model": model, "name": "water"}, scf=TIGHT)
    worst, _ = _fd_deviation(spec, None, [(1, 1)])
    assert worst < 1e-6, worst


def _job(tmp_path, text: str = "") -> str:
    job = tmp_path / "water.yaml"
    job.write_text("molecule:\n  xyz: |\n" + "".join(f"    {line}\n" for line in WATER.splitlines())
                   + "basis: sto-3g\n" + text)
    return str(job)


def test_dm21_opt_in_water_converges(tmp_path, checkpoints_dir):
    """dm21 opt with --solvent: DM21/STO-3G water, 5 steps (measured)."""
    done = dm21lib.opt(_job(tmp_path, "scf: {grid_level: 1}\n"), tmp_path, solvent="water",
                       option_checkpoints=checkpoints_dir, output_dir="opt")
    assert done.converged, done.progress.text
    result = done.result
    ours = result["extras"]["dm21cli"]
    assert ours["optimization"]["converged"]
    assert result["keywords"]["solvent"] == {"model": "IEF-PCM", "name": "water", "eps": 78.355}
    assert ours["properties"]["gradient_max_hartree_per_bohr"] < 4.5e-4
    assert ours["properties"]["solvent_polarization_energy"] < -5e-3


def test_freq_in_water(tmp_path):
    """dm21 freq with --solvent: the Hessian's gradients in the solvent (B3LYP/STO-3G)."""
    done = dm21lib.freq(_job(tmp_path, "functional: b3lyp\nscf: {grid_level: 1}\n"), tmp_path,
                        solvent="water", output_dir="freq")
    assert done.converged, done.progress.text
    result = json.loads((tmp_path / "freq" / "result.json").read_text())
    assert result["keywords"]["solvent"]["name"] == "water"
    assert len(result["extras"]["dm21cli"]["vibrations"]["wavenumbers_cm1"]) == 3
    point = next((tmp_path / "freq").glob("*/result.json"))
    assert json.loads(point.read_text())["keywords"]["solvent"]["name"] == "water"


def test_ase_calculator_in_water(tmp_path):
    pytest.importorskip("ase")
    from ase import Atoms, units

    from dm21cli.integrations.ase import DM21Calculator

    rows = [line.split() for line in WATER.splitlines()]
    atoms = Atoms(symbols=[r[0] for r in rows], positions=[[float(x) for x in r[1:]] for r in rows])
    atoms.calc = DM21Calculator(functional="b3lyp", basis="sto-3g", solvent="water")
    energy = atoms.get_potential_energy() / units.Hartree
    point = _point(_spec(solvent={"name": "water"}), gradient=True)
    assert abs(energy - point.energy_hartree) < 1e-8
    forces = atoms.get_forces() * units.Bohr / units.Hartree
    assert np.abs(forces + np.asarray(point.props["gradient_hartree_per_bohr"])).max() < 1e-6
    assert atoms.calc.spec.solvent.label() == "IEF-PCM, water (eps 78.355)"
    atoms.calc.set(solvent={"model": "C-PCM", "eps": 10})
    assert atoms.get_potential_energy() / units.Hartree > energy  # less polar, less stabilised


def test_scan_points_and_reference_ions_are_in_the_solvent(tmp_path):
    """A NaCl distance scan in water (B3LYP/STO-3G, two points): every point and the
    reference ions Na+ and Cl- are computed in the solvent."""
    job = tmp_path / "nacl.yaml"
    job.write_text("molecule:\n  xyz: |\n    Na 0 0 0\n    Cl 0 0 2.4\nbasis: sto-3g\n"
                   "functional: b3lyp\nscf: {grid_level: 1}\nsolvent: {name: water}\n"
                   "scan: {distances: '2.4,3.0', reference_atoms: true, "
                   "reference_charges: [1, -1]}\n")
    done = dm21lib.scan(str(job), tmp_path, output_dir="scan")
    assert done.exit_status == 0, done.progress.text
    results = sorted((tmp_path / "scan").rglob("result.json"))
    assert len(results) == 4  # two points, two ions
    for path in results:
        document = json.loads(path.read_text())
        assert document["keywords"]["solvent"]["name"] == "water", path
        assert document["extras"]["dm21cli"]["properties"]["solvent_polarization_energy"] < 0


# ----------------------------------------------------------------------
# QCSchema: keywords.solvent
# ----------------------------------------------------------------------
def _atomic_input(keywords: dict) -> dict:
    from dm21cli.core.units import ANGSTROM_BOHR

    rows = [line.split() for line in WATER.splitlines()]
    return {"schema_name": "qcschema_input", "schema_version": 1,
            "molecule": {"symbols": [r[0] for r in rows],
                         "geometry": [float(x) * ANGSTROM_BOHR for r in rows for x in r[1:]]},
            "driver": "gradient", "model": {"method": "b3lyp", "basis": "sto-3g"},
            "keywords": {"grid_level": 1, "molden": False, **keywords}}


@pytest.mark.parametrize("solvent, expected", [
    ("water", {"model": "IEF-PCM", "name": "water", "eps": 78.355}),
    (20.5, {"model": "IEF-PCM", "name": None, "eps": 20.5}),
    ({"model": "smd", "name": "Methanol"}, {"model": "SMD", "name": "methanol", "eps": 32.613}),
], ids=["name", "eps", "section"])
def test_atomic_input_asks_for_a_solvent_through_keywords(tmp_path, solvent, expected):
    path = tmp_path / "water.json"
    path.write_text(json.dumps(_atomic_input({"solvent": solvent})))
    assert load_job(path).solvent.resolved() == expected


def test_atomic_input_in_water_runs_and_its_result_repeats_it(tmp_path):
    path = tmp_path / "water.json"
    path.write_text(json.dumps(_atomic_input({"solvent": {"model": "C-PCM", "name": "water"}}),
                               indent=2))
    done = dm21lib.run(path.name, tmp_path)
    assert done.converged, done.progress.text
    result = done.result
    assert result["keywords"]["solvent"] == {"model": "C-PCM", "name": "water", "eps": 78.355}
    assert result["extras"]["dm21cli"]["properties"]["solvent_gradient_hartree_per_bohr"]
    # the result's input, run again, is the same job
    again = tmp_path / "again.json"
    again.write_text(json.dumps({key: result[key] for key in
                                 ("schema_name", "molecule", "driver", "model", "keywords")
                                 } | {"schema_name": "qcschema_input"}))
    assert load_job(again).solvent.resolved() == result["keywords"]["solvent"]


@pytest.mark.parametrize("solvent, field, needle", [
    ("watr", "keywords.solvent.name", "unknown solvent 'watr'; closest known: water"),
    ({"model": "GBSA", "name": "water"}, "keywords.solvent.model", "unknown solvent model"),
    ({"eps": 0.9}, "keywords.solvent.eps", "greater than 1"),
    ({"model": "SMD", "eps": 30}, "keywords.solvent", "SMD needs a named solvent"),
])
def test_bad_solvent_keyword_names_the_keyword(tmp_path, solvent, field, needle):
    from dm21cli.core.errors import InputError

    path = tmp_path / "water.json"
    path.write_text(json.dumps(_atomic_input({"solvent": solvent}), indent=2))
    with pytest.raises(InputError) as info:
        load_job(path)
    assert info.value.field == field and needle in info.value.message, info.value.render()
    assert info.value.line is not None


@pytest.mark.slow
def test_nacl_bond_lengthens_in_water(tmp_path, checkpoints_dir):
    """DM21/def2-SVP NaCl optimised in the gas phase and in water (IEF-PCM), grid level 1:
    the bond is longer in water (docs/howto/solvent.md, grid level 3: 2.3316 and 2.4156 Angstrom)."""
    job = tmp_path / "nacl.yaml"
    job.write_text("molecule:\n  xyz: |\n    Na 0 0 0\n    Cl 0 0 2.5\nbasis: def2-svp\n"
                   "scf: {grid_level: 1}\noutputs: {molden: false}\n")
    lengths = {}
    for solvent in ("none", "water"):
        done = dm21lib.opt(str(job), tmp_path, solvent=solvent,
                           option_checkpoints=checkpoints_dir, output_dir=solvent)
        assert done.converged, done.progress.text
        result = done.result
        assert result["extras"]["dm21cli"]["optimization"]["converged"]
        z = np.asarray(result["molecule"]["geometry"]).reshape(-1, 3)
        lengths[solvent] = float(np.linalg.norm(z[1] - z[0])) * BOHR_ANGSTROM
    assert 2.30 < lengths["none"] < 2.36 and lengths["water"] > lengths["none"] + 0.05, lengths
