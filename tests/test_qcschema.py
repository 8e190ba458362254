"""QCSchema (issue 13): result.json as AtomicResult / FailedOperation, ``dm21 run input.json``
with an AtomicInput, and the QCEngine harness ``dm21``.

Every result.json the suite writes is validated with qcelemental after each test
(conftest.py, `_result_json_is_qcschema`); here: what the mapping keeps, the
AtomicInput's errors, and the harness run in this process through
``qcengine.compute`` with a TaskConfig.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import dm21lib
import numpy as np
import pytest
from conftest import invalid_result_json
from test_cli_run import _env, _show, dm21, write_job

from dm21cli.io.outputs.qcschema import STANDARD_PROPERTIES, fields, to_qcschema

BOHR_ANGSTROM = 0.529177210903
#: H2 at 0.74 Angstrom, as the job files of test_cli_run write it, in bohr
H2_GEOMETRY_BOHR = [0.0, 0.0, 0.0, 0.0, 0.0, 0.74 / BOHR_ANGSTROM]
#: DM21/STO-3G on a coarse grid: a second per run
H2_INPUT = {
    "schema_name": "qcschema_input", "schema_version": 1,
    "molecule": {"symbols": ["H", "H"], "geometry": H2_GEOMETRY_BOHR},
    "driver": "energy",
    "model": {"method": "DM21", "basis": "sto-3g"},
    "keywords": {"grid_level": 1, "molden": False},
}


def atomic_input(**changes) -> dict:
    return json.loads(json.dumps({**H2_INPUT, **changes}))


@pytest.fixture(scope="module")
def h2_runs(tmp_path_factory, checkpoints_dir):
    """The same DM21 job through `dm21 run` (its library calls, in this process) from a YAML
    job file and from an AtomicInput."""
    cwd = tmp_path_factory.mktemp("qcschema")
    write_job(cwd, "h2yaml", basis="sto-3g", extra="scf: {grid_level: 1}\noutputs: {molden: false}\n")
    document = atomic_input(id="h2-run-1", extras={"campaign": "issue-13"})
    (cwd / "h2json.json").write_text(json.dumps(document, indent=2))
    xdg = tmp_path_factory.mktemp("xdg")
    runs = {}
    for name in ("h2yaml.yaml", "h2json.json"):
        done = dm21lib.run(name, cwd, checkpoints=checkpoints_dir, xdg_root=xdg)
        assert done.converged, done.progress.text
        stem = name.split(".")[0]
        runs[stem] = json.loads((cwd / "outputs" / stem / "result.json").read_text())
    return runs


#: driver gradient on a tight float64 SCF, so that an independent SCF reaches the same density
GRADIENT_KEYWORDS = {"grid_level": 1, "molden": False, "precision": "float64", "conv_tol": 1e-10}


@pytest.fixture(scope="module")
def h2_gradient(tmp_path_factory, checkpoints_dir):
    """`dm21 run h2grad.json` (its library calls, in this process) with driver gradient: the
    result.json and the input's path."""
    cwd = tmp_path_factory.mktemp("qcschema-gradient")
    path = cwd / "h2grad.json"
    path.write_text(json.dumps(atomic_input(driver="gradient", keywords=GRADIENT_KEYWORDS),
                               indent=2))
    done = dm21lib.run(path.name, cwd, checkpoints=checkpoints_dir,
                       xdg_root=tmp_path_factory.mktemp("xdg"))
    assert done.converged, done.progress.text
    out = cwd / "outputs" / "h2grad"
    return {"dm21 run": json.loads((out / "result.json").read_text()), "path": path,
            "summary": (out / "summary.txt").read_text()}


# ----------------------------------------------------------------------------
# result.json
# ----------------------------------------------------------------------------
def test_result_json_is_a_qcelemental_atomic_result(h2_runs):
    from qcelemental.models import AtomicResult

    for document in h2_runs.values():
        result = AtomicResult(**document)  # the issue's own check
        assert result.success and result.driver == "energy"
        assert result.return_result == result.properties.return_energy
        assert result.properties.scf_iterations >= 1
        assert result.properties.calcinfo_nbasis == 2 and result.properties.calcinfo_natom == 2
        assert result.provenance.creator == "dm21cli"
        assert result.molecule.geometry.ravel() == pytest.approx(H2_GEOMETRY_BOHR, abs=1e-8)


def test_atomic_input_gives_the_yaml_jobs_energy(h2_runs):
    """The AtomicInput maps onto the same job: identical energy, settings and keywords."""
    from_yaml, from_json = h2_runs["h2yaml"], h2_runs["h2json"]
    assert from_json["return_result"] == pytest.approx(from_yaml["return_result"], abs=1e-10)
    assert from_json["keywords"] == from_yaml["keywords"]
    assert from_json["keywords"]["grid_level"] == 1
    # id and extras of the AtomicInput are carried into the result
    assert from_json["id"] == "h2-run-1"
    assert from_json["extras"]["campaign"] == "issue-13"
    assert from_json["extras"]["dm21cli"]["input"]["molecule"]["units"] == "bohr"


def test_gradient_driver_returns_the_library_gradient(h2_gradient, checkpoints_dir):
    """driver gradient: return_result is dE/dR (atoms x 3, hartree/bohr), the gradient that
    `dm21cli.scf.grad` gives for an SCF of the same job converged on its own (PySCF's DIIS
    from its default guess, no warm start, no escalation): 1e-7 hartree/bohr (both SCFs
    converged to 1e-10 hartree in float64; measured 6e-16 apart)."""
    from qcelemental.models import AtomicResult

    from dm21cli.io.inputs.load import load_job
    from dm21cli.jobs.build import build_grids, build_molecule, build_scf, load_network
    from dm21cli.scf import grad as dm21_grad

    document = h2_gradient["dm21 run"]
    result = AtomicResult(**document)
    assert result.success and result.driver == "gradient"
    gradient = np.asarray(document["return_result"])
    assert gradient.shape == (2, 3)
    assert document["properties"]["return_gradient"] == document["return_result"]
    assert np.asarray(result.return_result).reshape(2, 3) == pytest.approx(gradient, abs=0)
    assert math.isfinite(result.properties.return_energy)

    spec = load_job(h2_gradient["path"])
    assert spec.job.task == "gradient"
    mol = build_molecule(spec)
    mf = build_scf(mol, spec, build_grids(mol, spec), load_network(spec, checkpoints_dir))
    mf.conv_tol = 1e-10
    mf.kernel()
    assert mf.converged
    library = dm21_grad.Gradients(mf).kernel()  # grid response on, as the job's
    assert abs(library[1, 2]) > 1e-2  # H2 at 0.74 A is not DM21/STO-3G's minimum
    np.testing.assert_allclose(gradient, library, rtol=0, atol=1e-7)
    np.testing.assert_allclose(gradient.sum(axis=0), 0, atol=1e-8)  # translation invariance
    assert document["properties"]["return_energy"] == pytest.approx(mf.e_tot, abs=1e-8)

    details = document["extras"]["dm21cli"]["properties"]
    assert details["gradient_max_hartree_per_bohr"] == pytest.approx(np.abs(gradient).max(),
                                                                      abs=1e-12)
    assert details["gradient_grid_response"] is True
    assert details["dispersion_gradient_hartree_per_bohr"] is None
    assert document["extras"]["dm21cli"]["timings_s"]["gradient"] > 0
    summary = h2_gradient["summary"]
    assert "Nuclear gradient dE/dR (Hartree/bohr)" in summary
    assert f"{gradient[1, 2]:14.8f}" in summary
    back = fields(document)
    assert back["driver"] == "gradient"
    assert back["properties"]["gradient_hartree_per_bohr"] == gradient.tolist()


def test_yaml_job_task_gradient_with_dispersion(tmp_path):
    """``job: {task: gradient}`` in a YAML job: result.json is a gradient AtomicResult whose
    gradient is the SCF's plus D3(BJ)'s (the parts under extras.dm21cli.properties; 1e-12)."""
    (tmp_path / "w.yaml").write_text(textwrap.dedent("""\
        job: {task: gradient}
        molecule:
          xyz: |
            O 0.0 0.0 0.1173
            H 0.0 0.7572 -0.4692
            H 0.0 -0.7572 -0.4692
        basis: sto-3g
        functional: b3lyp
        dispersion: d3bj
        scf: {grid_level: 1}
        outputs: {molden: false}
        """))
    done = dm21lib.run("w.yaml", tmp_path)
    assert done.converged, done.progress.text
    document = done.result
    assert document["driver"] == "gradient"
    assert document == json.loads((tmp_path / "outputs" / "w" / "result.json").read_text())
    gradient = np.asarray(document["return_result"])
    details = document["extras"]["dm21cli"]["properties"]
    parts = (np.asarray(details["scf_gradient_hartree_per_bohr"])
             + np.asarray(details["dispersion_gradient_hartree_per_bohr"]))
    assert gradient.shape == (3, 3)
    assert np.abs(details["dispersion_gradient_hartree_per_bohr"]).max() > 0
    np.testing.assert_allclose(gradient, parts, rtol=0, atol=1e-12)
    summary = (tmp_path / "outputs" / "w" / "summary.txt").read_text()
    assert "Nuclear gradient dE/dR (Hartree/bohr)" in summary


def test_energy_runs_carry_no_gradient(h2_runs):
    for document in h2_runs.values():
        assert "return_gradient" not in document["properties"]
        assert "gradient_max_hartree_per_bohr" not in document["extras"]["dm21cli"]["properties"]
        assert document["extras"]["dm21cli"]["input"]["job"]["task"] == "energy"


def test_fields_read_back_what_the_record_held():
    """to_qcschema and fields are inverse for every field of dm21cli's layout."""
    from test_outputs import full_record

    for converged in (True, False):
        record = full_record(converged=converged, unrestricted=not converged)
        back = fields(to_qcschema(record))
        for key in ("success", "converged", "status", "driver", "timings_s", "files", "input",
                    "return_energy"):
            assert back[key] == record[key], key
        assert back["model"] == record["model"]
        assert back["molecule"]["geometry_bohr"] == record["molecule"]["geometry_bohr"]
        assert back["provenance"] == record["provenance"]
        for name, value in record["properties"].items():
            assert back["properties"][name] == value, name
        assert back["error"] == (None if converged else {**record["error"], "extras": None})


#: the manual's page on the output directory and result.json (it was README's section)
OUTPUTS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "reference" / "outputs.md"


def test_where_each_property_moved_is_documented():
    """The manual's outputs page names every standard property of `STANDARD_PROPERTIES`."""
    page = OUTPUTS_PAGE.read_text(encoding="utf-8")
    for name, field in STANDARD_PROPERTIES.items():
        assert f"`properties.{field}`" in page, field


def _where_each_field_moved() -> str:
    """The manual's table 'Where each field moved' (docs/reference/outputs.md)."""
    page = OUTPUTS_PAGE.read_text(encoding="utf-8")
    heading = re.search(r"^#+ Where each field moved$", page, re.M)
    assert heading, f"{OUTPUTS_PAGE} has no heading 'Where each field moved'"
    table = page[heading.start():]
    return table[:table.index("\n\n", table.index("| before"))]


def test_every_extras_property_is_in_the_where_each_field_moved_table(h2_runs, h2_gradient):
    """The manual's table 'Where each field moved' names each property a run keeps under
    extras.dm21cli.properties (energy and gradient runs)."""
    table = _where_each_field_moved()
    for document in [*h2_runs.values(), h2_gradient["dm21 run"]]:
        for name in document["extras"]["dm21cli"]["properties"]:
            assert re.search(rf"[`.]{name}`", table), name


def test_the_result_json_check_catches_the_old_layout(tmp_path):
    """The suite's QCSchema check can fail: result.json as it was before issue 13."""
    old = {"schema_name": "dm21cli_result", "schema_version": 1, "success": True,
           "converged": True, "driver": "energy", "model": {"method": "DM21", "basis": "sto-3g"},
           "molecule": {"symbols": ["H", "H"], "geometry_bohr": [[0, 0, 0], [0, 0, 1.4]],
                        "molecular_charge": 0, "molecular_multiplicity": 1},
           "return_energy": -1.16, "properties": {"return_energy": -1.16}}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "result.json").write_text(json.dumps(old))
    problems = invalid_result_json(tmp_path)
    assert len(problems) == 1 and "geometry" in problems[0], problems


# ----------------------------------------------------------------------------
# dm21 run input.json: bad AtomicInputs
# ----------------------------------------------------------------------------
BAD_INPUTS = {
    # name: (changes to H2_INPUT, or a raw text; the JSON key whose line the error names, or
    # None; what the one line says after "dm21: error: h2.json:LINE: ")
    "unknown-keyword": ({"keywords": {"conv_tl": 1e-8}}, '"conv_tl"',
                        "keywords.conv_tl: unknown keyword 'conv_tl' (did you mean 'conv_tol'?)"),
    "keyword-value": ({"keywords": {"conv_tol": -1}}, '"conv_tol"',
                      "keywords.conv_tol: must be greater than 0, got -1"),
    "keyword-elsewhere": ({"keywords": {"basis": "def2-svp"}}, '"basis": "def2-svp"',
                          "keywords.basis: set this in model.basis, not in keywords"),
    "bad-method": ({"model": {"method": "no-such-xc", "basis": "sto-3g"}}, '"method"',
                   "model.method: unknown functional 'no-such-xc'"),
    "driver-properties": ({"driver": "properties"}, '"driver"',
                          "driver: 'properties' is not supported (dm21 computes: energy, "
                          "gradient, hessian)"),
    "driver-unknown": ({"driver": "forces"}, '"driver"',
                       "driver: unknown driver 'forces' (QCSchema drivers: energy, gradient, "
                       "hessian, properties)"),
    "task-keyword": ({"keywords": {"task": "gradient"}}, '"task"',
                     "keywords.task: set this in driver, not in keywords"),
    "ghost-atom": ({"molecule": {"symbols": ["H", "H"], "geometry": H2_GEOMETRY_BOHR,
                                 "real": [True, False]}}, '"real"',
                   "molecule.real: ghost atoms (real: false) are not supported"),
    "geometry-length": ({"molecule": {"symbols": ["H", "H"], "geometry": [0, 0, 0, 0, 0]}},
                        '"geometry"', "molecule.geometry: 5 coordinates for 2 atoms (expected 6"),
    # issue 22: ragged rows were flattened and run
    "geometry-ragged": ({"molecule": {"symbols": ["H", "H"],
                                      "geometry": [[0, 0, 0, 0], [0, H2_GEOMETRY_BOHR[5]]]}},
                        '[\n        0,\n        0,\n        0,\n        0',
                        "molecule.geometry[0]: 4 numbers in this row (expected 3: x, y, z in bohr)"),
    "unknown-element": ({"molecule": {"symbols": ["H", "Xx"], "geometry": H2_GEOMETRY_BOHR}},
                        '"geometry"', "molecule.geometry: atom 2: unknown element 'Xx'"),
    "multiplicity": ({"molecule": {"symbols": ["H", "H"], "geometry": H2_GEOMETRY_BOHR,
                                   "molecular_multiplicity": 2}}, '"molecular_multiplicity"',
                     "molecule.molecular_multiplicity: multiplicity 2"),
    "version-2": ({"specification": {}}, '"specification"',
                  "specification: this is a QCSchema version 2 AtomicInput"),
    "not-json": ('{"molecule": {"symbols": ["H"],\n  "geometry": [0, 0, 0]},,}', '},,',
                 "invalid JSON: Expecting property name enclosed in double quotes"),
    "duplicate-key": ('{"driver": "energy", "driver": "energy"}', None, "duplicate key 'driver'"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_atomic_input_exits_2_one_line_no_output(tmp_path, case):
    changes, key, needle = BAD_INPUTS[case]
    text = changes if isinstance(changes, str) else json.dumps(atomic_input(**changes), indent=2)
    (tmp_path / "h2.json").write_text(text)
    proc = dm21(["run", "h2.json"], tmp_path, _env(None))
    assert proc.returncode == 2, _show(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, _show(proc)
    where = "h2.json: " if key is None else f"h2.json:{text[:text.index(key)].count(chr(10)) + 1}: "
    assert lines[0].startswith("dm21: error: " + where + needle), (lines[0], where + needle)
    assert proc.stdout == "" and not (tmp_path / "outputs").exists()


def test_validate_lists_every_problem_of_an_atomic_input(tmp_path):
    (tmp_path / "h2.json").write_text(json.dumps(atomic_input(
        driver="properties", keywords={"conv_tl": 1, "grid_level": 99}), indent=2))
    proc = dm21(["validate", "h2.json"], tmp_path, _env(None))
    assert proc.returncode == 2, _show(proc)
    text = proc.stderr
    assert "driver: 'properties'" in text and "keywords.conv_tl" in text, text


def _h2_molecule(**changes) -> dict:
    return {"symbols": ["H", "H"], "geometry": H2_GEOMETRY_BOHR, **changes}


#: issue 22: an AtomicInput's molecule arrays of the wrong shape, each run before (flattened,
#: or not used): (molecule changes, the field named, what the message says)
BAD_MOLECULE_ARRAYS = {
    "geometry-ragged": ({"geometry": [[0, 0, 0, 0], [0, 1.4]]}, "molecule.geometry[0]",
                        "4 numbers in this row (expected 3: x, y, z in bohr)"),
    "geometry-short-row": ({"geometry": [[0, 0], [0, 0, 0, 1.4]]}, "molecule.geometry[0]",
                           "2 numbers in this row (expected 3"),
    "geometry-rows-for-3-atoms": ({"geometry": [[0, 0, 0], [0, 0, 1.4], [0, 0, 2.8]]},
                                  "molecule.geometry", "3 rows for 2 atoms"),
    "geometry-mixed": ({"geometry": [0, 0, 0, [0, 0, 1.4]]}, "molecule.geometry[3]",
                       "mixes numbers and rows (expected 6 numbers, or 2 rows [x, y, z]"),
    "geometry-not-finite": ({"geometry": [0, 0, 0, 0, 0, "1e400"]}, "molecule.geometry[5]",
                            "expected finite numbers (bohr), got inf"),
    "masses": ({"masses": [1.008]}, "molecule.masses",
               "expected one entry per atom (2), got 1 entry"),
    "masses-negative": ({"masses": [1.008, -1.0]}, "molecule.masses[1]",
                        "expected a mass in u (a number > 0), got -1.0"),
    "real": ({"real": [True, True, True]}, "molecule.real",
             "expected one entry per atom (2), got 3 entries"),
    "atom-labels": ({"atom_labels": ["a"]}, "molecule.atom_labels", "expected one entry per atom"),
    "atomic-numbers": ({"atomic_numbers": [1, 8]}, "molecule.atomic_numbers[1]",
                       "atomic number 8 is not that of H (1)"),
    "mass-numbers": ({"mass_numbers": [1]}, "molecule.mass_numbers", "expected one entry per atom"),
    "fragment-index": ({"fragments": [[0], [5]]}, "molecule.fragments[1][0]",
                       "atom index 5 is out of range (atoms count from 0 to 1)"),
    "fragment-twice": ({"fragments": [[0, 1], [1]]}, "molecule.fragments[1][0]",
                       "atom 1 is in fragments 0 and 1"),
    "fragment-missing": ({"fragments": [[0]]}, "molecule.fragments",
                         "atom 1 in no fragment (every atom belongs to one)"),
    "fragment-charges": ({"fragments": [[0], [1]], "fragment_charges": [0.0]},
                         "molecule.fragment_charges", "1 value for 2 fragments"),
    "fragment-charges-sum": ({"fragments": [[0], [1]], "fragment_charges": [1.0, 0.0],
                              "molecular_charge": 0}, "molecule.fragment_charges",
                             "the fragment charges add up to 1.0, but molecular_charge is 0"),
    "fragment-charges-alone": ({"fragments": [[0], [1]], "fragment_charges": [1.0, -1.0]},
                               "molecule.fragment_charges",
                               "given without molecule.molecular_charge"),
    "fragment-multiplicities": ({"fragments": [[0], [1]], "fragment_multiplicities": [1, 0]},
                                "molecule.fragment_multiplicities[1]",
                                "expected a number >= 1 or null, got 0"),
    "connectivity-index": ({"connectivity": [[0, 7, 1.0]]}, "molecule.connectivity[0][1]",
                           "atom index 7 is out of range (atoms count from 0 to 1)"),
    "connectivity-self": ({"connectivity": [[1, 1, 1.0]]}, "molecule.connectivity[0]",
                          "a bond of atom 1 with itself"),
    "connectivity-triple": ({"connectivity": [[0, 1]]}, "molecule.connectivity[0]",
                            "expected [atom, atom, bond order], got 2 values"),
    "connectivity-order": ({"connectivity": [[0, 1, 9]]}, "molecule.connectivity[0][2]",
                           "expected a bond order from 0 to 5, got 9"),
}


@pytest.mark.parametrize("case", sorted(BAD_MOLECULE_ARRAYS))
def test_molecule_arrays_of_the_wrong_shape_are_input_errors(tmp_path, case):
    """`load_job` (what `dm21 run` and `dm21 validate` call) refuses each, naming the file,
    the line of the field and the field."""
    from dm21cli.core.errors import InputError
    from dm21cli.io.inputs.load import load_job

    changes, field, message = BAD_MOLECULE_ARRAYS[case]
    text = json.dumps(atomic_input(molecule=_h2_molecule(**changes)), indent=2)
    path = tmp_path / "h2.json"
    path.write_text(text.replace('"1e400"', "1e400"))  # JSON's way to an infinite float
    with pytest.raises(InputError) as err:
        load_job(path)
    problem = err.value
    assert (problem.file, problem.field) == (str(path), field), str(problem)
    assert problem.message.startswith(message), str(problem)
    assert problem.line is not None and problem.line > 1


def test_molecule_arrays_as_qcelemental_writes_them_are_accepted(tmp_path):
    """No false alarm: an AtomicInput written by qcelemental with fragments, their charges,
    connectivity, masses, labels, and a geometry in rows, is read (H2+ and H- apart)."""
    qcel = pytest.importorskip("qcelemental")
    from dm21cli.io.inputs.load import load_job

    mol = qcel.models.Molecule(symbols=["H", "H", "H", "H"],
                               geometry=[[0, 0, 0], [0, 0, 1.4], [0, 0, 8], [0, 0, 9.4]],
                               fragments=[[0, 1], [2, 3]], fragment_charges=[1, -1],
                               fragment_multiplicities=[2, 2], molecular_multiplicity=1,
                               connectivity=[(0, 1, 1.0), (2, 3, 1.0)],
                               masses=[1.008] * 4, atom_labels=["a", "b", "c", "d"])
    document = json.loads(qcel.models.AtomicInput(
        molecule=mol, driver="energy", model={"method": "b3lyp", "basis": "sto-3g"}).json())
    assert document["molecule"]["fragments"] == [[0, 1], [2, 3]]
    document["molecule"]["geometry"] = np.reshape(document["molecule"]["geometry"], (4, 3)).tolist()
    path = tmp_path / "h4.json"
    path.write_text(json.dumps(document, indent=2))
    spec = load_job(path)
    assert spec.molecule.charge == 0 and spec.molecule.multiplicity == 1
    assert spec.molecule.coords().shape == (4, 3)


def test_check_molecule_leaves_to_qcelemental_what_it_derives():
    """QCEngine's dicts: fragment charges without molecular_charge are qcelemental's to
    combine (the harness reads the molecule qcelemental made), symbols as atomic numbers
    and NumPy arrays are qcelemental's to read; shapes are checked all the same."""
    from dm21cli.core.errors import InputError
    from dm21cli.io.inputs.qcschema import check_molecule

    check_molecule(_h2_molecule(fragments=[[0], [1]], fragment_charges=[1, -1]))
    check_molecule({"symbols": np.array([1, 1]), "geometry": np.zeros((2, 3))})
    with pytest.raises(InputError, match=r"^AtomicInput: molecule.geometry\[1\]: 4 numbers"):
        check_molecule({"symbols": ["H", "H"], "geometry": np.array([[0, 0, 0], [0, 0, 1, 2]],
                                                                     dtype=object)})


def test_run_needs_no_qcelemental(tmp_path):
    """qcelemental and qcengine are optional: `dm21 run` works without them (they are
    made unimportable in the child process)."""
    write_job(tmp_path, "h2", basis="sto-3g", functional="b3lyp",
              extra="scf: {grid_level: 1}\noutputs: {molden: false}\n")
    code = textwrap.dedent("""\
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("qcelemental", "qcengine"):
                    raise ImportError(f"{name} blocked by the test")
        sys.meta_path.insert(0, Block())
        sys.argv = ["dm21", "run", "h2.yaml", "--json"]
        from dm21cli.__main__ import main
        main()
        """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(None),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, _show(proc)
    assert json.loads(proc.stdout)["schema_name"] == "qcschema_output"


# ----------------------------------------------------------------------------
# the QCEngine harness
# ----------------------------------------------------------------------------
@pytest.fixture
def qcengine(monkeypatch, checkpoints_dir):
    qcng = pytest.importorskip("qcengine")
    import dm21cli.qcengine  # noqa: F401 - registers the harness

    monkeypatch.setenv("DM21_CHECKPOINTS", str(checkpoints_dir))
    return qcng


def test_import_registers_the_program(qcengine):
    import importlib

    import dm21cli.qcengine as shim

    importlib.reload(shim)  # registering again is harmless
    assert "dm21" in qcengine.list_all_programs()
    assert "dm21" in qcengine.list_available_programs()


def test_harness_energy_is_dm21_runs_and_honours_the_task_config(qcengine, h2_runs, tmp_path,
                                                                   monkeypatch):
    """qcengine.compute(..., "dm21") in this process: the energy of `dm21 run`, with the
    TaskConfig's cores, memory (GiB) and scratch folder used by the run itself."""
    from pyscf import lib
    from threadpoolctl import threadpool_info

    from dm21cli.jobs import point as runner

    seen = {}
    real_build_scf = runner.build_scf

    def build_scf(mol, spec, grids, network=None, max_memory_mb=4000.0):
        seen["pyscf_threads"] = lib.num_threads()
        # NumPy's and SciPy's BLAS (the network's and the SCF's matrix products)
        seen["blas_threads"] = {p["num_threads"] for p in threadpool_info()
                                if p["user_api"] == "blas"
                                and ("numpy" in p["filepath"] or "scipy" in p["filepath"])}
        seen["mol_max_memory"] = mol.max_memory
        seen["network_workers"] = getattr(network, "workers", None)
        seen["pyscf_tmpdir"] = lib.param.TMPDIR
        return real_build_scf(mol, spec, grids, network, max_memory_mb=max_memory_mb)

    monkeypatch.setattr(runner, "build_scf", build_scf)
    from dm21cli.integrations import qcengine as harness

    held = []  # what the process held when the harness set the budget (MB)

    def current_rss_mb():
        held.append(real_rss())
        return held[-1]

    real_rss = harness.current_rss_mb
    monkeypatch.setattr(harness, "current_rss_mb", current_rss_mb)
    threads_before = lib.num_threads()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    config = {"ncores": 2, "memory": 0.75, "scratch_directory": str(scratch)}
    result = qcengine.compute(atomic_input(), "dm21", task_config=config)
    assert result.success, result.error
    assert result.return_result == pytest.approx(h2_runs["h2json"]["return_result"], abs=1e-9)
    # 0.75 GiB = 805 MB (10^6 bytes) for the run, on top of what the process held (a whole-
    # process budget, as dm21's --memory; this test process holds about 800 MB in the suite)
    assert len(held) == 1 and held[0] > 0
    memory_mb = int(held[0] + int(0.75 * 2**30 / 1e6))
    assert seen == {"pyscf_threads": 2, "blas_threads": {2}, "mol_max_memory": memory_mb,
                    "network_workers": 2, "pyscf_tmpdir": seen["pyscf_tmpdir"]}, seen
    assert Path(seen["pyscf_tmpdir"]).parent == scratch
    prov = result.provenance
    assert (prov.threads, prov.threads_source, prov.memory_mb) == (2, "input", memory_mb)
    assert f"2 threads (input), {memory_mb} MB (input)" in result.stdout
    out = Path(result.extras["dm21cli"]["input"]["job"]["output_dir"])
    assert out.parent.parent == scratch and not out.parent.exists(), "scratch not removed"
    assert lib.num_threads() == threads_before, "the process's thread count was not restored"
    # scratch_messy keeps the run's files
    messy = qcengine.compute(atomic_input(protocols={"native_files": "all"}), "dm21",
                             task_config={**config, "scratch_messy": True})
    out = Path(messy.extras["dm21cli"]["input"]["job"]["output_dir"])
    assert (out / "result.json").is_file() and (out / "scf.chk").is_file()
    assert "DM21 calculation summary" in messy.native_files["summary.txt"]
    assert messy.return_result == result.return_result


def test_harness_gradient_is_dm21_runs(qcengine, h2_gradient, tmp_path):
    """qcengine.compute with driver gradient: the gradient `dm21 run input.json` writes,
    to 1e-7 hartree/bohr (two runs of the SCF, each converged to 1e-10 hartree; measured
    1e-9 apart)."""
    result = qcengine.compute(atomic_input(driver="gradient", keywords=GRADIENT_KEYWORDS),
                              "dm21", task_config={"ncores": 1,
                                                   "scratch_directory": str(tmp_path)})
    assert result.success, result.error
    expected = np.asarray(h2_gradient["dm21 run"]["return_result"])
    np.testing.assert_allclose(np.asarray(result.return_result).reshape(2, 3), expected,
                               rtol=0, atol=1e-7)
    np.testing.assert_allclose(result.properties.return_gradient, expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("changes, needle", [
    ({"keywords": {"conv_tl": 1e-8}}, "keywords.conv_tl: unknown keyword 'conv_tl'"),
    ({"model": {"method": "no-such-xc", "basis": "sto-3g"}}, "model.method: unknown functional"),
    ({"driver": "properties"}, "driver: 'properties' is not supported"),
    ({"keywords": {"task": "gradient"}}, "keywords.task: set this in driver, not in keywords"),
    ({"keywords": {"threads": 4}}, "keywords.threads: under QCEngine, set the threads"),
    # issue 22: shapes, before qcelemental (which flattened nothing, but raised its own errors:
    # unknown_error) and what qcelemental does not check (connectivity's atoms: it ran)
    ({"molecule": _h2_molecule(geometry=[[0, 0, 0, 0], [0, 1.4]])},
     "AtomicInput: molecule.geometry[0]: 4 numbers in this row (expected 3"),
    ({"molecule": _h2_molecule(masses=[1.008])},
     "AtomicInput: molecule.masses: expected one entry per atom (2), got 1 entry"),
    ({"molecule": _h2_molecule(fragments=[[0], [1]], fragment_charges=[0])},
     "AtomicInput: molecule.fragment_charges: 1 value for 2 fragments"),
    ({"molecule": _h2_molecule(fragments=[[0], [5]])},
     "AtomicInput: molecule.fragments[1][0]: atom index 5 is out of range"),
    ({"molecule": _h2_molecule(connectivity=[[0, 7, 1.0]])},
     "AtomicInput: molecule.connectivity[0][1]: atom index 7 is out of range"),
    ({"molecule": _h2_molecule(geometry="0 0 0 0 0 1.4")},
     "AtomicInput: molecule.geometry: expected a list of coordinates in bohr, got '0 0 0"),
    # what qcelemental refuses with its own exceptions: an input_error, not unknown_error
    ({"molecule": _h2_molecule(symbols=["H", "Xx"])},
     "AtomicInput: molecule: Atom identifier (Xx) uninterpretable"),
    ({"molecule": _h2_molecule(molecular_multiplicity=2)},
     "AtomicInput: molecule: Input Error: Inconsistent or unspecified chg/mult"),
], ids=["unknown-keyword", "bad-method", "properties", "task-keyword", "threads-keyword",
        "geometry-ragged", "masses", "fragment-charges", "fragment-index", "connectivity-index",
        "geometry-string", "element", "multiplicity"])
def test_harness_bad_input_is_a_failed_operation(qcengine, changes, needle, tmp_path):
    result = qcengine.compute(atomic_input(**changes), "dm21",
                              task_config={"ncores": 1, "scratch_directory": str(tmp_path)})
    assert result.success is False
    assert result.error.error_type == "input_error", result.error
    assert needle in result.error.error_message, result.error.error_message
    assert list(tmp_path.iterdir()) == [], "a refused input left files in the scratch folder"


def test_harness_molecule_object_with_a_bond_to_no_atom_is_an_input_error(qcengine, tmp_path):
    """A qcelemental Molecule (validated by qcelemental, which does not check connectivity's
    atom indices): before issue 22 the bond to atom 5 of 2 was accepted and the job ran."""
    from qcelemental.models import Molecule

    mol = Molecule(symbols=["H", "H"], geometry=H2_GEOMETRY_BOHR, connectivity=[(0, 5, 1.0)])
    result = qcengine.compute({"molecule": mol, "driver": "energy",
                               "model": {"method": "b3lyp", "basis": "sto-3g"}}, "dm21",
                              task_config={"ncores": 1, "scratch_directory": str(tmp_path)})
    assert result.success is False
    assert result.error.error_type == "input_error", result.error
    assert "AtomicInput: molecule.connectivity[0][1]: atom index 5 is out of range" in \
        result.error.error_message


def test_harness_input_qcelemental_cannot_read_is_an_input_error(qcengine, monkeypatch):
    """qcelemental failing on an input with a plain Python error (a string geometry was an
    AttributeError inside qcelemental before issue 22: unknown_error with a traceback)."""
    from qcengine.programs.model import ProgramHarness

    def fails(self, data, **kwargs):
        raise AttributeError("'str' object has no attribute 'copy'")

    monkeypatch.setattr(ProgramHarness, "build_input_model", fails)
    result = qcengine.compute(atomic_input(), "dm21", task_config={"ncores": 1})
    assert result.success is False
    assert result.error.error_type == "input_error", result.error
    assert "AtomicInput: qcelemental cannot read it (AttributeError: 'str' object has no " \
        "attribute 'copy')" in result.error.error_message


def test_harness_memory_is_on_top_of_the_process_and_at_most_the_machine(qcengine, monkeypatch):
    """TaskConfig's memory (GiB) -> dm21's whole-process budget (MB): plus what the process
    holds, capped at the machine's memory; none given: dm21's own default."""
    from dm21cli.core.resources import physical_memory_mb
    from dm21cli.integrations import qcengine as harness

    monkeypatch.setattr(harness, "current_rss_mb", lambda: 300.4)
    assert harness.memory_budget_mb(1.0) == int(300.4 + 1073)  # 1 GiB = 1073.7 MB
    assert harness.memory_budget_mb(None) is None
    assert harness.memory_budget_mb(1e6) == physical_memory_mb()


def test_harness_scratch_directory_that_does_not_exist_is_a_resource_error(qcengine, tmp_path):
    """A TaskConfig scratch_directory that cannot hold the run's folder: a resource_error
    naming it, not a traceback."""
    missing = tmp_path / "no-such-folder"
    result = qcengine.compute(atomic_input(), "dm21",
                              task_config={"ncores": 1, "scratch_directory": str(missing)})
    assert result.success is False
    assert result.error.error_type == "resource_error", result.error
    assert f"scratch_directory {missing}: cannot create" in result.error.error_message
    assert "Traceback" not in result.error.error_message
    assert not missing.exists()


def test_harness_not_converged_is_a_convergence_error(qcengine, tmp_path):
    keywords = {"grid_level": 1, "max_cycle": 1, "max_attempts": 1, "conv_tol": 1e-12,
                "warm_start": None}
    result = qcengine.compute(atomic_input(keywords=keywords), "dm21",
                              task_config={"ncores": 1, "scratch_directory": str(tmp_path)})
    assert result.success is False
    assert result.error.error_type == "convergence_error", result.error
    extras = result.error.extras
    assert extras["dm21cli"]["status"] == "not-converged"
    assert math.isfinite(extras["properties"]["return_energy"])


def test_geometric_optimises_h2_with_dm21_gradients(qcengine, tmp_path, monkeypatch):
    """compute_procedure(..., "geometric") optimises H2 with dm21's gradients: the energy
    goes down at every step and the last gradient is within geomeTRIC's default (GAU)
    threshold on the largest component, 4.5e-4 hartree/bohr."""
    pytest.importorskip("geometric")
    monkeypatch.chdir(tmp_path)  # geomeTRIC writes qce_optim.xyz into the working directory
    optimization = {
        "keywords": {"program": "dm21"},
        "input_specification": {"driver": "gradient",
                                "model": {"method": "DM21", "basis": "sto-3g"},
                                "keywords": {"grid_level": 1, "molden": False}},
        "initial_molecule": H2_INPUT["molecule"],
    }
    with pytest.warns(FutureWarning):  # compute_procedure is deprecated in favour of compute
        result = qcengine.compute_procedure(optimization, "geometric",
                                            task_config={"ncores": 1,
                                                         "scratch_directory": str(tmp_path)})
    assert result.success, result.error
    energies = result.energies
    assert len(energies) >= 2 and energies[-1] < energies[0]
    assert all(b <= a + 1e-8 for a, b in zip(energies, energies[1:])), energies
    last = result.trajectory[-1]
    assert last.driver == "gradient" and last.provenance.creator == "dm21cli"
    assert np.abs(np.asarray(last.return_result)).max() < 4.5e-4
    r0 = np.linalg.norm(np.subtract(*np.reshape(H2_GEOMETRY_BOHR, (2, 3))))
    r = np.linalg.norm(np.subtract(*result.final_molecule.geometry))
    assert abs(r - r0) > 1e-3, (r0, r)  # it moved (DM21/STO-3G's minimum is not 0.74 A)


def test_harness_stretched_h2_is_not_a_zero_xc_success(qcengine, tmp_path):
    """Issue 22: restricted DM21 H2 at 21 A (STO-3G) was a QCEngine success with E = +0.59 Ha
    and E_xc = 0.  Now the energy is negative and the density passed the final checks."""
    molecule = _h2_molecule(geometry=[0.0, 0.0, 0.0, 0.0, 0.0, 21.0 / BOHR_ANGSTROM])
    result = qcengine.compute(atomic_input(molecule=molecule), "dm21",
                              task_config={"ncores": 1, "scratch_directory": str(tmp_path)})
    assert result.success, result.error
    assert result.return_result < -0.2
    assert result.extras["dm21cli"]["properties"]["dm21_final_energy"]["problems"] == []


def test_harness_hessian_driver_is_dm21_freqs(qcengine, tmp_path):
    """driver hessian through QCEngine: the Hessian of ``dm21 freq`` (central differences of
    analytic gradients; B3LYP/STO-3G H2, grid level 1) as return_result (3N x 3N, Eh/bohr^2),
    symmetric to its finite-difference noise, with Psi4's thermochemistry qcvars, and the one
    vibration equal to the one ``dm21 freq`` prints for the same input."""
    result = qcengine.compute(atomic_input(driver="hessian", model={"method": "b3lyp",
                                                                    "basis": "sto-3g"}),
                              "dm21", task_config={"ncores": 1,
                                                   "scratch_directory": str(tmp_path)})
    assert result.success, result.error
    hessian = np.asarray(result.return_result).reshape(6, 6)
    assert np.abs(hessian - hessian.T).max() < 1e-4 and hessian[2, 2] > 0.3
    assert {"ZPVE", "GIBBS FREE ENERGY"} <= set(result.extras["qcvars"])
    vib = result.extras["dm21cli"]["vibrations"]
    assert vib["n_vibrations"] == 1 and vib["linear"] and 4000 < vib["wavenumbers_cm1"][0] < 6000
