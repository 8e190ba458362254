"""``dm21 freq`` (issue 23): the Hessian by central differences of analytic gradients, its
points run as a resumable campaign, the analysis and the files.

Reference values: PySCF 2.14's analytic RKS Hessian (``mf.Hessian()``) of B3LYP/def2-SVP water
at the same geometry and grid level 3, put through the same harmonic analysis
(`dm21cli.vib`).  Measured with the points converged to conv_tol_grad 1e-6: the
central-difference wavenumbers agree to 0.1 cm^-1 and the Hessian to 3.6e-4 Eh/bohr^2 (the
analytic Hessian leaves out the grid's response, which dm21cli's gradients include).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import dm21lib
import numpy as np
import pytest
from dm21proc import dm21, dm21_env, show, signal_when, write

from dm21cli.core.errors import ConvergenceError, InputError
from dm21cli.io.inputs.load import load_job
from dm21cli.jobs.freq import collect_freq, plan_freq, run_freq
from dm21cli.jobs.freq.plan import DISPLACEMENTS_DIR, displacement_index
from dm21cli.vib import atomic_masses, harmonic_analysis

WATER = """\
    molecule:
      xyz: |
        O 0 0 0.1173
        H 0 0.7572 -0.4692
        H 0 -0.7572 -0.4692
    basis: {basis}
    functional: b3lyp
    scf: {{grid_level: {grid}}}
    outputs: {{molden: false}}
    """


def _spec(tmp_path: Path, basis="sto-3g", grid=1, name="w.yaml", **overrides):
    job = write(tmp_path, name, WATER.format(basis=basis, grid=grid))
    return load_job(job, {"output_dir": str(tmp_path / "out"), "task": "freq", **overrides})


def _log(tmp_path: Path) -> str:
    return (tmp_path / "out" / "freq.log").read_text()


def test_b3lyp_water_hessian_is_pyscfs_analytic_one(tmp_path):
    """The central-difference Hessian of B3LYP/def2-SVP water against PySCF's analytic one:
    wavenumbers within 0.5 cm^-1 (measured 0.1; 0.53 with the points converged to 1e-5 instead
    of 1e-6), the Hessian within 1e-3 Eh/bohr^2 (measured 3.6e-4)."""
    from pyscf import dft, gto

    document = run_freq(plan_freq(_spec(tmp_path, basis="def2-svp", grid=3)))
    assert document["success"] and document["driver"] == "hessian"
    hessian = np.asarray(document["return_result"])
    assert hessian.shape == (9, 9)
    mol = gto.M(atom="O 0 0 0.1173; H 0 0.7572 -0.4692; H 0 -0.7572 -0.4692",
                basis="def2-svp", verbose=0)
    mf = dft.RKS(mol, xc="b3lyp")
    mf.grids.level = 3
    mf.conv_tol = 1e-10
    mf.kernel()
    analytic = mf.Hessian().kernel().transpose(0, 2, 1, 3).reshape(9, 9)
    np.testing.assert_allclose(hessian, analytic, atol=1e-3)
    masses = atomic_masses(["O", "H", "H"])
    expected = harmonic_analysis(analytic, mol.atom_coords(), masses).wavenumbers_cm1
    vib = document["extras"]["dm21cli"]["vibrations"]
    np.testing.assert_allclose(vib["wavenumbers_cm1"], expected, atol=0.5)
    assert vib["classification"]["ok"] and vib["n_imaginary"] == 0
    assert len(vib["ir_intensities_km_mol"]) == 3 and min(vib["ir_intensities_km_mol"]) > 0


@pytest.mark.parametrize("functional, precision, expected", [
    ("DM21", None, "float64"), ("DM21", "float32", "float32"), ("b3lyp", None, None)])
def test_the_points_scf_is_the_hessians_own(tmp_path, functional, precision, expected):
    """Every point (the reference too) converges to conv_tol 1e-10 and conv_tol_grad 1e-6,
    and a DM21 job's default mixed precision runs them in float64 (the float32 network's
    noise exceeds those thresholds: docs/tutorials/optimisation.md); a job's float32 is kept,
    and a PySCF functional's setting is left alone (it has no network)."""
    text = WATER.format(basis="sto-3g", grid=1).replace("b3lyp", functional)
    if precision:
        text = text.replace("grid_level: 1", f"grid_level: 1, precision: {precision}")
    job = write(tmp_path, "w.yaml", text)
    plan = plan_freq(load_job(job, {"output_dir": str(tmp_path / "out"), "task": "freq"}))
    points = plan.points[plan.functionals[0]]
    assert len(points) == 19
    for pt in points:
        assert (pt.data["scf"]["conv_tol"], pt.data["scf"]["conv_tol_grad"]) == (1e-10, 1e-6)
        assert pt.data["scf"]["precision"] == (expected or "mixed")
    assert plan.definition["precision"] == expected


def test_the_folder_holds_the_result_summary_molden_and_movies(tmp_path):
    """result.json (a QCSchema AtomicResult qcelemental accepts, driver hessian, Psi4's
    qcvars), summary.txt with the modes and thermochemistry tables, the Molden file, a
    movie per mode; the input's geometry is not stationary, and everything says so."""
    document = run_freq(plan_freq(_spec(tmp_path)))
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "displacements", "freq.definition.json", "freq.log", "modes", "reference",
        "result.json", "summary.txt", "vibrations.molden"]
    assert len(list((out / DISPLACEMENTS_DIR).iterdir())) == 18
    assert sorted(p.name for p in (out / "modes").iterdir()) == [
        "mode_01.xyz", "mode_02.xyz", "mode_03.xyz"]
    qcvars = document["extras"]["qcvars"]
    assert set(qcvars) >= {"ZPVE", "THERMAL ENERGY", "ENTHALPY", "GIBBS FREE ENERGY"}
    assert qcvars["GIBBS FREE ENERGY"] < qcvars["ENTHALPY"] < document["properties"]["return_energy"] + 0.1
    from qcelemental.models import AtomicResult

    AtomicResult(**document)
    summary = (out / "summary.txt").read_text()
    for needle in ("Vibrations (harmonic)", "wavenumber", "(cm^-1)", "IR intensity", "(km/mol)",
                   "Thermochemistry", "Gibbs free energy G (Eh)", "WARNING: the geometry is not "
                   "stationary"):
        assert needle in summary, needle
    molden = (out / "vibrations.molden").read_text()
    assert all(section in molden for section in ("[FREQ]", "[FR-COORD]", "[FR-NORM-COORD]", "[INT]"))
    assert "WARNING: the geometry is not stationary" in _log(tmp_path)


def test_an_interrupted_or_changed_hessian_recomputes_only_what_is_missing(tmp_path):
    """Run again: every point is read from disk.  A point whose result is gone is the only
    one computed; new temperatures change no point (the analysis only); a new step is a
    new input: without --overwrite the folder is refused, with it every point is new."""
    spec = _spec(tmp_path)
    first = run_freq(plan_freq(spec))
    (tmp_path / "out" / DISPLACEMENTS_DIR / "004-O1-y-" / "result.json").unlink()
    (tmp_path / "out" / "freq.log").unlink()
    again = run_freq(plan_freq(spec))
    log = _log(tmp_path)
    assert log.count("read from disk") == 18 and "O1 y-: success" in log
    np.testing.assert_allclose(again["return_result"], first["return_result"], atol=1e-7)
    warmer = run_freq(plan_freq(_spec(tmp_path, temperature=[298.15, 500.0])))
    assert _log(tmp_path).count("read from disk") == 18 + 19
    thermo = warmer["extras"]["dm21cli"]["thermochemistry"]
    assert [t["temperature_K"] for t in thermo] == [298.15, 500.0]
    from dm21cli.core.errors import OutputExistsError

    with pytest.raises(OutputExistsError, match="different input"):
        run_freq(plan_freq(_spec(tmp_path, step=0.01)))


def test_workers_and_job_array_give_the_serial_hessian(tmp_path):
    """--workers 2, and --point 0 .. 6N then --collect (a job array), compute the same
    Hessian as the serial run (1e-6 Eh/bohr^2), every displaced point from the reference's
    density."""
    serial = run_freq(plan_freq(_spec(tmp_path)))
    spec = load_job(tmp_path / "w.yaml", {"output_dir": str(tmp_path / "workers"), "task": "freq"})
    workers = run_freq(plan_freq(spec), workers=2)
    np.testing.assert_allclose(workers["return_result"], serial["return_result"], atol=1e-6)
    spec = load_job(tmp_path / "w.yaml", {"output_dir": str(tmp_path / "array"), "task": "freq"})
    plan = plan_freq(spec)
    for index in range(19):
        assert run_freq(plan, point=index) is None
    collected = collect_freq(plan)
    np.testing.assert_allclose(collected["return_result"], serial["return_result"], atol=1e-6)
    info = json.loads((tmp_path / "array" / DISPLACEMENTS_DIR / "001-O1-x+" /
                       "scan-point.json").read_text())
    assert info["guess"] == "point at reference geometry"


def test_a_point_that_fails_is_named_and_the_rerun_computes_only_it(tmp_path, monkeypatch):
    """The SCF of one displaced geometry fails: the Hessian is not a result (exit 4 on the
    command line, result.json a FailedOperation naming the point and what to do), the other
    points are kept; the same command again computes that point alone and succeeds."""
    from dm21cli.jobs import point as point_module

    real = point_module.compute_point
    bad = displacement_index(1, 2, +1)  # H2 z+

    def failing(spec, mol, **kwargs):
        result = real(spec, mol, **kwargs)
        if spec.job.name.endswith(f"-{bad:03d}"):
            result.converged, result.failure = False, "SCF not converged (made to fail)"
        return result

    monkeypatch.setattr(point_module, "compute_point", failing)
    monkeypatch.setattr("dm21cli.jobs.run.compute_point", failing)
    spec = _spec(tmp_path)
    with pytest.raises(ConvergenceError, match=r"1 of 19 points .* H2 z\+ \(not-converged"):
        run_freq(plan_freq(spec))
    document = json.loads((tmp_path / "out" / "result.json").read_text())
    assert document["success"] is False and document["error"]["error_type"] == "convergence_error"
    assert "run the same dm21 freq command again" in document["error"]["error_message"]
    monkeypatch.setattr("dm21cli.jobs.run.compute_point", real)
    (tmp_path / "out" / "freq.log").unlink()
    assert run_freq(plan_freq(spec))["success"]
    log = _log(tmp_path)
    assert log.count("read from disk") == 18 and "H2 z+: success" in log


WATER_STO = textwrap.dedent(WATER.format(basis="sto-3g", grid=1))


@pytest.mark.parametrize("text, args, field, message", [
    ("molecule:\n  xyz: O 0 0 0\n", [], "molecule",
     "a frequency calculation needs at least two atoms; the molecule has 1"),
    (WATER_STO + "freq:\n  masses: [16, 1]\n", [], "freq.masses",
     "2 masses given for 3 atoms"),
    (WATER_STO, ["--temperature", "-10"], "--temperature",
     "temperatures are in K, above 0"),
    (WATER_STO, ["--step", "0.5"], "--step", "must be at most 0.1"),
    (WATER_STO + "freq:\n  qrrho: {entropy: nope}\n", [],
     "freq.qrrho", "unknown scheme 'nope'"),
])
def test_bad_freq_input_exits_2_before_anything_is_computed(tmp_path, text, args, field, message):
    write(tmp_path, "bad.yaml", textwrap.dedent(text))
    proc = dm21(["freq", "bad.yaml", *args], tmp_path, env=dm21_env())
    assert proc.returncode == 2, show(proc)
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("dm21: error: ") and field in line and message in line, line
    assert not (tmp_path / "outputs").exists()


def test_single_atom_freq_is_refused_by_the_library_too(tmp_path):
    job = write(tmp_path, "ne.yaml", "molecule:\n  xyz: Ne 0 0 0\nfunctional: b3lyp\n")
    with pytest.raises(InputError, match="at least two atoms"):
        load_job(job, {"task": "freq"})


def test_dm21_freq_command_and_a_job_file_task(tmp_path):
    """``dm21 freq FILE`` prints the summary and exits 0; ``job.task: freq`` under ``dm21 run``
    does the same calculation (the same folder, read from disk)."""
    write(tmp_path, "w.yaml", textwrap.dedent(WATER.format(basis="sto-3g", grid=1)))
    proc = dm21(["freq", "w.yaml", "-o", "fq"], tmp_path, env=dm21_env())
    assert proc.returncode == 0, show(proc)
    assert "Vibrations (harmonic)" in proc.stdout and "ZPVE" in proc.stdout
    write(tmp_path, "t.yaml", textwrap.dedent(WATER.format(basis="sto-3g", grid=1))
          + "job: {task: freq, output_dir: fq}\n")
    proc = dm21(["run", "t.yaml", "--json"], tmp_path, env=dm21_env())
    assert proc.returncode == 0, show(proc)
    document = json.loads(proc.stdout)
    assert document["driver"] == "hessian" and len(document["return_result"]) == 9


def test_opt_freq_optimises_then_computes_the_frequencies_there(tmp_path):
    """``dm21 opt FILE --freq``: the optimisation, then ``dm21 freq`` at its final geometry in
    the folder's freq/: a stationary point (the optimiser's criterion), a minimum, and
    --json prints the frequency calculation's result.json."""
    write(tmp_path, "w.yaml", textwrap.dedent(WATER.format(basis="sto-3g", grid=1)))
    proc = dm21(["opt", "w.yaml", "--freq", "-o", "o", "--json"], tmp_path, env=dm21_env())
    assert proc.returncode == 0, show(proc)
    document = json.loads(proc.stdout)
    assert document["driver"] == "hessian"
    vib = document["extras"]["dm21cli"]["vibrations"]
    assert vib["stationarity"]["ok"] and vib["classification"]["ok"], vib["stationarity"]
    optimised = json.loads((tmp_path / "o" / "result.json").read_text())
    np.testing.assert_allclose(document["molecule"]["geometry"],
                               optimised["molecule"]["geometry"], atol=1e-9)
    assert (tmp_path / "o" / "freq" / "vibrations.molden").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("molecule", ["LiH", "HF"])
def test_dm21_diatomic_wavenumber_agrees_with_a_fit_of_single_points(molecule, checkpoints_dir):
    """Issue 23: DM21/def2-SVP ``dm21 opt --freq`` (through the library) against a polynomial
    fit of nine single points along the bond (benchmarks/freq_diatomics.py), within the fit's
    own uncertainty (DM21's energy noise, ~3e-7 Ha, and the spread over fits), or 0.5 cm^-1 when
    that is smaller (measured: LiH 1409.7 against 1410.1 +- 0.3, HF 4126.2 against
    4132.1 +- 6.5)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from freq_diatomics import measure

    row = measure(molecule, "DM21", "def2-svp", checkpoints_dir)
    assert row["stationary"]
    difference = abs(row["freq_wavenumber_cm1"] - row["fit_wavenumber_cm1"])
    assert difference <= max(row["fit_uncertainty_cm1"], 0.5), row


PLANAR_NH3 = """\
    molecule:
      xyz: |
        N  0.0000  0.0000  0.0000
        H  1.0000  0.0000  0.0500
        H -0.5000  0.8660  0.0000
        H -0.5000 -0.8660  0.0000
    basis: sto-3g
    functional: b3lyp
    scf: {grid_level: 1}
    outputs: {molden: false}
    """


def test_opt_ts_finds_the_ammonia_inversion_saddle_point(tmp_path):
    """``dm21 opt --ts`` (geomeTRIC's transition-state search, started from dm21's Hessian at
    the start) on a nearly planar ammonia: it converges to the planar saddle point, whose
    frequencies (freq/) show exactly one imaginary mode, the umbrella motion of the N atom
    out of the plane; the minimum (``dm21 opt``) lies below it (B3LYP/STO-3G)."""
    write(tmp_path, "nh3.yaml", textwrap.dedent(PLANAR_NH3))
    proc = dm21(["opt", "nh3.yaml", "--ts", "-o", "ts", "--json"], tmp_path, env=dm21_env())
    assert proc.returncode == 0, show(proc)
    document = json.loads(proc.stdout)
    vib = document["extras"]["dm21cli"]["vibrations"]
    assert vib["classification"]["kind"] == "ts" and vib["classification"]["ok"]
    assert vib["n_imaginary"] == 1 and vib["stationarity"]["ok"]
    mode = np.asarray(vib["normal_modes"][0])  # the imaginary one comes first
    coords = np.asarray(document["molecule"]["geometry"]).reshape(-1, 3)
    normal = np.cross(coords[2] - coords[1], coords[3] - coords[1])
    normal /= np.linalg.norm(normal)
    assert abs(mode[0] @ normal) > 0.9 * np.linalg.norm(mode[0])  # N moves out of the plane
    optimised = json.loads((tmp_path / "ts" / "result.json").read_text())
    assert optimised["extras"]["dm21cli"]["optimization"]["transition"] is True
    assert (tmp_path / "ts" / "start-hessian" / "result.json").is_file()
    minimum = dm21lib.opt("nh3.yaml", tmp_path, output_dir="min")  # (in this process)
    assert minimum.converged, minimum.progress.text
    barrier = document["properties"]["return_energy"] - minimum.result["properties"]["return_energy"]
    assert 0.001 < barrier < 0.05


def _stopped_when(args: list[str], tmp_path: Path, folder: Path, count: int) -> tuple[int, str]:
    """Run ``dm21 ARGS`` and send it SIGTERM once `count` points have finished in the Hessian
    folder `folder`: (its exit status, its stderr)."""
    points = folder / DISPLACEMENTS_DIR
    return signal_when(args, tmp_path, lambda: len(list(points.glob("*/result.json"))) >= count)


def _finished_points(folder: Path) -> list[str]:
    return [p.parent.name for p in (folder / DISPLACEMENTS_DIR).glob("*/result.json")
            if json.loads(p.read_text())["success"]]


def test_opt_freq_stopped_in_its_frequencies_restarts_them_without_optimising_again(tmp_path):
    """SIGTERM while ``dm21 opt --freq`` computes the frequencies of its converged optimisation:
    exit 130, the message names ``dm21 opt ... --freq --restart`` (it said to run the dm21 freq
    command again, which there was none of); that command reads the finished points and does
    not optimise again (it refused before: a converged optimisation, nothing to restart)."""
    write(tmp_path, "w.yaml", textwrap.dedent(WATER.format(basis="sto-3g", grid=1)))
    rc, stderr = _stopped_when(["opt", "w.yaml", "--freq", "-o", "o"], tmp_path,
                               tmp_path / "o" / "freq", 3)
    assert rc == 130, stderr
    assert "continue with 'dm21 opt w.yaml --freq --restart -o o'" in stderr, stderr
    optimised = (tmp_path / "o" / "result.json").read_text()
    assert json.loads(optimised)["success"]
    finished = _finished_points(tmp_path / "o" / "freq")
    assert len(finished) >= 3, finished
    again = dm21(["opt", "w.yaml", "--freq", "--restart", "-o", "o"], tmp_path, env=dm21_env())
    assert again.returncode == 0, show(again)
    assert "has converged: continuing with its frequencies" in again.stderr
    assert (tmp_path / "o" / "result.json").read_text() == optimised
    log = (tmp_path / "o" / "freq" / "freq.log").read_text()
    assert log.count("read from disk") >= len(finished) + 1, log  # (+ the reference)
    vib = json.loads((tmp_path / "o" / "freq" / "result.json").read_text())
    vib = vib["extras"]["dm21cli"]["vibrations"]
    assert vib["classification"]["ok"]


def test_ts_search_stopped_in_its_first_hessian_restarts_reading_its_points(tmp_path):
    """SIGTERM while ``dm21 opt --ts`` computes its first Hessian (no step finished): exit 130,
    the message names the command that continues; ``--restart`` reads the points finished in
    start-hessian/ instead of computing them again (they were computed again before), then
    the search converges (B3LYP/STO-3G ammonia)."""
    write(tmp_path, "nh3.yaml", textwrap.dedent(PLANAR_NH3))
    start = tmp_path / "ts" / "start-hessian"
    rc, stderr = _stopped_when(["opt", "nh3.yaml", "--ts", "-o", "ts"], tmp_path, start, 4)
    assert rc == 130, stderr
    assert "'dm21 opt nh3.yaml --ts --restart -o ts'" in stderr, stderr
    finished = _finished_points(start)
    assert len(finished) >= 4, finished
    again = dm21(["opt", "nh3.yaml", "--ts", "--restart", "-o", "ts"], tmp_path, env=dm21_env())
    assert again.returncode == 0, show(again)
    log = (start / "freq.log").read_text()
    assert log.count("read from disk") >= len(finished) + 1, log  # (+ the reference)
    vib = json.loads((tmp_path / "ts" / "freq" / "result.json").read_text())
    vib = vib["extras"]["dm21cli"]["vibrations"]
    assert vib["classification"]["ok"] and vib["n_imaginary"] == 1


def test_ts_hessian_every_n_steps_is_dm21s_and_geometric_uses_it(tmp_path):
    """``--hessian-every 2``: after every second accepted step the Hessian is computed again
    (dm21 freq's, in hessians/step-NNN/) and geomeTRIC takes it in place of its updated one
    (its log: read from our file, then "Recomputed the Hessian"); B3LYP/STO-3G ammonia."""
    write(tmp_path, "nh3.yaml", textwrap.dedent(PLANAR_NH3))
    proc = dm21(["opt", "nh3.yaml", "--ts", "--hessian-every", "2", "-o", "ts"], tmp_path,
                env=dm21_env())
    assert proc.returncode == 0, show(proc)
    record = json.loads((tmp_path / "ts" / "result.json").read_text())["extras"]["dm21cli"]["optimization"]
    assert record["hessian_every"] == 2 and record["steps"] >= 3
    first, *again = record["hessians"]
    assert first["step"] == 1 and first["folder"] == "start-hessian" and again
    for k, entry in enumerate(again):
        assert entry["step"] == 1 + 2 * (k + 1) and "one imaginary mode" in entry["verdict"]
        point = json.loads((tmp_path / "ts" / entry["folder"] / "result.json").read_text())
        assert point["driver"] == "hessian" and point["success"]
        geometry = record["history"][entry["step"] - 1]["geometry_bohr"]
        assert np.allclose(point["molecule"]["geometry"], np.ravel(geometry), atol=1e-8)
    log = (tmp_path / "ts" / "dm21.log").read_text()
    assert log.count("Recomputed the Hessian from scratch") == len(again)
    assert log.count("Using Hessian matrix read from file") == len(again)
    assert "Valid Hessian data not found" not in log  # (geomeTRIC computed none of its own)
    vib = json.loads((tmp_path / "ts" / "freq" / "result.json").read_text())
    vib = vib["extras"]["dm21cli"]["vibrations"]
    assert vib["classification"]["ok"] and vib["n_imaginary"] == 1


@pytest.mark.parametrize("args, needle", [
    (["--hessian-every", "2"], "--hessian-every: hessian_every is a transition-state search's"),
    (["--ts", "--hessian-every", "-1"], "--hessian-every: must be an integer >= 0, got -1"),
])
def test_hessian_every_is_refused_where_it_means_nothing(tmp_path, args, needle):
    write(tmp_path, "nh3.yaml", textwrap.dedent(PLANAR_NH3))
    proc = dm21(["opt", "nh3.yaml", *args], tmp_path)
    assert proc.returncode == 2, show(proc)
    (line,) = proc.stderr.strip().splitlines()
    assert needle in line, line
    assert not (tmp_path / "outputs").exists()


def test_a_job_file_with_task_ts_is_a_transition_state_search(tmp_path):
    job = write(tmp_path, "nh3.yaml", textwrap.dedent(PLANAR_NH3) + "job: {task: ts}\n")
    spec = load_job(job)
    assert spec.job.task == "opt" and spec.opt.transition
    assert spec.to_resolved_dict()["opt"]["transition"] is True


@pytest.mark.slow
def test_dm21_ammonia_inversion_saddle_point_and_barrier(tmp_path, checkpoints_dir):
    """Issue 23: DM21/def2-SVP ``dm21 opt inputs/nh3-ts.yaml`` finds the planar saddle point with
    one imaginary mode, and the barrier above ``inputs/nh3.yaml``'s minimum is B3LYP's within
    1 kcal/mol (measured: DM21 6.13, B3LYP 5.92 kcal/mol; the experiment's about 5.8)."""
    inputs = Path(__file__).resolve().parent.parent / "inputs"
    env = dm21_env(checkpoints_dir)
    energies = {}
    for name, extra in (("nh3-ts.yaml", []), ("nh3.yaml", [])):
        for functional in ("DM21", "b3lyp"):
            out = f"{name}-{functional}"
            proc = dm21(["opt", str(inputs / name), "--functional", functional, "-o", out,
                         "--json"], tmp_path, env=env, timeout=1800)
            assert proc.returncode == 0, show(proc)
            document = json.loads(proc.stdout)
            energies[(name, functional)] = json.loads(
                (tmp_path / out / "result.json").read_text())["properties"]["return_energy"]
            if name == "nh3-ts.yaml":
                vib = document["extras"]["dm21cli"]["vibrations"]
                assert vib["classification"]["ok"] and vib["n_imaginary"] == 1
    barrier = {f: (energies[("nh3-ts.yaml", f)] - energies[("nh3.yaml", f)]) * 627.5095
               for f in ("DM21", "b3lyp")}
    assert 3 < barrier["DM21"] < 9 and abs(barrier["DM21"] - barrier["b3lyp"]) < 1.0, barrier
