"""End-to-end tests of ``dm21 run``.

Every test writes its inputs into a temporary folder and runs the job there: what the
command line itself does (exit statuses, the one-line errors, stdout and stderr, --help,
signals, the peak memory of the process) as a user runs it, ``python -m dm21cli run ...``
in a subprocess; what the job computes and writes (energies, result.json, the files) in
this process, through the library calls of the command (`dm21lib`).  DM21 single points are
slow (about a second per SCF cycle per 20k grid points), so the systems are tiny (H2, H2+)
on coarse grids, and one module-scoped DM21 job (`h2_job`) serves all the tests that only
inspect a successful run's output directory.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import dm21lib
import numpy as np
import pytest
from cubefile import read_cube
from dm21proc import signal_when

H2_ATOMS = ("H 0.0 0.0 0.0", "H 0.0 0.0 0.74")
WEIGHTS_DATA = Path("DM21") / "variables" / "variables.data-00000-of-00001"


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
def _env(checkpoints, xdg_root: Path | None = None, **extra) -> dict:
    """The environment of a dm21 subprocess."""
    env = dict(os.environ)
    env.pop("DM21_TRACEBACK", None)
    env["OMP_NUM_THREADS"] = "2"
    env["NO_COLOR"] = "1"
    if checkpoints is None:
        env.pop("DM21_CHECKPOINTS", None)
    else:
        env["DM21_CHECKPOINTS"] = str(checkpoints)
    if xdg_root is not None:
        env["XDG_DATA_HOME"] = str(xdg_root / "data")
        env["XDG_CACHE_HOME"] = str(xdg_root / "cache")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def dm21(args, cwd: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m dm21cli ARGS`` in `cwd` and capture its output."""
    return subprocess.run([sys.executable, "-m", "dm21cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _show(proc: subprocess.CompletedProcess) -> str:
    return (f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}\n"
            f"--- stderr ---\n{proc.stderr[-4000:]}")


def write_job(folder: Path, name: str, *, atoms=H2_ATOMS, basis: str = "def2-svp",
              functional: str | None = None, extra: str = "") -> Path:
    """A job file `folder/name.yaml` for a molecule given as inline atom lines."""
    lines = ["job:", f"  name: {name}", "molecule:", "  xyz: |"]
    lines += [f"    {atom}" for atom in atoms]
    lines.append(f"basis: {basis}")
    if functional:
        lines.append(f"functional: {functional}")
    text = "\n".join(lines) + "\n" + textwrap.dedent(extra)
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def leftovers(directory: Path) -> list[str]:
    """Markers and temporary files a finished run must not leave behind."""
    names = [p.name for p in directory.iterdir()]
    return sorted(n for n in names if n == ".running" or n.endswith(".tmp")
                  or n == ".scf.chk.partial" or ".old-" in n)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ----------------------------------------------------------------------------
# the shared successful DM21 job
# ----------------------------------------------------------------------------
class Job:
    """A finished ``dm21 run`` subprocess and its output directory."""

    def __init__(self, proc, cwd: Path, outdir: Path):
        self.proc = proc
        self.cwd = cwd
        self.outdir = outdir

    @property
    def result(self) -> dict:
        return json.loads((self.outdir / "result.json").read_text())


@pytest.fixture(scope="module")
def h2_job(tmp_path_factory, checkpoints_dir) -> Job:
    """H2/def2-SVP with DM21 on a coarse grid, cubes and molden, run with --json."""
    cwd = tmp_path_factory.mktemp("h2job")
    write_job(cwd, "h2", extra="""\
        scf:
          grid_level: 1
        outputs:
          cubes: [density, homo, lumo, spin_density]
          cube_spacing: 0.1
          molden: true
        """)
    env = _env(checkpoints_dir, tmp_path_factory.mktemp("xdg"))
    proc = dm21(["run", "h2.yaml", "--json"], cwd, env)
    assert proc.returncode == 0, _show(proc)
    return Job(proc, cwd, cwd / "outputs" / "h2")


# ----------------------------------------------------------------------------
# 1. files and content of a successful run
# ----------------------------------------------------------------------------
def test_success_writes_all_files_and_nothing_else(h2_job):
    out = h2_job.outdir
    assert out.is_dir(), f"default output directory outputs/h2 missing; cwd holds " \
                         f"{sorted(p.name for p in h2_job.cwd.iterdir())}"
    present = {p.name for p in out.iterdir()}
    expected = {"result.json", "summary.txt", "orbitals.molden", "scf.chk",
                "input.resolved.yaml", "dm21.log", "density.cube", "homo.cube",
                "lumo.cube", "spin_density.cube"}
    assert expected <= present, f"missing {sorted(expected - present)}; have {sorted(present)}"
    assert leftovers(out) == [], f"leftover marker/temp files: {leftovers(out)}"
    assert leftovers(out.parent) == [], f"leftovers next to the job dir: {leftovers(out.parent)}"
    files = h2_job.result["extras"]["dm21cli"]["files"]
    for key, name in (("result", "result.json"), ("summary", "summary.txt"),
                      ("molden", "orbitals.molden"), ("chkfile", "scf.chk"),
                      ("input", "input.resolved.yaml"), ("log", "dm21.log")):
        assert files.get(key) == name, f"result.json files[{key!r}] = {files.get(key)!r}"
    assert files["cubes"] == {"density": "density.cube", "homo": "homo.cube",
                              "lumo": "lumo.cube", "spin_density": "spin_density.cube"}
    summary = (out / "summary.txt").read_text()
    assert "SUCCESS" in summary and "NOT CONVERGED" not in summary, summary


def test_result_json_energies_and_properties(h2_job):
    """result.json is a QCSchema AtomicResult: standard fields where the schema has them,
    dm21cli's own under extras.dm21cli (issue 13)."""
    r = h2_job.result
    p = r["properties"]
    x = r["extras"]["dm21cli"]
    xp = x["properties"]
    assert r["schema_name"] == "qcschema_output" and r["schema_version"] == 1
    assert r["success"] is True and x["converged"] is True, \
        (r["success"], x["converged"], r["error"])
    assert x["status"] == "success"
    assert r["error"] is None
    assert r["driver"] == "energy"
    e = r["return_result"]
    assert isinstance(e, float) and math.isfinite(e), e
    assert -1.3 < e < -1.0, f"H2 energy {e} is not plausible"
    assert "scf_dispersion_correction_energy" not in p  # no dispersion correction
    assert e == p["return_energy"]
    assert e == pytest.approx(p["scf_total_energy"] + p.get("scf_dispersion_correction_energy", 0.0),
                              abs=1e-12)
    terms = (p["scf_one_electron_energy"] + p["scf_two_electron_energy"] + p["scf_xc_energy"]
             + p["nuclear_repulsion_energy"])
    assert abs(terms - p["scf_total_energy"]) < 1e-8, \
        f"energy terms sum to {terms!r}, scf_total_energy is {p['scf_total_energy']!r}"
    charge = r["molecule"]["molecular_charge"]
    assert charge == 0
    assert abs(sum(xp["mulliken_charges"]) - charge) < 1e-6, xp["mulliken_charges"]
    assert len(xp["mulliken_charges"]) == 2
    assert xp["restricted"] is True
    assert xp["nelectron"] == 2 == p["calcinfo_nalpha"] + p["calcinfo_nbeta"]
    assert p["calcinfo_natom"] == 2 and p["calcinfo_nbasis"] == p["calcinfo_nmo"]
    assert p["scf_iterations"] == sum(a["cycles"] for a in xp["scf_attempts"])
    # the dipole in e*bohr, as QCSchema has it; the Debye values kept under extras
    assert np.allclose(np.asarray(p["scf_dipole_moment"]) * 2.5417464157449032,
                       xp["dipole_moment_debye"], rtol=0, atol=1e-12)
    assert xp["dm21_network_points"] > 0, "the DM21 network evaluated no points"
    assert xp["dm21_evaluations"] > 0
    assert r["model"] == {"method": "DM21", "basis": "def2-svp"}
    assert x["model"] == {"dispersion": None, "ecp": None}
    assert r["molecule"]["geometry"] == pytest.approx([0, 0, 0, 0, 0, 0.74 / 0.529177210903],
                                                      abs=1e-12)
    assert r["keywords"]["grid_level"] == 1 and r["keywords"]["dispersion"] is None


def test_result_json_provenance(h2_job, checkpoints_dir):
    import pyscf

    prov = h2_job.result["provenance"]
    assert prov["pyscf"] == pyscf.__version__
    ckpt = prov["checkpoint"]
    assert isinstance(ckpt, dict), f"no checkpoint in provenance: {prov}"
    assert ckpt["variant"] == "DM21"
    digests = ckpt["sha256"]
    rel = str(WEIGHTS_DATA.relative_to("DM21"))
    assert rel in digests, f"no sha256 for {rel} in {sorted(digests)}"
    for name, digest in digests.items():
        assert digest == sha256(checkpoints_dir / "DM21" / name), \
            f"provenance sha256 of {name} does not match the file"


def test_result_json_round_trips(h2_job):
    text = (h2_job.outdir / "result.json").read_text()
    first = json.loads(text)
    again = json.loads(json.dumps(first))
    assert again == first
    assert "NaN" not in text and "Infinity" not in text


def test_density_cube_integrates_to_electron_count(h2_job):
    cube = read_cube(h2_job.outdir / "density.cube")
    axes, values = cube.axes, cube.values
    voxel = abs(np.linalg.det(axes))
    # requested spacing 0.1 Angstrom = 0.189 bohr; it must not be exceeded
    assert np.all(np.linalg.norm(axes, axis=1) <= 0.1 / 0.529177210903 + 1e-6), axes
    total = float(values.sum() * voxel)
    assert total == pytest.approx(2.0, rel=0.01), f"density cube integrates to {total}"
    assert values.min() >= -1e-10


def test_orbital_cubes(h2_job):
    for name in ("homo", "lumo"):
        cube = read_cube(h2_job.outdir / f"{name}.cube")
        axes, values = cube.axes, cube.values
        norm = float((values ** 2).sum() * abs(np.linalg.det(axes)))
        # sigma_g of H2 is compact; the 3 Angstrom margin holds nearly all of it
        if name == "homo":
            assert norm == pytest.approx(1.0, rel=0.02), f"HOMO cube norm {norm}"
        assert np.abs(values).max() > 0.01, f"{name}.cube is (nearly) zero"
    spin = read_cube(h2_job.outdir / "spin_density.cube").values
    assert np.abs(spin).max() == 0.0, "restricted spin density cube is not zero"


def test_molden_reads_back(h2_job):
    from pyscf.tools import molden

    loaded = molden.load(str(h2_job.outdir / "orbitals.molden"))
    mo_energy = np.asarray(loaded[1])
    expected = np.asarray(h2_job.result["extras"]["dm21cli"]["properties"]["mo_energies_hartree"])
    assert mo_energy.shape == expected.shape, (mo_energy.shape, expected.shape)
    assert np.max(np.abs(mo_energy - expected)) < 1e-6, (mo_energy, expected)
    mo_occ = np.asarray(loaded[3])
    assert mo_occ.sum() == pytest.approx(2.0)


def test_resolved_input_validates(h2_job, tmp_path):
    resolved = h2_job.outdir / "input.resolved.yaml"
    proc = dm21(["validate", resolved], h2_job.cwd, _env(None))
    assert proc.returncode == 0, _show(proc)
    assert "ok" in proc.stdout


def test_chkfile_as_guess_and_output_option(h2_job, tmp_path, checkpoints_dir):
    """4. -o DIR, and the first run's scf.chk as initial guess of a second run."""
    chk = h2_job.outdir / "scf.chk"
    write_job(tmp_path, "h2guess", extra=f"""\
        scf:
          grid_level: 1
          guess: {chk}
        outputs:
          molden: false
        """)
    proc = dm21(["run", "h2guess.yaml", "-o", "elsewhere/run1"], tmp_path, _env(checkpoints_dir))
    assert proc.returncode == 0, _show(proc)
    out = tmp_path / "elsewhere" / "run1"
    assert (out / "result.json").is_file(), \
        f"-o ignored; tmp_path holds {list(tmp_path.rglob('*'))}"
    assert not (tmp_path / "outputs").exists(), "default outputs/ created although -o was given"
    assert leftovers(out) == []
    # plain (non-tty) summary on stdout, progress on stderr
    assert "DM21 calculation summary" in proc.stdout, _show(proc)
    assert "[dm21" in proc.stderr and "[dm21" not in proc.stdout
    r = json.loads((out / "result.json").read_text())
    first = r["extras"]["dm21cli"]["properties"]["scf_attempts"][0]
    assert first["converged"] and first["cycles"] <= 3, f"first attempt: {first}"
    assert r["extras"]["dm21cli"]["properties"]["warm_start"] is None, \
        "warm start ran although a chkfile guess was given"
    e_ref = h2_job.result["return_result"]
    assert abs(r["return_result"] - e_ref) < 1e-6, (r["return_result"], e_ref)
    assert "orbitals.molden" not in {p.name for p in out.iterdir()}


# ----------------------------------------------------------------------------
# 2. --json
# ----------------------------------------------------------------------------
def test_json_stdout_is_result_json(h2_job):
    stdout = h2_job.proc.stdout
    try:
        printed = json.loads(stdout)
    except ValueError as exc:
        pytest.fail(f"--json stdout is not JSON ({exc}):\n{stdout[:2000]}")
    assert printed == h2_job.result
    assert "[dm21" in h2_job.proc.stderr, "no progress lines on stderr"
    assert "SCF attempt" in h2_job.proc.stderr


def test_plain_progress_lines_name_the_long_dm21_phases(h2_job):
    """In a pipe and in dm21.log: one plain line per event, in the same format as
    before; the first DM21 evaluation says when it computes the exchange integrals."""
    lines = h2_job.proc.stderr.splitlines()
    assert all(re.match(r"\[dm21 +\d+\.\ds\] .", line) for line in lines), h2_job.proc.stderr
    assert "\x1b" not in h2_job.proc.stderr
    phase = "  DM21 evaluation 1: computing the exchange integrals"
    assert [line for line in lines if phase in line], h2_job.proc.stderr
    log = (h2_job.outdir / "dm21.log").read_text()
    assert re.search(r"^\[dm21 \d\d:\d\d:\d\d\] " + re.escape(phase) + r" \(grid points in 1 block\)$",
                     log, re.M), log[:3000]


# ----------------------------------------------------------------------------
# 3. refuse to overwrite; --overwrite
# ----------------------------------------------------------------------------
def test_refuses_to_overwrite_then_overwrites(tmp_path, checkpoints_dir):
    write_job(tmp_path, "ow", basis="sto-3g", functional="b3lyp",
              extra="scf: {grid_level: 1}\noutputs: {molden: false}\n")
    env = _env(checkpoints_dir)
    first = dm21lib.run("ow.yaml", tmp_path, checkpoints=checkpoints_dir)  # (in this process)
    assert first.converged, first.progress.text
    out = tmp_path / "outputs" / "ow"
    old_bytes = (out / "result.json").read_bytes()
    (out / "user-note.txt").write_text("from before\n")

    again = dm21(["run", "ow.yaml"], tmp_path, env)  # the command: exit 5, one line
    assert again.returncode == 5, _show(again)
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line:\n{again.stderr}"
    assert "--overwrite" in lines[0], lines[0]
    assert (out / "result.json").read_bytes() == old_bytes, "refused run changed result.json"
    assert (out / "user-note.txt").is_file()
    assert leftovers(out) == [] and leftovers(out.parent) == []

    forced = dm21lib.run("ow.yaml", tmp_path, checkpoints=checkpoints_dir, overwrite=True)
    assert forced.converged, forced.progress.text
    assert not (out / "user-note.txt").exists(), "old directory was not replaced"
    assert (out / "result.json").read_bytes() != old_bytes
    assert json.loads((out / "result.json").read_text())["success"] is True
    assert leftovers(out) == [], leftovers(out)
    assert leftovers(out.parent) == [], f"old directory left behind: {leftovers(out.parent)}"


def test_overwrite_with_own_chkfile_as_guess(tmp_path, checkpoints_dir):
    """Re-running a job from its own previous scf.chk, replacing its output directory."""
    extra = "scf: {grid_level: 1}\noutputs: {molden: false}\n"
    write_job(tmp_path, "again", functional="b3lyp", extra=extra)
    first = dm21lib.run("again.yaml", tmp_path, checkpoints=checkpoints_dir)
    assert first.converged, first.progress.text
    out = tmp_path / "outputs" / "again"
    e_first = json.loads((out / "result.json").read_text())["return_result"]
    write_job(tmp_path, "again", functional="b3lyp",
              extra="scf: {grid_level: 1, guess: outputs/again/scf.chk}\n"
                    "outputs: {molden: false}\n")
    second = dm21lib.run("again.yaml", tmp_path, checkpoints=checkpoints_dir, overwrite=True)
    assert second.converged, second.progress.text
    r = json.loads((out / "result.json").read_text())
    attempts = r["extras"]["dm21cli"]["properties"]["scf_attempts"]
    assert attempts[0]["cycles"] <= 3, attempts
    assert abs(r["return_result"] - e_first) < 1e-6


# ----------------------------------------------------------------------------
# 5. non-convergence
# ----------------------------------------------------------------------------
def test_not_converged_exits_4_with_results(tmp_path, checkpoints_dir):
    write_job(tmp_path, "nc", functional="b3lyp", extra="""\
        scf:
          grid_level: 1
          max_cycle: 2
          max_attempts: 1
          conv_tol: 1e-12
        outputs: {molden: false}
        """)
    proc = dm21(["run", "nc.yaml"], tmp_path, _env(checkpoints_dir))
    assert proc.returncode == 4, _show(proc)
    assert "did not converge" in proc.stderr, _show(proc)
    out = tmp_path / "outputs" / "nc"
    r = json.loads((out / "result.json").read_text())
    # a QCSchema FailedOperation (convergence_error) keeping the last SCF iteration (issue 13)
    x = r["extras"]["dm21cli"]
    assert x["converged"] is False and r["success"] is False, (x["converged"], r["success"])
    assert x["status"] == "not-converged"
    assert r["error"]["error_type"] == "convergence_error", r["error"]
    assert "return_result" not in r and r["input_data"]["driver"] == "energy"
    assert math.isfinite(r["extras"]["properties"]["return_energy"])
    assert x["properties"]["scf_attempts"][0]["converged"] is False
    assert "NOT CONVERGED" in (out / "summary.txt").read_text()
    assert leftovers(out) == []


# ----------------------------------------------------------------------------
# 6. bad input
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["unknown-key", "multiplicity", "charge-option", "electrons-do-not-fit",
                                  "absurd-charge", "cube-grid-too-large", "guess-not-a-chkfile"])
def test_bad_input_exits_2_one_line_no_output(tmp_path, checkpoints_dir, case):
    if case == "electrons-do-not-fit":
        write_job(tmp_path, "bad")
        args, needle = ["run", "bad.yaml", "--basis", "sto-3g", "--charge", "-4"], "--charge: H2"
    elif case == "absurd-charge":
        write_job(tmp_path, "bad")
        args, needle = ["run", "bad.yaml", "--charge", str(-10**9)], "1000000002 electrons"
    elif case == "cube-grid-too-large":
        write_job(tmp_path, "bad", extra="outputs: {cubes: [density], cube_spacing: 1e-5}\n")
        args, needle = ["run", "bad.yaml"], "outputs.cube_spacing"
    elif case == "guess-not-a-chkfile":
        (tmp_path / "guess.chk").write_text("not HDF5\n")
        write_job(tmp_path, "bad", extra="scf: {guess: guess.chk}\n")
        args, needle = ["run", "bad.yaml"], "not a PySCF chkfile"
    elif case == "unknown-key":
        write_job(tmp_path, "bad", extra="scf:\n  conv_tl: 1e-6\n")
        args, needle = ["run", "bad.yaml"], "conv_tl"
    elif case == "multiplicity":
        write_job(tmp_path, "bad", extra="")
        text = (tmp_path / "bad.yaml").read_text().replace("basis:", "  multiplicity: 2\nbasis:")
        (tmp_path / "bad.yaml").write_text(text)
        args, needle = ["run", "bad.yaml"], "multiplicity"
    else:
        write_job(tmp_path, "bad")
        args, needle = ["run", "bad.yaml", "--charge", "1"], "--charge"
    proc = dm21(args, tmp_path, _env(checkpoints_dir))
    assert proc.returncode == 2, _show(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected exactly one stderr line:\n{proc.stderr}"
    assert lines[0].startswith("dm21: error:") and needle in lines[0], lines[0]
    assert proc.stdout == ""
    assert not (tmp_path / "outputs").exists(), "an output directory was created for bad input"

    traced = dm21(["--traceback", *args], tmp_path, _env(checkpoints_dir))
    assert traced.returncode == 2, _show(traced)
    assert "Traceback (most recent call last)" in traced.stderr, _show(traced)
    assert not (tmp_path / "outputs").exists()


# ----------------------------------------------------------------------------
# 7. weights
# ----------------------------------------------------------------------------
def test_corrupted_weights_exit_3(tmp_path, checkpoints_dir):
    bad = tmp_path / "ckpt"
    shutil.copytree(checkpoints_dir, bad)
    data = bad / WEIGHTS_DATA
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    data.write_bytes(bytes(blob))
    work = tmp_path / "work"
    work.mkdir()
    write_job(work, "w", basis="sto-3g", extra="scf: {grid_level: 1}\n")
    proc = dm21(["run", "w.yaml"], work, _env(bad))
    assert proc.returncode == 3, _show(proc)
    assert "variables.data-00000-of-00001" in proc.stderr, _show(proc)
    assert len(proc.stderr.strip().splitlines()) == 1, _show(proc)
    assert not (work / "outputs").exists(), "output directory created despite bad weights"


def test_missing_weights_exit_3(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    write_job(work, "w", basis="sto-3g", extra="scf: {grid_level: 1}\n")
    proc = dm21(["run", "w.yaml"], work, _env(empty))
    assert proc.returncode == 3, _show(proc)
    assert len(proc.stderr.strip().splitlines()) == 1, _show(proc)
    assert not (work / "outputs").exists(), "output directory created despite missing weights"


# ----------------------------------------------------------------------------
# 8. other functionals, dispersion
# ----------------------------------------------------------------------------
def test_b3lyp_through_the_same_command(h2_job, tmp_path):
    # Same molecule, basis and grid as h2_job; no weights needed at all.
    write_job(tmp_path, "h2", extra="scf: {grid_level: 1}\noutputs: {molden: false}\n")
    done = dm21lib.run("h2.yaml", tmp_path, functional="b3lyp",
                       checkpoints=tmp_path / "no-such-checkpoints")
    assert done.converged, done.progress.text
    r = json.loads((tmp_path / "outputs" / "h2" / "result.json").read_text())
    assert r["success"] is True
    assert r["model"]["method"].lower() == "b3lyp"
    assert r["provenance"]["checkpoint"] is None, r["provenance"]["checkpoint"]
    assert "dm21_network_points" not in r["extras"]["dm21cli"]["properties"]
    e_dm21 = h2_job.result["return_result"]
    assert abs(r["return_result"] - e_dm21) > 1e-4, (r["return_result"], e_dm21)


def test_dm21_with_d3bj(tmp_path, checkpoints_dir):
    write_job(tmp_path, "d3", basis="sto-3g",
              extra="dispersion: d3bj\nscf: {grid_level: 1}\noutputs: {molden: false}\n")
    done = dm21lib.run("d3.yaml", tmp_path, checkpoints=checkpoints_dir)
    assert done.converged, done.progress.text
    r = done.result
    p = r["properties"]
    disp = p.get("scf_dispersion_correction_energy")
    assert r["extras"]["dm21cli"]["model"]["dispersion"] == "d3bj"
    assert disp is not None and disp < 0, disp
    assert r["return_result"] == p["return_energy"] == pytest.approx(p["scf_total_energy"] + disp,
                                                                     abs=1e-12)
    assert r["keywords"]["dispersion"] == "d3bj"
    assert r["extras"]["dm21cli"]["properties"]["dm21_network_points"] > 0


# ----------------------------------------------------------------------------
# 9. bare .xyz with options
# ----------------------------------------------------------------------------
def test_bare_xyz_cation_is_unrestricted(tmp_path, checkpoints_dir):
    (tmp_path / "h2p.xyz").write_text("2\nH2+ cation\nH 0.0 0.0 0.0\nH 0.0 0.0 1.06\n")
    done = dm21lib.run("h2p.xyz", tmp_path, basis="sto-3g", functional="DM21", charge=1,
                       multiplicity=2, grid_level=1, checkpoints=checkpoints_dir)
    assert done.converged, done.progress.text
    out = tmp_path / "outputs" / "h2p"
    r = json.loads((out / "result.json").read_text())
    p = r["extras"]["dm21cli"]["properties"]
    assert r["molecule"]["molecular_charge"] == 1 and r["molecule"]["molecular_multiplicity"] == 2
    assert p["restricted"] is False
    assert p["nelectron"] == 1
    assert (r["properties"]["calcinfo_nalpha"], r["properties"]["calcinfo_nbeta"]) == (1, 0)
    assert abs(p["s_squared"] - 0.75) < 0.01, p["s_squared"]
    assert abs(sum(p["mulliken_charges"]) - 1) < 1e-6, p["mulliken_charges"]
    assert r["model"]["basis"].lower() == "sto-3g"
    assert leftovers(out) == []


# ----------------------------------------------------------------------------
# 9b. effective core potentials (issue 10)
# ----------------------------------------------------------------------------
ECP_CASES = {
    # atoms, basis in the job file, PySCF's basis= for the reference, ECP per element, electrons
    "nacl-lanl2dz": (("Na 0 0 0", "Cl 0 0 2.36"), "lanl2dz", "lanl2dz",
                     {"Na": ("lanl2dz", 10), "Cl": ("lanl2dz", 10)}, 8),
    "hi-per-element": (("H 0 0 0", "I 0 0 1.61"), "{I: cc-pvdz-pp, default: def2-svp}",
                       {"I": "cc-pvdz-pp", "H": "def2-svp"}, {"I": ("cc-pvdz-pp", 28)}, 26),
}


@pytest.mark.parametrize("case", sorted(ECP_CASES))
def test_ecp_b3lyp_matches_pyscf_with_the_ecp(tmp_path, case):
    """B3LYP through `dm21 run` against plain PySCF given the ECP explicitly (same default grid,
    both converged to 1e-9 Ha): the same state within 1e-6 Ha.  Before issue 10 NaCl/LANL2DZ
    ran without its ECP: 28 electrons in 16 valence functions, E = -123.65 Ha."""
    from pyscf import dft, gto

    atoms, basis, pyscf_basis, ecp, nelec = ECP_CASES[case]
    write_job(tmp_path, case, atoms=atoms, basis=basis, functional="b3lyp",
              extra="outputs: {molden: false}\n")
    done = dm21lib.run(f"{case}.yaml", tmp_path, checkpoints=tmp_path / "no-such-checkpoints")
    assert done.converged, done.progress.text
    out = tmp_path / "outputs" / case
    r = json.loads((out / "result.json").read_text())

    mol = gto.M(atom="; ".join(atoms), basis=pyscf_basis,
                ecp={symbol: name for symbol, (name, _) in ecp.items()}, verbose=0)
    mf = dft.RKS(mol, xc="b3lyp")
    mf.conv_tol = 1e-9
    e_ref = mf.kernel()
    assert mf.converged
    assert abs(r["return_result"] - e_ref) < 1e-6, (r["return_result"], e_ref)
    assert r["extras"]["dm21cli"]["properties"]["nelectron"] == nelec == mol.nelectron
    model = r["extras"]["dm21cli"]["model"]
    assert model["ecp"] == {symbol: {"basis": name, "core_electrons": core}
                            for symbol, (name, core) in ecp.items()}
    assert "ecp_note" not in model  # the note is about DM21
    summary = (out / "summary.txt").read_text()
    ecp_line = ", ".join(f"{s} {name} ({core} core electrons)" for s, (name, core) in ecp.items())
    assert f"  ECP                          {ecp_line}\n" in summary, summary


def test_dm21_hi_lanl2dz_runs_with_the_ecp_and_says_so(tmp_path, checkpoints_dir):
    """HI/LANL2DZ failed inside PySCF (exit 7) without the iodine ECP: 54 electrons, 10 orbitals."""
    write_job(tmp_path, "hi", atoms=("H 0 0 0", "I 0 0 1.61"), basis="lanl2dz",
              extra="scf: {grid_level: 1}\noutputs: {molden: false}\n")
    done = dm21lib.run("hi.yaml", tmp_path, checkpoints=checkpoints_dir)
    assert done.converged, done.progress.text
    out = tmp_path / "outputs" / "hi"
    r = json.loads((out / "result.json").read_text())
    model = r["extras"]["dm21cli"]["model"]
    assert r["success"] is True and r["model"]["method"] == "DM21"
    assert model["ecp"] == {"I": {"basis": "lanl2dz", "core_electrons": 46}}
    assert r["extras"]["dm21cli"]["properties"]["nelectron"] == 8
    assert r["properties"]["calcinfo_nbasis"] == 10
    note = ("DM21 was trained on all-electron calculations: DM21 energies with ECPs are outside "
            "its training")
    assert model["ecp_note"] == note
    summary = (out / "summary.txt").read_text()
    assert "  ECP                          I lanl2dz (46 core electrons)\n" in summary, summary
    assert f"  Note                         {note}\n" in summary, summary


# ----------------------------------------------------------------------------
# 10. help, and no heavy imports for it
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["weights", "--help"],
                                  ["validate", "--help"]])
def test_help_exits_0(tmp_path, args):
    proc = dm21(args, tmp_path, _env(None))
    assert proc.returncode == 0, _show(proc)
    assert "Usage:" in proc.stdout, _show(proc)
    assert proc.stderr == "", _show(proc)


def test_console_script(tmp_path):
    script = Path(sys.executable).parent / "dm21"
    assert script.is_file(), f"console script {script} not installed"
    proc = subprocess.run([str(script), "--version"], cwd=tmp_path, env=_env(None),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, _show(proc)
    from dm21cli import __version__

    assert __version__ in proc.stdout, _show(proc)


def test_help_imports_neither_pyscf_nor_tensorflow(tmp_path):
    code = textwrap.dedent("""\
        import sys
        from dm21cli.cli.main import main
        for argv in (["--help"], ["run", "--help"]):
            try:
                main(argv)
            except SystemExit as exc:
                assert exc.code in (0, None), exc.code
        heavy = sorted(m for m in sys.modules
                       if m.split(".")[0] in ("pyscf", "tensorflow", "tensorflow_hub",
                                              "qcelemental", "qcengine"))
        print("HEAVY=" + ",".join(heavy))
        """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(None),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, _show(proc)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("HEAVY=")]
    assert line == ["HEAVY="], f"heavy modules imported by --help: {line}"


# ----------------------------------------------------------------------------
# 11. SIGTERM / SIGINT during the SCF
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("signum, after_cycle", [(signal.SIGTERM, True), (signal.SIGINT, False)],
                         ids=["SIGTERM-after-cycle-1", "SIGINT-in-cycle-1"])
def test_signal_during_scf(tmp_path, checkpoints_dir, signum, after_cycle):
    # Stretched H2 from a cold start: DM21 needs many cycles, we stop it in the first.
    write_job(tmp_path, "slow", atoms=("H 0.0 0.0 0.0", "H 0.0 0.0 3.0"), extra="""\
        scf:
          grid_level: 2
          max_cycle: 200
          warm_start: null
        outputs: {molden: false}
        """)
    out = tmp_path / "outputs" / "slow"
    log = out / "dm21.log"
    args = ["run", "slow.yaml"]
    if after_cycle:  # an interrupted --overwrite must keep the results it was to replace
        out.mkdir(parents=True)
        (out / "result.json").write_text('{"previous": true}')
        (out / ".dm21-output").write_text("{}")  # a folder of dm21's (else --overwrite refuses it)
        args.append("--overwrite")

    def ready() -> bool:  # the SCF started (and, if asked, finished its first cycle)
        text = log.read_text() if log.is_file() else ""
        return "SCF attempt" in text and (not after_cycle
                                          or "cycle= 1 " in text.split("SCF attempt", 1)[1])

    # in the first cycle, 0.3 s after it began: its network set-up takes seconds
    rc, stderr = signal_when(args, tmp_path, ready, env=_env(checkpoints_dir), signum=signum,
                             timeout_s=60, then_wait_s=0.0 if after_cycle else 0.3)
    assert rc == 130, f"exit {rc}\n{stderr}"
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("dm21:") and "interrupted" in last, stderr
    r = json.loads((out / "result.json").read_text())
    x = r["extras"]["dm21cli"]
    assert x["status"] == "interrupted", x.get("status")
    assert r["success"] is False and x["converged"] is False
    assert r["error"]["error_type"] == "random_error", r["error"]  # a FailedOperation
    assert r["error"]["extras"] == {"exception": "KeyboardInterrupt"}, r["error"]
    assert not (out / ".running").exists(), ".running marker left after the interrupt"
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []
    assert leftovers(out.parent) == []
    if after_cycle:
        previous = out.parent / "slow.previous"
        assert json.loads((previous / "result.json").read_text()) == {"previous": True}
        # the last SCF state is kept as a restart file
        assert (out / "scf.chk").is_file() and not (out / ".scf.chk.partial").exists()


# ----------------------------------------------------------------------------
# 12. peak memory stays under --memory
# ----------------------------------------------------------------------------
def test_peak_memory_stays_under_the_memory_option(tmp_path, checkpoints_dir):
    """water/def2-TZVP needs 0.5 GB for its exchange integrals alone; with --memory 800
    only part of them is cached and the whole process (Python, PySCF, B3LYP warm
    start, DM21) peaks below 800 MB (measured 656 MB)."""
    write_job(tmp_path, "water", atoms=("O 0.0 0.0 0.1173", "H 0.0 0.7572 -0.4692",
                                        "H 0.0 -0.7572 -0.4692"), basis="def2-tzvp",
              extra="outputs: {molden: false}\n")
    code = textwrap.dedent("""\
        import resource, subprocess, sys
        proc = subprocess.run([sys.executable, "-m", "dm21cli", "run", "water.yaml",
                               "--memory", "800"], capture_output=True, text=True)
        print("EXIT", proc.returncode, "PEAK_MB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
        """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(checkpoints_dir),
                          capture_output=True, text=True, timeout=600)
    fields = proc.stdout.split()
    assert fields[:1] == ["EXIT"] and fields[1] == "0", _show(proc)
    result = json.loads((tmp_path / "outputs" / "water" / "result.json").read_text())
    assert result["extras"]["dm21cli"]["converged"] and result["provenance"]["memory_mb"] == 800
    assert float(fields[3]) < 800, f"peak {fields[3]} MB"
