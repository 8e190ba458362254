"""Tests of dm21cli.io.outputs: atomic writes, the job directory, cube/molden files, summaries."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dm21cli.io.outputs.atomic import _current_umask
from dm21cli.io.outputs.orbitals import orbital_label
from dm21cli.core.errors import OutputExistsError, OutputLocationError, output_error
from dm21cli.io.outputs.jobdir import JobDirectory, RunningMarker, is_dm21_output
from dm21cli.io.outputs.atomic import (
    atomic_path,
    atomic_write,
    open_log,
    read_json_object,
    write_json_atomic,
    write_text_atomic,
    write_text_files_atomic,
    write_yaml_atomic,
)
from dm21cli.io.outputs.qcschema import to_qcschema
from dm21cli.io.outputs.summary import render_summary, render_table
from dm21cli.io.outputs.orbitals import write_cube, write_molden
from dm21cli.core.units import ANGSTROM_BOHR, AU_DEBYE, HARTREE_EV

from cubefile import read_cube

SPACING_BOHR = 0.2 * ANGSTROM_BOHR
MARGIN_BOHR = 3.0 * ANGSTROM_BOHR
WATER = "O 0 0 0.1173; H 0 0.7572 -0.4692; H 0 -0.7572 -0.4692"


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# ----------------------------------------------------------------------------
# atomic writes
# ----------------------------------------------------------------------------
def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.txt"
    write_text_atomic(target, "old\n")
    with atomic_write(target) as f:
        f.write("new\n")
    assert target.read_text() == "new\n"
    assert _leftovers(tmp_path) == []
    # permissions follow the umask, not mkstemp's 0600
    assert target.stat().st_mode & 0o777 == 0o666 & ~_current_umask()


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_atomic_write_keeps_old_content_on_error(tmp_path, exc):
    target = tmp_path / "result.json"
    target.write_text("old content\n")
    with pytest.raises(exc):
        with atomic_write(target) as f:
            f.write("half of the new con")
            f.flush()
            raise exc("stop mid-write")
    assert target.read_text() == "old content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_atomic_write_new_file_not_created_on_error(tmp_path):
    target = tmp_path / "new.bin"
    with pytest.raises(ValueError):
        with atomic_write(target, "wb") as f:
            f.write(b"\x00\x01")
            raise ValueError
    assert list(tmp_path.iterdir()) == []


def test_write_json_numpy_and_nan(tmp_path):
    target = tmp_path / "r.json"
    obj = {"a": np.float64(1.5), "b": np.int64(3), "c": np.arange(3), "d": np.bool_(True),
           "e": np.float32(0.25), "f": [np.array([[1.0, 2.0]])], "p": tmp_path}
    write_json_atomic(target, obj)
    back = json.loads(target.read_text())
    assert back == {"a": 1.5, "b": 3, "c": [0, 1, 2], "d": True, "e": 0.25,
                    "f": [[[1.0, 2.0]]], "p": str(tmp_path)}
    assert target.read_text().startswith('{\n  "a"')
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "nan.json", {"x": float("nan")})
    assert not (tmp_path / "nan.json").exists()
    assert _leftovers(tmp_path) == []


def test_write_yaml_keeps_order_and_converts_numpy(tmp_path):
    import yaml

    target = tmp_path / "input.resolved.yaml"
    write_yaml_atomic(target, {"z": 1, "a": np.float64(2.5), "arr": np.array([1, 2]),
                               "t": (1, 2)})
    text = target.read_text()
    assert text.index("z:") < text.index("a:")
    assert yaml.safe_load(text) == {"z": 1, "a": 2.5, "arr": [1, 2], "t": [1, 2]}


def test_module_imports_without_pyscf():
    code = ("import sys, dm21cli.io.outputs; "
            "bad = [m for m in ('pyscf', 'numpy', 'rich', 'yaml') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------
# JobDirectory
# ----------------------------------------------------------------------------
def test_jobdir_creates_directory_and_marker(tmp_path):
    jd = JobDirectory(tmp_path / "deep" / "run1").prepare()
    assert jd.path.is_dir()
    marker = json.loads(jd.marker.read_text())
    assert marker["pid"] == os.getpid() and marker["host"] and marker["start_time"]
    assert jd.file("result.json") == jd.path / "result.json"
    with pytest.raises(ValueError):
        jd.file("../escape.txt")
    write_json_atomic(jd.file("result.json"), {"ok": True})
    jd.finalize("success")
    assert not jd.marker.exists()
    assert sorted(p.name for p in jd.path.iterdir()) == [".dm21-output", "result.json"]
    assert json.loads((jd.path / ".dm21-output").read_text())["kind"] == "run"


def test_jobdir_accepts_existing_empty_directory(tmp_path):
    (tmp_path / "out").mkdir()
    jd = JobDirectory(tmp_path / "out").prepare()
    assert jd.marker.exists()
    assert jd.abandon()
    assert (tmp_path / "out").is_dir() and not any((tmp_path / "out").iterdir())


def test_jobdir_refuses_non_empty_directory(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    write_json_atomic(out / "result.json", {"provenance": {"date": "2024-05-01T10:00:00+00:00"}})
    with pytest.raises(OutputExistsError) as info:
        JobDirectory(out).prepare()
    msg = str(info.value)
    assert "--overwrite" in msg and "2024-05-01T10:00:00+00:00" in msg and str(out) in msg
    assert "\n" not in msg
    assert info.value.exit_status == 5
    assert (out / "result.json").exists()


def test_jobdir_names_the_date_of_a_failed_operation(tmp_path):
    """A run that did not converge left a FailedOperation: its date is under extras.dm21cli."""
    out = tmp_path / "out"
    out.mkdir()
    record = full_record(converged=False)
    write_json_atomic(out / "result.json", to_qcschema(record))
    with pytest.raises(OutputExistsError) as info:
        JobDirectory(out).prepare()
    assert f"results (from {record['provenance']['date']})" in str(info.value)


def test_jobdir_message_for_directory_without_result(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("x")
    with pytest.raises(OutputExistsError, match=r"holds files \(no result.json\); use --overwrite"):
        JobDirectory(tmp_path / "out").prepare()


def test_jobdir_refuses_file_in_place_of_directory(tmp_path):
    """A file where the folder should be is exit 8 (README's table), not 5."""
    (tmp_path / "out").write_text("x")
    with pytest.raises(OutputLocationError, match="exists and is not a directory") as info:
        JobDirectory(tmp_path / "out", overwrite=True).prepare()
    assert info.value.exit_status == 8
    assert (tmp_path / "out").read_text() == "x"


def test_jobdir_overwrite_keeps_old_until_finalize(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.json").write_text('{"old": true}')
    (out / ".dm21-output").write_text("{}")
    jd = JobDirectory(out, overwrite=True).prepare()
    # new directory holds only the markers; old results moved aside, intact
    assert sorted(p.name for p in out.iterdir()) == [".dm21-output", ".running"]
    assert jd.old_path is not None and jd.old_path.parent == tmp_path
    assert jd.old_path.name.startswith(".out.old-")
    assert (jd.old_path / "result.json").read_text() == '{"old": true}'
    write_json_atomic(jd.file("result.json"), {"new": True})
    old = jd.old_path
    jd.finalize("success")
    assert not old.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert json.loads((out / "result.json").read_text()) == {"new": True}


def test_jobdir_abandon_restores_overwritten_results(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.txt").write_text("old")
    (out / ".dm21-output").write_text("{}")
    jd = JobDirectory(out, overwrite=True).prepare()
    assert jd.abandon()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (out / "summary.txt").read_text() == "old"


def test_jobdir_abandon_removes_only_empty_directory(tmp_path):
    jd = JobDirectory(tmp_path / "a").prepare()
    assert jd.abandon()
    assert not (tmp_path / "a").exists()

    jd = JobDirectory(tmp_path / "b").prepare()
    write_text_atomic(jd.file("dm21.log"), "started\n")
    assert not jd.abandon()
    assert (tmp_path / "b" / "dm21.log").exists()
    assert jd.marker.exists()  # the run is visibly unfinished


def test_jobdir_refuses_directory_in_use(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    # a live process (our parent) on this host holds the directory
    import socket

    (out / ".running").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(),
                                              "start_time": "2024-01-01T00:00:00"}))
    with pytest.raises(OutputExistsError, match="in use"):
        JobDirectory(out, overwrite=True).prepare()
    assert (out / ".running").exists()


def test_jobdir_stale_marker_reports_unfinished_run(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".running").write_text(json.dumps({"pid": 2 ** 22 + 12345, "host": "elsewhere",
                                              "start_time": "2024-01-02T03:04:05"}))
    with pytest.raises(OutputExistsError, match=r"unfinished run \(started 2024-01-02T03:04:05\)"):
        JobDirectory(out).prepare()
    jd = JobDirectory(out, overwrite=True).prepare()
    jd.finalize("success")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# ----------------------------------------------------------------------------
# issue 22: whose folder --overwrite replaces, what a name in it may be
# ----------------------------------------------------------------------------
def test_overwrite_refuses_a_folder_dm21_did_not_write(tmp_path):
    """It used to move any folder aside and delete it (a user's input file included)."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "h2.yaml").write_text("molecule: ...\n")
    with pytest.raises(OutputExistsError, match=r"holds files that dm21 did not write \(no "
                                                r"\.dm21-output marker\)") as info:
        JobDirectory(out, overwrite=True).prepare()
    assert info.value.exit_status == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    assert sorted(p.name for p in out.iterdir()) == ["h2.yaml"]


@pytest.mark.parametrize("older", ["result.json", ".running", "scan.definition.json"])
def test_overwrite_replaces_folders_of_older_versions(tmp_path, older):
    """Folders written before the marker existed are dm21's by what dm21 always wrote."""
    out = tmp_path / "out"
    out.mkdir()
    content = {"result.json": to_qcschema(full_record()),
               ".running": {"pid": 2 ** 22 + 1, "host": "elsewhere", "start_time": "2024"},
               "scan.definition.json": {"hash": "ab" * 32, "definition": {}}}[older]
    (out / older).write_text(json.dumps(content))
    jd = JobDirectory(out, overwrite=True).prepare()
    jd.finalize("success")
    assert sorted(p.name for p in out.iterdir()) == [".dm21-output"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("where", ["cwd", "above-cwd", "home", "input-folder", "above-input"])
def test_overwrite_never_replaces_protected_folders(tmp_path, monkeypatch, where):
    """Not even when they carry dm21's marker: the working directory, a folder above it,
    the home folder, the folder of an input file and the folders above it."""
    work = tmp_path / "work"
    inputs = tmp_path / "proj" / "inputs"
    for folder in (work, inputs, tmp_path / "home"):
        folder.mkdir(parents=True)
    for folder in (work, inputs, tmp_path / "proj", tmp_path / "home", tmp_path):
        (folder / ".dm21-output").write_text("{}")
    (inputs / "h2.yaml").write_text("x")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    target, what = {"cwd": (Path("."), "the working directory"),
                    "above-cwd": (tmp_path, "a folder above the working directory"),
                    "home": (tmp_path / "home", "the home folder"),
                    "input-folder": (inputs, "the folder of the input file"),
                    "above-input": (tmp_path / "proj", "a folder above the folder of the input")}[where]
    before = sorted(p.name for p in Path(target).iterdir())
    with pytest.raises(OutputExistsError, match=f"--overwrite never replaces {re.escape(str(target))}: "
                                                f"it is {what}"):
        JobDirectory(target, overwrite=True, inputs=[inputs / "h2.yaml"]).prepare()
    assert sorted(p.name for p in Path(target).iterdir()) == before
    assert Path.cwd() == work.resolve()


def test_every_output_folder_carries_the_marker(tmp_path):
    jd = JobDirectory(tmp_path / "a" / "b").prepare()
    assert is_dm21_output(jd.path)
    jd.finalize("success")
    assert is_dm21_output(jd.path)
    assert not is_dm21_output(tmp_path)


def test_a_folder_that_cannot_be_made_is_exit_8_and_leaves_nothing(tmp_path):
    """A 300-character name ended with exit 1 (an unclassified OSError); the folders made
    on the way are removed again."""
    target = tmp_path / "new" / "deeper" / ("a" * 300)
    with pytest.raises(OutputLocationError, match="File name too long") as info:
        JobDirectory(target).prepare()
    assert info.value.exit_status == 8
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("errno_, status", [(errno.ENAMETOOLONG, 8), (errno.ENOENT, 8),
                                            (errno.EISDIR, 8), (errno.EACCES, 8),
                                            (errno.ENOSPC, 6), (errno.EDQUOT, 6)])
def test_output_errors_are_6_or_8_never_unclassified(errno_, status):
    exc = OSError(errno_, os.strerror(errno_), "out/x")
    error = output_error(exc, "out/x")
    assert error.exit_status == status and "out/x" in str(error)
    assert os.strerror(errno_) in str(error)


def _blocker(kind: str, path: Path) -> None:
    if kind == "symlink":
        path.symlink_to(path.parent / "elsewhere")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()


WRITERS = {
    "text": lambda p: write_text_atomic(p, "x\n"),
    "json": lambda p: write_json_atomic(p, {"x": 1}),
    "several": lambda p: write_text_files_atomic([(p, "x\n")]),
    "path": lambda p: atomic_path(p).__enter__(),
    "log": lambda p: open_log(p, append=True),
}


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_no_output_file_is_written_through_a_link_into_a_fifo_or_over_a_folder(tmp_path, writer,
                                                                               kind):
    """scan.log was appended to through a symbolic link and hung on a FIFO; now every
    writer refuses the name, exit 8, naming it and what it is (the FIFO never opened)."""
    target = tmp_path / "scan.log"
    _blocker(kind, target)
    name = {"symlink": "a symbolic link", "fifo": "a FIFO", "directory": "a directory"}[kind]
    with pytest.raises(OutputLocationError, match=f"writing {re.escape(str(target))} failed: it "
                                                  f"is {name}, not a regular file") as info:
        WRITERS[writer](target)
    assert info.value.exit_status == 8
    assert not (tmp_path / "elsewhere").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.log"]


def test_the_log_refuses_a_fifo_put_in_place_after_the_check(tmp_path, monkeypatch):
    """The name is checked first, then opened with O_NOFOLLOW | O_NONBLOCK: a FIFO that
    appears in between fails at once (no reader: ENXIO), never blocks."""
    from dm21cli.io.outputs import atomic

    target = tmp_path / "dm21.log"
    monkeypatch.setattr(atomic, "check_output_name", lambda path: os.mkfifo(path))
    with pytest.raises(OutputLocationError):
        open_log(target)


def test_read_json_object_reads_regular_files_only(tmp_path):
    """scan.definition.json holding [] ended a scan with exit 1; a FIFO in place of a
    result.json would block its reader."""
    (tmp_path / "list.json").write_text("[]")
    (tmp_path / "ok.json").write_text('{"a": 1}')
    (tmp_path / "bad.json").write_text("{")
    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "link.json").symlink_to(tmp_path / "ok.json")
    assert read_json_object(tmp_path / "ok.json") == {"a": 1}
    for name in ("list.json", "bad.json", "fifo.json", "link.json", "missing.json"):
        assert read_json_object(tmp_path / name) is None, name


def test_text_utf8_cannot_hold_is_written_as_its_escape(tmp_path):
    """A path that is not valid UTF-8 (lone surrogates in Python) made result.json
    unwritable after the SCF; JSON now holds the escape and reads back the same name."""
    name = os.fsdecode(b"out\xff")
    write_json_atomic(tmp_path / "r.json", {"output_dir": name})
    write_text_atomic(tmp_path / "s.txt", f"results in {name}\n")
    assert json.loads((tmp_path / "r.json").read_text(encoding="utf-8")) == {"output_dir": name}
    assert (tmp_path / "s.txt").read_text(encoding="utf-8") == "results in out\\udcff\n"


# ----------------------------------------------------------------------------
# the .running marker: a lock
# ----------------------------------------------------------------------------
HOLD = """
import sys, time
from pathlib import Path
from dm21cli.io.outputs.jobdir import RunningMarker
RunningMarker(Path(sys.argv[1])).claim()
print("held", flush=True)
time.sleep(60)
"""


def test_the_running_marker_is_held_by_a_lock_until_its_process_ends(tmp_path):
    """Another process holding the folder is refused (exit 5); once that process is
    killed (SIGKILL: its marker stays), the folder can be claimed again."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        marker = RunningMarker(tmp_path)
        assert marker.holder()["pid"] == holder.pid
        with pytest.raises(OutputExistsError, match=rf"is in use by a running job \(pid "
                                                    rf"{holder.pid} on "):
            marker.claim()
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / ".running").exists()  # stale
    marker = RunningMarker(tmp_path)
    assert marker.holder() is None
    marker.claim()
    assert json.loads((tmp_path / ".running").read_text())["pid"] == os.getpid()
    marker.release()
    assert not (tmp_path / ".running").exists()


# ----------------------------------------------------------------------------
# cube files
# ----------------------------------------------------------------------------
def cube_integral(path: Path) -> float:
    _, _, axes, _, _, values = read_cube(path)
    voxel = abs(np.linalg.det(axes))
    return float(values.sum() * voxel)


@pytest.fixture(scope="module")
def water_rhf():
    from pyscf import gto, scf

    mol = gto.M(atom=WATER, basis="sto-3g", verbose=0)
    return scf.RHF(mol).run()


@pytest.fixture(scope="module")
def oh_uhf():
    from pyscf import gto, scf

    mol = gto.M(atom="O 0 0 0; H 0 0 0.97", basis="sto-3g", spin=1, verbose=0)
    return scf.UHF(mol).run()


def test_density_cube_integrates_to_electron_count(tmp_path):
    # Only light atoms: a 0.2 Angstrom grid cannot resolve 1s cores of O etc.
    # (see test_density_cube_values_match_pyscf_on_header_grid).
    from pyscf import dft, gto

    mol = gto.M(atom="H 0 0 0; H 0 0 0.74", basis="6-31g", verbose=0)
    mf = dft.RKS(mol, xc="b3lyp").run()
    path = write_cube(tmp_path / "density.cube", mol, "density", dm=mf.make_rdm1(),
                      spacing_bohr=SPACING_BOHR, margin_bohr=MARGIN_BOHR,
                      comment="DM21 total density, e/bohr^3")
    assert path == tmp_path / "density.cube"
    comment, origin, axes, shape, atoms, _ = read_cube(path)
    assert comment == "DM21 total density, e/bohr^3"
    assert cube_integral(path) == pytest.approx(mol.nelectron, rel=0.01)
    # box = atoms +- margin, in bohr; spacing at most the requested one
    assert origin[2] == pytest.approx(-MARGIN_BOHR, abs=1e-5)
    assert np.all(np.diag(axes) <= SPACING_BOHR + 1e-6)
    assert [a[0] for a in atoms] == ["1", "1"]
    assert _leftovers(tmp_path) == []


def test_density_cube_values_match_pyscf_on_header_grid(tmp_path, water_rhf):
    from pyscf.dft import numint

    mol = water_rhf.mol
    dm = water_rhf.make_rdm1()
    path = write_cube(tmp_path / "d.cube", mol, "density", dm=dm,
                      spacing_bohr=SPACING_BOHR, margin_bohr=MARGIN_BOHR)
    comment, origin, axes, shape, atoms, values = read_cube(path)
    assert "density" in comment
    # atoms are in bohr
    coords = np.array([[float(x) for x in a[2:5]] for a in atoms])
    assert np.allclose(coords, mol.atom_coords(), atol=1e-5)
    # pick a few grid points, rebuild their coordinates from the header
    rng = np.random.default_rng(0)
    idx = rng.integers(0, shape, size=(50, 3))
    idx[0] = np.array(shape) // 2
    pts = origin + idx @ axes
    ref = numint.eval_rho(mol, mol.eval_gto("GTOval", pts), dm)
    got = values[idx[:, 0], idx[:, 1], idx[:, 2]]
    assert np.allclose(got, ref, rtol=1e-4, atol=1e-9)
    # No electron-count check here: at 0.2 Angstrom the O 1s density (exponents
    # ~130 bohr^-2) is undersampled, and sum * voxel gives anything from ~8.8 to
    # ~18 electrons depending on where the grid falls relative to the nucleus.


def test_spin_density_cube_of_doublet_integrates_to_2S(tmp_path, oh_uhf):
    dma, dmb = oh_uhf.make_rdm1()
    path = write_cube(tmp_path / "spin.cube", oh_uhf.mol, "spin_density", dm=dma - dmb,
                      spacing_bohr=SPACING_BOHR, margin_bohr=MARGIN_BOHR)
    assert cube_integral(path) == pytest.approx(1.0, rel=0.01)
    assert "spin density" in read_cube(path)[0]


def test_orbital_cube_is_normalised_and_named(tmp_path, water_rhf):
    mf = water_rhf
    homo = int(np.count_nonzero(mf.mo_occ > 0)) - 1
    label = orbital_label(homo, mf.mo_occ, "alpha")
    assert label == "HOMO, alpha"
    assert orbital_label(homo - 1, mf.mo_occ) == "HOMO-1"
    assert orbital_label(homo + 2, mf.mo_occ) == "LUMO+1"
    comment = f"orbital {homo + 1} ({label}), energy {mf.mo_energy[homo]:.4f} Ha"
    path = write_cube(tmp_path / "homo.cube", mf.mol, "orbital", coeff=mf.mo_coeff[:, homo],
                      spacing_bohr=SPACING_BOHR, margin_bohr=MARGIN_BOHR, comment=comment)
    first, *_, values = read_cube(path)
    assert first == comment and "HOMO" in first
    voxel = abs(np.linalg.det(read_cube(path)[2]))
    assert float((values ** 2).sum() * voxel) == pytest.approx(1.0, rel=0.02)


def test_unrestricted_orbital_cubes_name_their_spin_once(oh_uhf):
    """Line 1 of an ``orbital:Na``/``Nb`` cube of an open shell: the functional, the orbital,
    its label and spin (once: it said "(HOMO, alpha, alpha)"), energy and occupation."""
    import types

    from dm21cli.jobs.result import _cube_jobs

    spec = types.SimpleNamespace(functional="DM21", outputs=types.SimpleNamespace(
        cube_requests=lambda: ["orbital:5a", "orbital:4b", "homo"]))
    comments = {name: comment for name, _, _, comment in _cube_jobs(spec, oh_uhf)}
    assert comments["orbital_5_alpha.cube"].startswith("DM21 orbital 5 (HOMO, alpha), energy ")
    assert comments["orbital_5_alpha.cube"].endswith(" Ha, occupation 1")
    assert comments["orbital_4_beta.cube"].startswith("DM21 orbital 4 (HOMO, beta), energy ")
    assert comments["homo_alpha.cube"].startswith("DM21 orbital 5 (HOMO, alpha), energy ")


def test_cube_argument_errors(tmp_path, water_rhf):
    mol = water_rhf.mol
    with pytest.raises(ValueError):
        write_cube(tmp_path / "x.cube", mol, "potential", dm=water_rhf.make_rdm1(),
                   spacing_bohr=0.5, margin_bohr=1.0)
    with pytest.raises(ValueError):
        write_cube(tmp_path / "x.cube", mol, "orbital", spacing_bohr=0.5, margin_bohr=1.0)
    with pytest.raises(ValueError):
        write_cube(tmp_path / "x.cube", mol, "density", dm=np.zeros((2, 7, 7)),
                   spacing_bohr=0.5, margin_bohr=1.0)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------
# molden files
# ----------------------------------------------------------------------------
def test_molden_restricted_round_trip(tmp_path, water_rhf):
    from pyscf.tools import molden

    mf = water_rhf
    path = write_molden(tmp_path / "orbitals.molden", mf.mol, mf.mo_energy, mf.mo_coeff, mf.mo_occ)
    mol2, e, c, occ, _, spins = molden.load(str(path))
    assert np.shape(c) == mf.mo_coeff.shape
    assert np.allclose(e, mf.mo_energy, atol=1e-8)
    assert np.allclose(occ, mf.mo_occ)
    assert mol2.natm == 3 and np.allclose(mol2.atom_coords(), mf.mol.atom_coords(), atol=1e-8)
    # orbitals are the same functions: overlap in the read-back basis is the identity
    s = mol2.intor("int1e_ovlp")
    assert np.allclose(np.asarray(c).T @ s @ np.asarray(c), np.eye(mf.mo_coeff.shape[1]), atol=1e-5)


def test_molden_unrestricted_round_trip(tmp_path, oh_uhf):
    from pyscf.tools import molden

    mf = oh_uhf
    path = write_molden(tmp_path / "orbitals.molden", mf.mol, mf.mo_energy, mf.mo_coeff, mf.mo_occ)
    text = path.read_text()
    assert text.count("[MO]") == 1 and "Spin= Alpha" in text and "Spin= Beta" in text
    mol2, e, c, occ, _, spins = molden.load(str(path))
    assert len(e) == 2 and len(c) == 2
    for s in (0, 1):
        assert np.shape(c[s]) == mf.mo_coeff[s].shape
        assert np.allclose(e[s], mf.mo_energy[s], atol=1e-8)
        assert np.allclose(occ[s], mf.mo_occ[s])
    assert mol2.spin == 1


def test_molden_bad_spin_arguments(tmp_path, oh_uhf):
    mf = oh_uhf
    # a lone Beta set cannot be read back by pyscf.tools.molden.load
    with pytest.raises(ValueError):
        write_molden(tmp_path / "b.molden", mf.mol, mf.mo_energy[1], mf.mo_coeff[1],
                     mf.mo_occ[1], spin="Beta")
    with pytest.raises(ValueError):
        write_molden(tmp_path / "c.molden", mf.mol, mf.mo_energy, mf.mo_coeff, mf.mo_occ,
                     spin="Alpha")
    assert not (tmp_path / "c.molden").exists()


# ----------------------------------------------------------------------------
# summaries
# ----------------------------------------------------------------------------
def full_result(converged: bool = True, unrestricted: bool = False) -> dict:
    """A run's result.json document (QCSchema: AtomicResult, or FailedOperation if not converged)."""
    return to_qcschema(full_record(converged, unrestricted))


def full_record(converged: bool = True, unrestricted: bool = False) -> dict:
    """A run's record in dm21cli's own layout (what jobs.result builds)."""
    e = -75.3124567891
    if unrestricted:
        mo_e = [[-20.1, -1.2, -0.5, -0.3, 0.4], [-20.0, -1.1, -0.45, 0.1, 0.5]]
        mo_o = [[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]]
    else:
        mo_e = [-20.1, -1.2, -0.5, -0.3, 0.4]
        mo_o = [2, 2, 2, 2, 0]
    return {
        "success": converged, "converged": converged, "driver": "energy",
        "status": "success" if converged else "not-converged",
        "model": {"method": "DM21", "basis": "def2-svp"},
        "molecule": {"symbols": ["O", "H", "H"],
                     "geometry_bohr": [[0, 0, 0.2217], [0, 1.4309, -0.8867], [0, -1.4309, -0.8867]],
                     "molecular_charge": 0, "molecular_multiplicity": 2 if unrestricted else 1},
        "return_energy": e,
        "properties": {
            "return_energy": e, "scf_total_energy": e, "nuclear_repulsion_energy": 9.1,
            "scf_one_electron_energy": -120.0, "scf_coulomb_energy": 45.0,
            "scf_xc_energy": -9.4, "dispersion_energy": None, "scf_iterations": 7,
            "scf_attempts": [{"strategy": "default", "converged": converged, "cycles": 50,
                              "energy": e},
                             {"strategy": "level_shift", "converged": converged, "cycles": 7,
                              "energy": e}],
            "mo_energies_hartree": mo_e, "mo_occupations": mo_o,
            "homo_energy_hartree": -0.3, "lumo_energy_hartree": 0.1 if unrestricted else 0.4,
            "homo_lumo_gap_hartree": 0.4 if unrestricted else 0.7,
            "mulliken_charges": [-0.4, 0.2, 0.2], "dipole_moment_au": [0.0, 0.0, 1.9 / AU_DEBYE],
            "dipole_moment_debye": [0.0, 0.0, 1.9],
            "dipole_moment_total_debye": 1.9,
            "s_squared": 0.7532 if unrestricted else None,
            "spin_multiplicity_computed": 2.0016 if unrestricted else None,
            "restricted": not unrestricted, "nao": 24, "grid_points": 23456},
        "timings_s": {"total": 12.5, "warm_start": 1.0, "scf": 10.0, "outputs": 0.5},
        "files": {"result": "result.json", "summary": "summary.txt", "molden": "orbitals.molden",
                  "cubes": {"density": "density.cube"}, "chkfile": "scf.chk",
                  "input": "input.resolved.yaml", "log": "dm21.log"},
        "provenance": {"creator": "dm21cli", "version": "0.1.0", "routine": "dm21cli.jobs.run.run_job",
                       "pyscf": "2.14.0", "numpy": "2.1", "tensorflow": None, "python": "3.11",
                       "hostname": "host", "date": "2024-05-01T10:00:00+00:00",
                       "checkpoint": {"variant": "DM21", "path": "/w/DM21",
                                      "sha256": {"variables/variables.data-00000-of-00001": "ab" * 32}},
                       "threads": 2, "memory_mb": 4000},
        "input": {"molecule": "water"},
        "error": None if converged else {"error_type": "convergence_error",
                                         "error_message": "SCF not converged"},
    }


def test_render_summary_full():
    text = render_summary(full_result())
    assert "-75.3124567891" in text
    assert f"{-75.3124567891 * HARTREE_EV:.6f}" in text
    assert "NOT CONVERGED" not in text and "yes" in text
    assert "H2O" in text and "def2-svp" in text
    assert f"{0.7 * HARTREE_EV:.4f}" in text  # gap in eV
    assert "-0.4000" in text and "1.9000" in text
    assert "level_shift" in text and "Attempts" in text
    assert "2024-05-01T10:00:00+00:00" in text and "ab" * 32 in text
    assert "Dispersion" not in text  # None values are left out
    assert "0.117319" in text  # O z coordinate in Angstrom


def test_render_summary_not_converged_and_unrestricted():
    text = render_summary(full_result(converged=False, unrestricted=True))
    assert "NOT CONVERGED" in text and "FAILED" in text
    assert "<S^2>" in text and "0.753200" in text and "0.750000" in text
    assert "HOMO (alpha)" in text and "LUMO (beta)" in text


@pytest.mark.parametrize("result", [
    {},
    {"return_result": None},
    {"success": False, "input_data": None, "extras": {"dm21cli": {"converged": False}},
     "error": None},
    {"success": False, "error": {"error_type": "unknown_error", "error_message": "boom"},
     "input_data": {"molecule": {"symbols": ["H"]}},
     "extras": {"dm21cli": {"properties": {"mulliken_charges": None, "scf_attempts": [None]}}}},
])
def test_render_summary_minimal(result):
    text = render_summary(result)
    assert text.startswith("DM21 calculation summary")
    if (result.get("extras") or {}).get("dm21cli", {}).get("converged") is False:
        assert "NOT CONVERGED" in text
    if result.get("error"):
        assert "unknown_error" in text and "boom" in text


def test_render_table():
    from rich.console import Console

    for result in (full_result(), full_result(False, True), {}):
        console = Console(record=True, width=100, color_system=None)
        console.print(render_table(result))
        out = console.export_text()
        assert "total energy" in out
    console = Console(record=True, width=100, color_system=None)
    console.print(render_table(full_result(converged=False)))
    out = console.export_text()
    assert "NO" in out and "-75.3124567891" in out
