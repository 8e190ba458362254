"""Published DM21 energies, reproduced through the full `run_job` path.

Source: DeepMind's ``density_functional_approximation_dm21/neural_numint_test.py``
(PySCF grids of versions <= 2.6, ``small_rho_cutoff = 1e-20``, default PySCF
tolerances).  The published code itself, run on PySCF 2.14 with the older
grids, reproduces all eight within 1.9e-5 Ha; the required tolerance is 2e-4 Ha.
"""

from __future__ import annotations

import textwrap

import pytest

from dm21cli.io.inputs.load import load_job
from dm21cli.io.outputs.qcschema import fields
from dm21cli.jobs.run import run_job

TOLERANCE_HARTREE = 2e-4

GOLDEN = {
    # system: (xyz, multiplicity, {variant: energy in Hartree})
    "Ne": ("Ne 0 0 0", 1, {"DM21": -126.898521, "DM21m": -126.907332,
                           "DM21mc": -126.922127, "DM21mu": -126.898178}),
    "C": ("C 0 0 0", 3, {"DM21": -37.34184876, "DM21m": -37.3377766,
                         "DM21mc": -37.33489173, "DM21mu": -37.34015315}),
}
CASES = [(system, variant) for system in GOLDEN for variant in GOLDEN[system][2]]


def run_golden(tmp_path, checkpoints_dir, system: str, variant: str) -> dict:
    xyz, multiplicity, _ = GOLDEN[system]
    job = tmp_path / f"{system}-{variant}.yaml"
    job.write_text(textwrap.dedent(f"""\
        molecule:
          xyz: "{xyz}"
          multiplicity: {multiplicity}
        basis: sto-3g
        functional: {variant}
        scf:
          legacy_grids: true
          small_rho_cutoff: 1e-20
          conv_tol: 1e-8
          conv_tol_grad: 1e-4
        outputs:
          molden: false
        """))
    spec = load_job(job, {"output_dir": str(tmp_path / f"out-{system}-{variant}")})
    return fields(run_job(spec, checkpoints=checkpoints_dir))  # dm21cli's layout of result.json


@pytest.fixture(scope="module")
def results(tmp_path_factory, checkpoints_dir):
    tmp = tmp_path_factory.mktemp("golden")
    return {case: run_golden(tmp, checkpoints_dir, *case) for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=[f"{s}-{v}" for s, v in CASES])
def test_published_energy(results, case):
    system, variant = case
    result = results[case]
    assert result["converged"]
    expected = GOLDEN[system][2][variant]
    assert result["return_energy"] == pytest.approx(expected, abs=TOLERANCE_HARTREE)
    # the legacy grids were really used (Ne: 12,072 points; current PySCF: 11,816)
    if system == "Ne":
        assert result["properties"]["grid_points"] == 12072
    assert result["properties"]["restricted"] is (system == "Ne")


def test_four_variants_give_four_energies(results):
    for system in GOLDEN:
        energies = [results[(system, v)]["return_energy"] for v in GOLDEN[system][2]]
        gaps = [abs(a - b) for i, a in enumerate(energies) for b in energies[:i]]
        assert min(gaps) > 3e-4, (system, energies)
