"""The input layer: YAML/XYZ job files, overrides, and one-line errors with file:line: field."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dm21cli.core.errors import InputError
from dm21cli.io.inputs.models import JobSpec, Molecule
from dm21cli.io.inputs.load import load_job
from dm21cli.io.inputs.fields import parse_memory
from dm21cli.io.inputs.validate import validate_job
from dm21cli.core.units import ANGSTROM_BOHR


# Lines 1-5; anything appended starts on line 6.
WATER = """\
molecule:
  xyz: |
    O  0.000  0.000  0.117
    H  0.000  0.757 -0.469
    H  0.000 -0.757 -0.469
"""

WATER_XYZ = """\
3
water, angstrom
O  0.000  0.000  0.117
H  0.000  0.757 -0.469
H  0.000 -0.757 -0.469
"""


def write(tmp_path: Path, text: str | bytes, name: str = "job.yaml") -> str:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


# ---------------------------------------------------------------------------
# error cases: (id, yaml text, line, field, substring of message, extra files, file the error names)
# file None -> the YAML file itself; "mol.xyz" -> that file in tmp_path; "-" -> no file.
# ---------------------------------------------------------------------------
ERROR_CASES = [
    # schema
    ("unknown-key", WATER + "scf:\n  conv_tl: 1e-6\n", 7, "scf.conv_tl", "did you mean 'conv_tol'", {}, None),
    ("unknown-top-key", WATER + "molecul: {}\n", 6, "molecul", "did you mean 'molecule'", {}, None),
    ("key-in-wrong-section", WATER + "charge: 1\n", 6, "charge", "molecule.charge", {}, None),
    ("unknown-job-key", "job:\n  name: w\n  outdir: x\n" + WATER, 3, "job.outdir", "output_dir", {}, None),
    ("conv-tol-negative", WATER + "scf:\n  conv_tol: -1e-6\n", 7, "scf.conv_tol", "greater than 0", {}, None),
    ("conv-tol-zero", WATER + "scf:\n  conv_tol: 0\n", 7, "scf.conv_tol", "greater than 0", {}, None),
    ("conv-tol-text", WATER + "scf:\n  conv_tol: tight\n", 7, "scf.conv_tol", "expected a number", {}, None),
    ("conv-tol-nan", WATER + "scf:\n  conv_tol: .nan\n", 7, "scf.conv_tol", "finite", {}, None),
    ("conv-tol-grad-neg", WATER + "scf:\n  conv_tol_grad: -1\n", 7, "scf.conv_tol_grad", "greater than 0", {}, None),
    ("conv-tol-bool", WATER + "scf:\n  conv_tol: true\n", 7, "scf.conv_tol", "expected a number", {}, None),
    ("max-cycle-zero", WATER + "scf:\n  max_cycle: 0\n", 7, "scf.max_cycle", "from 1 to 10000", {}, None),
    ("max-cycle-float", WATER + "scf:\n  max_cycle: 2.5\n", 7, "scf.max_cycle", "integer", {}, None),
    ("max-attempts", WATER + "scf:\n  max_attempts: 0\n", 7, "scf.max_attempts", "from 1 to 100", {}, None),
    ("grid-level", WATER + "scf:\n  conv_tol: 1e-8\n  grid_level: 12\n", 8, "scf.grid_level", "0 to 9", {}, None),
    ("legacy-grids", WATER + "scf:\n  legacy_grids: maybe\n", 7, "scf.legacy_grids", "true or false", {}, None),
    ("small-rho", WATER + "scf:\n  small_rho_cutoff: -1\n", 7, "scf.small_rho_cutoff", "from 0 to 0.001",
     {}, None),
    ("precision", WATER + "scf:\n  precision: float16\n", 7, "scf.precision", "mixed, float64, float32", {}, None),
    ("guess-missing", WATER + "scf:\n  guess: nothere.chk\n", 7, "scf.guess", "chkfile not found", {}, None),
    ("warm-start-dm21", WATER + "scf:\n  warm_start: DM21\n", 7, "scf.warm_start", "conventional", {}, None),
    ("warm-start-unknown", WATER + "scf:\n  warm_start: b3lpy\n", 7, "scf.warm_start", "unknown warm-start", {}, None),
    ("restricted-open-dm21", WATER.replace("O  0", "N  0") + "  multiplicity: 2\nscf:\n  restricted: true\n",
     8, "scf.restricted", "restricted open-shell", {}, None),
    ("units", WATER + "  units: nm\n", 6, "molecule.units", "angstrom, bohr", {}, None),
    ("charge-text", WATER + "  charge: one\n", 6, "molecule.charge", "integer", {}, None),
    ("multiplicity-zero", WATER + "  multiplicity: 0\n", 6, "molecule.multiplicity", ">= 1", {}, None),
    ("functional-unknown", WATER + "functional: b3lpy\n", 6, "functional", "did you mean 'b3lyp'", {}, None),
    ("functional-empty", WATER + "functional: ''\n", 6, "functional", "empty", {}, None),
    ("functional-list", WATER + "functional: [b3lyp]\n", 6, "functional", "functional name", {}, None),
    ("dispersion", WATER + "dispersion: d4\n", 6, "dispersion", "d3bj", {}, None),
    ("basis-unknown", WATER + "basis: def2-svpp\n", 6, "basis", "unknown basis set", {}, None),
    ("basis-lacks-element", WATER.replace("O  0", "Rn 0") + "basis: sto-3g\n", 6, "basis", "no functions for Rn", {}, None),
    ("basis-map-lacks-element", WATER + "basis:\n  O: def2-svp\n", 6, "basis", "no basis for element H", {}, None),
    ("basis-map-bad-key", WATER + "basis:\n  O: def2-svp\n  Xq: sto-3g\n  default: sto-3g\n", 8, "basis.Xq",
     "unknown element 'Xq'", {}, None),
    ("basis-map-lacks-in-entry", WATER.replace("O  0", "Rn 0") + "basis:\n  rn: sto-3g\n  default: def2-svp\n",
     7, "basis.rn", "no functions for Rn", {}, None),
    ("basis-map-default-unknown", WATER + "basis:\n  O: def2-svp\n  default: nonsense-basis\n", 8,
     "basis.default", "unknown basis set", {}, None),
    ("basis-map-empty", WATER + "basis: {}\n", 6, "basis", "empty", {}, None),
    ("job-name", "job:\n  name: my water\n" + WATER, 2, "job.name", "letters, digits", {}, None),
    ("job-name-dotdot", "job:\n  name: '..'\n" + WATER, 2, "job.name", "letters, digits", {}, None),
    ("cube-unknown", WATER + "outputs:\n  cubes:\n    - density\n    - elf\n", 9, "outputs.cubes[1]", "unknown cube", {}, None),
    ("cube-zero", WATER + "outputs:\n  cubes: [orbital:0]\n", 7, "outputs.cubes[0]", "start at 1", {}, None),
    ("cube-spin-restricted", WATER + "outputs:\n  cubes: [orbital:3a]\n", 7, "outputs.cubes[0]", "unrestricted", {}, None),
    ("cube-too-high", WATER + "outputs:\n  cubes:\n    - orbital:500\n", 8, "outputs.cubes[0]", "does not exist", {}, None),
    ("orbitals-zero", WATER + "outputs:\n  orbitals:\n    - 1\n    - 0\n", 9, "outputs.orbitals[1]", "start at 1", {}, None),
    ("orbitals-too-high", WATER + "outputs:\n  orbitals: [1, 99]\n", 7, "outputs.orbitals[1]", "does not exist", {}, None),
    ("cube-spacing", WATER + "outputs:\n  cube_spacing: 0\n", 7, "outputs.cube_spacing", "greater than 0", {}, None),
    ("cube-margin", WATER + "outputs:\n  cube_margin: -1\n", 7, "outputs.cube_margin", ">= 0", {}, None),
    ("molden", WATER + "outputs:\n  molden: 1\n", 7, "outputs.molden", "true or false", {}, None),
    ("job-task", WATER + "job:\n  task: forces\n", 7, "job.task",
     "expected one of energy, gradient, opt, freq, ts, irc; got 'forces'", {}, None),
    ("threads", WATER + "resources:\n  threads: 0\n", 7, "resources.threads", "from 1 to 1024", {}, None),
    # issue 22: counts with an upper limit (threads 1e9 ended in libgomp's "Out of memory
    # allocating 216000001344 bytes", exit 1; small_rho_cutoff 1e10 dropped every grid point)
    ("threads-too-many", WATER + "resources:\n  threads: 1e9\n", 7, "resources.threads",
     "from 1 to 1024, got 1000000000", {}, None),
    ("max-cycle-too-many", WATER + "scf:\n  max_cycle: 1e15\n", 7, "scf.max_cycle",
     "from 1 to 10000", {}, None),
    ("max-attempts-too-many", WATER + "scf:\n  max_attempts: 1e15\n", 7, "scf.max_attempts",
     "from 1 to 100,", {}, None),
    ("small-rho-too-large", WATER + "scf:\n  small_rho_cutoff: 1e10\n", 7, "scf.small_rho_cutoff",
     "must be from 0 to 0.001, got 1e+10", {}, None),
    ("memory-text", WATER + "resources:\n  memory: 4 parsec\n", 7, "resources.memory", "4GB", {}, None),
    ("memory-zero", WATER + "resources:\n  memory: 0\n", 7, "resources.memory", "at least 1 MB", {}, None),
    ("section-not-mapping", WATER + "scf: [1, 2]\n", 6, "scf", "expected a mapping", {}, None),
    ("molecule-not-mapping", "molecule: O 0 0 0\n", 1, "molecule", "expected a mapping", {}, None),
    ("molecule-missing", "job:\n  name: w\n", 1, "molecule", "'molecule' is missing", {}, None),
    # molecule block
    ("xyz-and-file", WATER + "  file: mol.xyz\n", 1, "molecule", "exactly one of", {}, None),
    ("xyz-nor-file", "molecule:\n  charge: 0\n", 1, "molecule", "exactly one of", {}, None),
    ("unknown-element", WATER.replace("H  0.000  0.757", "Xx 0.000  0.757"), 4, "molecule.xyz",
     "unknown element 'Xx' (did you mean 'Xe'?)", {}, None),
    ("ghost-atom", WATER.replace("H  0.000  0.757", "X  0.000  0.757"), 4, "molecule.xyz", "ghost", {}, None),
    ("atom-label", WATER.replace("H  0.000  0.757", "H1 0.000  0.757"), 4, "molecule.xyz", "did you mean 'H'", {}, None),
    ("coordinate-text", WATER.replace("-0.757", "abc"), 5, "molecule.xyz", "'abc' is not a number", {}, None),
    ("coordinate-nan", WATER.replace("0.117", "nan"), 3, "molecule.xyz", "not a finite number", {}, None),
    ("coordinate-inf", WATER.replace("0.117", "-inf"), 3, "molecule.xyz", "not a finite number", {}, None),
    ("coordinate-huge", WATER.replace("0.117", "1e9"), 3, "molecule.xyz", "too large", {}, None),
    ("atom-fields", WATER.replace(" -0.469\n", "\n", 1), 4, "molecule.xyz", "got 3 fields", {}, None),
    ("atoms-too-close", WATER.replace("-0.757", "0.757"), 5, "molecule.xyz", "atoms 2 (H) and 3 (H)", {}, None),
    ("atoms-too-close-bohr", "molecule:\n  xyz: |\n    H 0 0 0\n    H 0 0 0.15\n  units: bohr\n", 4,
     "molecule.xyz", "0.0794 Angstrom apart", {}, None),
    ("xyz-empty", "molecule:\n  xyz: ''\n", 2, "molecule.xyz", "no atoms", {}, None),
    ("xyz-blank-lines", "molecule:\n  xyz: |\n\n\n    O 0 0 0\n    Q 0 0 1\n", 6, "molecule.xyz", "'Q'", {}, None),
    ("xyz-not-text", "molecule:\n  xyz: 5\n", 2, "molecule.xyz", "atom lines", {}, None),
    ("xyz-count-mismatch", "molecule:\n  xyz: |\n    4\n    comment\n    O 0 0 0\n    H 0 0 1\n", 3,
     "molecule.xyz", "announces 4 atoms but 2", {}, None),
    ("xyz-count-extra", "molecule:\n  xyz: |\n    1\n    c\n    H 0 0 0\n    H 0 0 1\n", 6,
     "molecule.xyz", "multi-frame", {}, None),
    ("xyz-flow-scalar", "molecule:\n  xyz: \"O 0 0 0\\nH 0 0 1\\nH 0 1 0 0\"\n", 2, "molecule.xyz", "got 5 fields", {}, None),
    ("file-missing", "molecule:\n  file: nothere.xyz\n", 2, "molecule.file", "no such file", {}, None),
    ("file-bad-atom", "molecule:\n  file: mol.xyz\n", 4, "molecule.file", "unknown element 'Hq'",
     {"mol.xyz": WATER_XYZ.replace("H  0.000  0.757", "Hq 0.000  0.757")}, "mol.xyz"),
    ("file-bad-count", "molecule:\n  file: mol.xyz\n", 1, "molecule.file", "announces 3 atoms",
     {"mol.xyz": WATER_XYZ.replace("3\n", "3\n", 1).rsplit("H", 1)[0]}, "mol.xyz"),
    ("file-not-utf8", "molecule:\n  file: mol.xyz\n", 3, "molecule.file", "UTF-8",
     {"mol.xyz": b"3\nwater\nO \xff 0 0\n"}, "mol.xyz"),
    # electrons
    ("parity-charge", WATER + "  charge: 1\n", 6, "molecule.charge", "odd electron count", {}, None),
    ("parity-multiplicity", WATER + "  charge: 0\n  multiplicity: 2\n", 7, "molecule.multiplicity",
     "even electron count", {}, None),
    ("parity-default", WATER.replace("O  0", "N  0"), 1, "molecule.multiplicity", "odd electron count", {}, None),
    ("no-electrons", WATER + "  charge: 10\n", 6, "molecule.charge", "leaves 0 electrons", {}, None),
    ("multiplicity-too-high", WATER + "  multiplicity: 13\n", 6, "molecule.multiplicity", "12 unpaired", {}, None),
    # YAML syntax and structure
    ("duplicate-key", WATER + "basis: sto-3g\nfunctional: pbe\nbasis: def2-svp\n", 8, "basis", "duplicate key 'basis'",
     {}, None),
    ("duplicate-nested", WATER + "scf:\n  max_cycle: 5\n  max_cycle: 6\n", 8, "scf.max_cycle", "first given on line 7",
     {}, None),
    ("malformed", WATER + "scf: [1, 2\n", 7, None, "invalid YAML", {}, None),
    ("bad-indent", "molecule:\n  xyz: O 0 0 0\n   charge: 1\n", 3, None, "invalid YAML", {}, None),
    ("tab-indent", "molecule:\n\txyz: O 0 0 0\n", 2, None, "invalid YAML", {}, None),
    ("two-documents", WATER + "---\nfoo: 1\n", 6, None, "single document", {}, None),
    ("empty-file", "", None, None, "empty", {}, None),
    ("only-comments", "# nothing\n", None, None, "empty", {}, None),
    ("top-level-list", "- molecule\n", 1, None, "mapping of sections", {}, None),
    ("top-level-scalar", "\n\nhello\n", 3, None, "mapping of sections", {}, None),
    ("merge-key", "base: &b {charge: 0}\n" + WATER, 1, "base", "unknown key", {}, None),
    ("merge-key2", WATER + "scf:\n  <<: {max_cycle: 3}\n", 7, "scf", "merge keys", {}, None),
    ("python-tag", WATER + "functional: !!python/name:os.system b3lyp\n", 6, "functional", "invalid value", {}, None),
    ("not-utf8", b"molecule:\n  xyz: |\n    O 0 0 \xff\n", 3, None, "UTF-8", {}, None),
    # solvent (issue 26): checked before any SCF
    ("solvent-unknown-name", WATER + "solvent:\n  name: watr\n", 7, "solvent.name",
     "unknown solvent 'watr'; closest known: water", {}, None),
    ("solvent-eps-1", WATER + "solvent:\n  eps: 1\n", 7, "solvent.eps", "greater than 1", {}, None),
    ("solvent-eps-negative", WATER + "solvent: {eps: -3}\n", 6, "solvent.eps", "greater than 1", {}, None),
    ("solvent-eps-text", WATER + "solvent: {eps: lots}\n", 6, "solvent.eps", "expected a number", {},
     None),
    ("solvent-model", WATER + "solvent:\n  model: ddPCM\n  name: water\n", 7, "solvent.model",
     "unknown solvent model 'ddPCM'", {}, None),
    ("solvent-model-list", WATER + "solvent:\n  model: GBSA\n  name: water\n", 7, "solvent.model",
     "IEF-PCM, C-PCM, SS(V)PE, COSMO, ddCOSMO, SMD", {}, None),
    ("solvent-nothing", WATER + "solvent:\n  model: C-PCM\n", 6, "solvent", "name", {}, None),
    ("solvent-smd-eps-only", WATER + "solvent:\n  model: SMD\n  eps: 4\n", 6, "solvent",
     "SMD needs a named solvent", {}, None),
    ("solvent-unknown-key", WATER + "solvent:\n  name: water\n  radii: bondi\n", 8,
     "solvent.radii", "unknown key", {}, None),
    ("solvent-not-mapping", WATER + "solvent: water\n", 6, "solvent", "mapping", {}, None),
]


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_error_names_file_line_and_field(tmp_path, case):
    _, text, line, field, fragment, files, err_file = case
    for name, content in files.items():
        write(tmp_path, content, name)
    path = write(tmp_path, text)
    with pytest.raises(InputError) as info:
        load_job(path)
    err = info.value
    expected_file = path if err_file is None else str(tmp_path / err_file)
    assert (err.file, err.line, err.field) == (expected_file, line, field), err.render()
    assert fragment in err.message, err.render()
    rendered = err.render()
    assert "\n" not in rendered
    if line is not None:
        assert rendered.startswith(f"{expected_file}:{line}: ")


def test_unsupported_extension_and_missing_file(tmp_path):
    path = write(tmp_path, WATER, "job.toml")  # (.json is a QCSchema AtomicInput since issue 13)
    with pytest.raises(InputError, match=r"expected .yaml, .yml, .xyz, or .json for a QCSchema "
                                         r"AtomicInput") as info:
        load_job(path)
    assert info.value.file == path
    with pytest.raises(InputError, match="no such file"):
        load_job(tmp_path / "absent.json")
    with pytest.raises(InputError, match="no such file") as info:
        load_job(tmp_path / "absent.yaml")
    assert info.value.file == str(tmp_path / "absent.yaml")
    with pytest.raises(InputError, match="no such file"):
        load_job(tmp_path / "absent.xyz")
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(InputError, match="directory"):
        load_job(tmp_path / "dir.yaml")


# ---------------------------------------------------------------------------
# good input
# ---------------------------------------------------------------------------

def test_minimal_yaml_defaults(tmp_path):
    spec = load_job(write(tmp_path, WATER, "water.yaml"))
    assert spec.job.name == "water"
    assert spec.output_path() == Path("outputs/water")
    assert spec.functional == "DM21" and spec.is_dm21
    assert spec.basis == "def2-svp"
    assert spec.resolved_restricted() is True
    assert spec.effective_conv_tol() == 1e-6
    assert spec.effective_conv_tol_grad() == 1e-3
    assert spec.memory_mb() is None
    assert spec.scf.warm_start == "b3lyp"
    assert spec.source_path == (tmp_path / "water.yaml").absolute()
    mol = spec.molecule
    assert mol.symbols == ["O", "H", "H"]
    assert mol.nelectron() == 10 and mol.nelectron(2) == 8
    assert mol.formula() == "H2O"
    np.testing.assert_allclose(mol.coords_bohr()[1], np.array([0.0, 0.757, -0.469]) * ANGSTROM_BOHR)
    atom = mol.pyscf_atom()
    assert atom[0][0] == "O" and len(atom[0][1]) == 3
    assert all(type(x) is float for x in atom[2][1])


def write_chkfile(path: Path) -> Path:
    """A real PySCF chkfile (H2/STO-3G, unconverged orbitals are enough for a guess)."""
    from pyscf import gto
    from pyscf.scf import chkfile

    mol = gto.M(atom="H 0 0 0; H 0 0 0.74", basis="sto-3g", verbose=0)
    chkfile.dump_scf(mol, str(path), 0.0, np.zeros(2), np.eye(2), np.array([2.0, 0.0]))
    return path


def test_full_yaml(tmp_path):
    chk = write_chkfile(tmp_path / "prev.chk")
    text = """\
job:
  name: n2-run.1
  output_dir: results/n2
molecule:
  xyz: |
    2
    nitrogen, bohr
    n 0 0 0
    N 0 0 2.074
  units: Bohr
  charge: 0
  multiplicity: 1
basis:
  N: cc-pvdz
  default: sto-3g
functional: dm21MC
dispersion: D3(BJ)
scf:
  restricted: false
  conv_tol: "1e-7"
  conv_tol_grad: 1e-4
  max_cycle: "100"
  max_attempts: 2
  grid_level: 4
  legacy_grids: yes
  small_rho_cutoff: 1e-10
  guess: prev.chk
  warm_start: pbe0
  precision: FLOAT32
outputs:
  cubes: [Density, spin-density, HOMO, lumo, orbital:5a, "orbital: 6b"]
  orbitals: [1, 2]
  cube_spacing: 1e-1
  cube_margin: 0
  molden: false
resources:
  threads: 4
  memory: 4GB
"""
    spec = load_job(write(tmp_path, text))
    assert spec.job.name == "n2-run.1"
    assert spec.output_path() == Path("results/n2")
    assert spec.molecule.units == "bohr"
    np.testing.assert_allclose(spec.molecule.coords_bohr()[1], [0, 0, 2.074])
    assert spec.molecule.symbols == ["N", "N"]
    assert spec.basis == {"N": "cc-pvdz", "default": "sto-3g"}
    assert spec.pyscf_basis() == {"N": "cc-pvdz"}
    assert spec.functional == "DM21mc" and spec.is_dm21
    assert spec.dispersion == "d3bj"
    assert spec.resolved_restricted() is False
    assert spec.effective_conv_tol() == 1e-7
    assert spec.effective_conv_tol_grad() == 1e-4
    assert spec.scf.max_cycle == 100 and spec.scf.grid_level == 4 and spec.scf.legacy_grids is True
    assert spec.scf.small_rho_cutoff == 1e-10
    assert spec.guess_chkfile() == chk.absolute()
    assert spec.scf.warm_start == "pbe0" and spec.scf.precision == "float32"
    assert spec.outputs.cubes == ["density", "spin_density", "homo", "lumo", "orbital:5a", "orbital:6b"]
    assert spec.outputs.cube_requests()[-2:] == ["orbital:1", "orbital:2"]
    assert spec.outputs.cube_spacing == 0.1 and spec.outputs.cube_margin == 0.0
    assert spec.outputs.molden is False
    assert spec.resources.threads == 4 and spec.memory_mb() == 4000


def test_non_dm21_defaults_and_functional_spellings(tmp_path):
    spec = load_job(write(tmp_path, WATER + "functional: wB97X-V\n"))
    assert not spec.is_dm21
    assert spec.functional == "wB97X-V"
    assert spec.effective_conv_tol() == 1e-9
    assert math.isclose(spec.effective_conv_tol_grad(), math.sqrt(1e-9))
    for name, canonical in [("dm21", "DM21"), ("DM21M", "DM21m"), ("dm21mu", "DM21mu")]:
        assert load_job(write(tmp_path, WATER + f"functional: {name}\n")).functional == canonical


def test_open_shell_auto_unrestricted(tmp_path):
    spec = load_job(write(tmp_path, WATER.replace("O  0", "N  0") + "  multiplicity: 2\n"))
    assert spec.resolved_restricted() is False
    # restricted open shell is allowed for conventional functionals (ROKS)
    spec = load_job(write(tmp_path, WATER.replace("O  0", "N  0") +
                          "  multiplicity: 2\nfunctional: b3lyp\nscf:\n  restricted: true\n"))
    assert spec.resolved_restricted() is True


def test_null_means_default_and_empty_sections(tmp_path):
    text = WATER + ("basis: null\nscf:\n  max_cycle: null\n  grid_level: ~\n  warm_start: null\n"
                    "outputs:\nresources:\njob:\n  name: null\n")
    spec = load_job(write(tmp_path, text))
    assert spec.basis == "def2-svp" and spec.scf.max_cycle == 50 and spec.scf.grid_level == 3
    assert spec.scf.warm_start is None  # null means "no warm start" here
    assert spec.job.name == "job" and spec.outputs.cubes == []
    for off in ("false", "none", "''"):
        assert load_job(write(tmp_path, WATER + f"scf:\n  warm_start: {off}\n")).scf.warm_start is None


@pytest.mark.parametrize("value, expected", [
    ("1e-6", 1e-6), ("'1e-6'", 1e-6), ("1.0e-6", 1e-6), ("\"2E-5\"", 2e-5), ("1d-6", 1e-6), ("3", 3.0),
    (" ' 1e-8 ' ", 1e-8),
])
def test_numeric_strings_for_floats(tmp_path, value, expected):
    spec = load_job(write(tmp_path, WATER + f"scf:\n  conv_tol: {value}\n"))
    assert spec.scf.conv_tol == pytest.approx(expected)
    assert isinstance(spec.scf.conv_tol, float)


@pytest.mark.parametrize("value, mb", [
    (4000, 4000), ("4000", 4000), ("4GB", 4000), ("4 gb", 4000), ("500MB", 500), ("2 GiB", 2147),
    ("1.5G", 1500), ("1024 MiB", 1073), ("1TB", 1_000_000), ("2048KiB", 2), (2500.0, 2500),
])
def test_memory_parsing(value, mb):
    assert parse_memory(value) == mb


@pytest.mark.parametrize("value", ["lots", "4 parsec", "-1GB", "", "GB", True, None, [4], "0.5MB", 0])
def test_memory_parsing_rejects(value):
    with pytest.raises(ValueError):
        parse_memory(value)


def test_lowercase_elements_atomic_numbers_and_comments(tmp_path):
    text = "molecule:\n  xyz: |\n    # hydrogen chloride\n    cl 0 0 0\n    1 0 0 1.27\n"
    spec = load_job(write(tmp_path, text))
    assert spec.molecule.symbols == ["Cl", "H"]
    assert spec.molecule.formula() == "ClH"


def test_external_xyz_relative_to_yaml(tmp_path):
    sub = tmp_path / "inputs"
    sub.mkdir()
    (sub / "geom").mkdir()
    (sub / "geom" / "water.xyz").write_text(WATER_XYZ)
    (sub / "job.yaml").write_text("molecule:\n  file: geom/water.xyz\n  units: angstrom\n")
    spec = load_job(sub / "job.yaml")
    assert spec.molecule.symbols == ["O", "H", "H"]
    assert spec.job.name == "job"


def test_resolved_dict_round_trips(tmp_path):
    spec = load_job(write(tmp_path, WATER + "  units: angstrom\nscf:\n  conv_tol: 1e-7\n"
                          "basis: {O: def2-tzvp, default: def2-svp}\nresources:\n  memory: 2GB\n"))
    resolved = spec.to_resolved_dict()
    json.dumps(resolved)  # JSON-serialisable
    assert resolved["scf"]["conv_tol"] == 1e-7
    assert resolved["scf"]["conv_tol_grad"] == 1e-3
    assert resolved["scf"]["restricted"] is True
    assert resolved["job"]["output_dir"] == "outputs/job"
    assert resolved["resources"]["memory"] == 2000
    again = load_job(write(tmp_path, spec.to_resolved_yaml(), "again.yaml"))
    assert again.to_resolved_dict() == {**resolved, "job": {**resolved["job"], "name": "job"}}
    np.testing.assert_array_equal(again.molecule.coords_bohr(), spec.molecule.coords_bohr())


def test_jobspec_built_in_code():
    spec = JobSpec(molecule=Molecule(xyz="H 0 0 0\nH 0 0 0.74\n"), functional="pbe")
    validate_job(spec)
    assert spec.job.name == "job" and spec.molecule.natm == 2 and spec.source_path is None
    with pytest.raises(InputError, match="unknown element") as info:
        Molecule(xyz="H 0 0 0\nQq 0 0 1\n")
    assert info.value.line == 2 and info.value.field == "molecule.xyz"
    bad = JobSpec(molecule=Molecule(xyz="H 0 0 0\nH 0 0 0.74\n", charge=1), functional="pbe")
    with pytest.raises(InputError, match="odd electron count"):
        validate_job(bad)


# ---------------------------------------------------------------------------
# bare .xyz input and overrides
# ---------------------------------------------------------------------------

def test_bare_xyz(tmp_path):
    spec = load_job(write(tmp_path, WATER_XYZ, "my water.xyz"))
    assert spec.job.name == "my_water"
    assert spec.molecule.units == "angstrom" and spec.molecule.natm == 3
    assert spec.functional == "DM21" and spec.basis == "def2-svp"
    # atoms only (no count line) is accepted too
    spec = load_job(write(tmp_path, WATER_XYZ.split("\n", 2)[2], "plain.xyz"))
    assert spec.molecule.natm == 3


@pytest.mark.parametrize("text, line, fragment", [
    (WATER_XYZ.replace("O  0.000", "Oo 0.000"), 3, "unknown element 'Oo'"),
    (WATER_XYZ.replace("-0.757", "0.757"), 5, "apart"),
    (WATER_XYZ.replace("3\n", "5\n", 1), 1, "announces 5 atoms"),
    ("", None, "no atoms"),
    ("0\nempty\n", 1, "no atoms"),
])
def test_bare_xyz_errors(tmp_path, text, line, fragment):
    path = write(tmp_path, text, "mol.xyz")
    with pytest.raises(InputError) as info:
        load_job(path)
    err = info.value
    assert (err.file, err.line, err.field) == (path, line if text else 1, None), err.render()
    assert fragment in err.message


def test_overrides_replace_file_values(tmp_path):
    text = WATER + "basis: sto-3g\nfunctional: pbe\nscf:\n  grid_level: 2\nresources:\n  threads: 2\n"
    spec = load_job(write(tmp_path, text), {
        "basis": "def2-tzvp", "functional": "dm21m", "charge": 1, "multiplicity": 2,
        "output_dir": "out/x", "name": "renamed", "grid_level": 5, "legacy_grids": True,
        "threads": 8, "memory": "1GB", "dispersion": "d3bj"})
    assert spec.basis == "def2-tzvp" and spec.functional == "DM21m"
    assert spec.molecule.charge == 1 and spec.molecule.multiplicity == 2
    assert spec.output_path() == Path("out/x") and spec.job.name == "renamed"
    assert spec.scf.grid_level == 5 and spec.scf.legacy_grids is True
    assert spec.resources.threads == 8 and spec.memory_mb() == 1000 and spec.dispersion == "d3bj"
    # None means "not given"
    spec = load_job(write(tmp_path, text), {"basis": None, "charge": None})
    assert spec.basis == "sto-3g" and spec.molecule.charge == 0


SOLVENT_FILE = WATER + "solvent:\n  model: C-PCM\n  eps: 4.5\n"


@pytest.mark.parametrize("value, expected", [
    ("water", ("C-PCM", "water", 78.355)),  # PySCF's table (pyscf.solvent.smd.solvent_db)
    ("Methanol", ("C-PCM", "methanol", 32.613)),
    ("DMSO", ("C-PCM", "dimethylsulfoxide", 46.826)),  # an abbreviation
    ("20.5", ("C-PCM", None, 20.5)),  # a number is the dielectric constant
    ("none", None),  # the gas phase
], ids=["name", "any-case", "abbreviation", "eps", "none"])
def test_solvent_option_replaces_the_files_solvent(tmp_path, value, expected):
    spec = load_job(write(tmp_path, SOLVENT_FILE), {"solvent": value})
    if expected is None:
        assert spec.solvent is None and "solvent" not in spec.to_resolved_dict()
        return
    solvent = spec.solvent
    assert (solvent.model, solvent.name, solvent.dielectric()) == expected
    # on a bare .xyz file: the default model
    spec = load_job(write(tmp_path, WATER_XYZ, "w.xyz"), {"solvent": value})
    assert spec.solvent.model == "IEF-PCM"


def test_solvent_section_resolves_and_round_trips(tmp_path):
    spec = load_job(write(tmp_path, WATER + "solvent:\n  model: iefpcm\n  name: WATER\n"))
    assert spec.solvent.resolved() == {"model": "IEF-PCM", "name": "water", "eps": 78.355}
    assert spec.solvent.label() == "IEF-PCM, water (eps 78.355)"
    again = load_job(write(tmp_path, spec.to_resolved_yaml(), "again.yaml"))
    assert again.to_resolved_dict()["solvent"] == spec.to_resolved_dict()["solvent"]
    # a name and eps: the name's descriptors with another dielectric constant
    spec = load_job(write(tmp_path, WATER + "solvent: {model: smd, name: water, eps: 80}\n"))
    assert (spec.solvent.model, spec.solvent.name, spec.solvent.dielectric()) == ("SMD", "water", 80)
    for model in ("cpcm", "C-PCM", "ss(v)pe", "SSVPE", "cosmo", "ddcosmo", "DDCOSMO", "smd"):
        spec = load_job(write(tmp_path, WATER + f"solvent: {{model: {model}, name: water}}\n"))
        assert spec.solvent.model in ("C-PCM", "SS(V)PE", "COSMO", "ddCOSMO", "SMD")
    # gas phase: no solvent key in the resolved input (gas-phase scan points keep their hashes)
    assert "solvent" not in load_job(write(tmp_path, WATER)).to_resolved_dict()


def test_overrides_on_bare_xyz(tmp_path):
    spec = load_job(write(tmp_path, WATER_XYZ, "w.xyz"), {"charge": 1, "multiplicity": 2, "basis": "sto-3g"})
    assert spec.molecule.charge == 1 and spec.basis == "sto-3g" and not spec.resolved_restricted()


OVERRIDE_ERRORS = [
    ({"charge": 1}, "--charge", "odd electron count"),
    ({"multiplicity": 2}, "--multiplicity", "even electron count"),
    ({"charge": 1, "multiplicity": 1}, "--multiplicity", "odd electron count"),
    ({"multiplicity": 0}, "--multiplicity", ">= 1"),
    ({"charge": "x"}, "--charge", "integer"),
    ({"basis": "nonsense-basis"}, "--basis", "unknown basis"),
    ({"functional": "b3lpy"}, "--functional", "unknown functional"),
    ({"grid_level": 12}, "--grid-level", "0 to 9"),
    ({"threads": 0}, "--threads", "from 1 to 1024"),
    ({"threads": 100000000}, "--threads", "from 1 to 1024"),  # issue 22: libgomp OOM, exit 1
    ({"memory": "lots"}, "--memory", "4GB"),
    ({"name": "a/b"}, "--name", "letters"),
    ({"dispersion": "d4"}, "--dispersion", "d3bj"),
    ({"output_dir": ""}, "--output-dir", "empty"),
    ({"solvent": "watr"}, "--solvent", "closest known: water"),
    ({"solvent": "0.5"}, "--solvent", "greater than 1"),
]


@pytest.mark.parametrize("overrides, field, fragment", OVERRIDE_ERRORS, ids=[e[1] + str(i) for i, e in
                                                                          enumerate(OVERRIDE_ERRORS)])
@pytest.mark.parametrize("kind", ["yaml", "xyz"])
def test_override_errors_name_the_option(tmp_path, kind, overrides, field, fragment):
    path = write(tmp_path, WATER, "job.yaml") if kind == "yaml" else write(tmp_path, WATER_XYZ, "w.xyz")
    with pytest.raises(InputError) as info:
        load_job(path, overrides)
    err = info.value
    assert (err.file, err.line, err.field) == (None, None, field), err.render()
    assert fragment in err.message


def test_unknown_override_key_is_a_bug(tmp_path):
    with pytest.raises(TypeError):
        load_job(write(tmp_path, WATER), {"colour": "red"})


# ---------------------------------------------------------------------------
# fuzzing: nothing but InputError escapes
# ---------------------------------------------------------------------------

_FUZZ_SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                          suppress_health_check=list(HealthCheck))

_yamlish = st.text(alphabet=st.sampled_from(list("molecule:xyz scf\n -[]{},:'\"#&*!|>?%@`0123456789.eE+HOC\t")),
                   max_size=120)


def _load_or_input_error(path, overrides=None):
    try:
        spec = load_job(path, overrides)
    except InputError as err:
        assert "\n" not in err.render()
        return None
    json.dumps(spec.to_resolved_dict())
    return spec


@_FUZZ_SETTINGS
@given(text=_yamlish)
def test_fuzz_text(tmp_path_factory, text):
    path = tmp_path_factory.getbasetemp() / "fuzz_text.yaml"
    path.write_text(text)
    _load_or_input_error(path)


@_FUZZ_SETTINGS
@given(text=_yamlish)
def test_fuzz_xyz_text(tmp_path_factory, text):
    path = tmp_path_factory.getbasetemp() / "fuzz.xyz"
    path.write_text(text)
    _load_or_input_error(path)


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                     st.sampled_from(["1e-6", "4GB", "b3lyp", "DM21", "def2-svp", "orbital:2", "auto",
                                      "angstrom", "bohr", "d3bj", "density", "x.chk", "-1", "0"]))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                       max_leaves=6)
_SCHEMA_KEYS = {
    "job": ["name", "output_dir"], "molecule": ["xyz", "file", "units", "charge", "multiplicity"],
    "scf": ["restricted", "conv_tol", "conv_tol_grad", "max_cycle", "max_attempts", "grid_level",
            "legacy_grids", "small_rho_cutoff", "guess", "warm_start", "precision"],
    "outputs": ["cubes", "orbitals", "cube_spacing", "cube_margin", "molden"],
    "resources": ["threads", "memory"],
}
_section_values = {name: st.dictionaries(st.sampled_from(keys + ["bogus"]), _values, max_size=4)
                   for name, keys in _SCHEMA_KEYS.items()}
_documents = st.fixed_dictionaries(
    {},
    optional={**{name: st.one_of(strat, _values) for name, strat in _section_values.items()},
              "basis": st.one_of(_values, st.dictionaries(st.sampled_from(["H", "o", "default", "Xx"]),
                                                           _values, max_size=3)),
              "functional": _values, "dispersion": _values, "extra": _values},
)


@_FUZZ_SETTINGS
@given(doc=_documents, keep_molecule=st.booleans())
def test_fuzz_mappings(tmp_path_factory, doc, keep_molecule):
    if keep_molecule:
        doc = dict(doc)
        mol = doc.get("molecule") if isinstance(doc.get("molecule"), dict) else {}
        doc["molecule"] = {k: v for k, v in mol.items() if k not in ("xyz", "file")} | {
            "xyz": "O 0 0 0.117\nH 0 0.757 -0.469\nH 0 -0.757 -0.469\n"}
    path = tmp_path_factory.getbasetemp() / "fuzz_map.yaml"
    path.write_text(yaml.safe_dump(doc))
    _load_or_input_error(path)


@_FUZZ_SETTINGS
@given(section=st.sampled_from(sorted(_SCHEMA_KEYS)), data=st.data())
def test_fuzz_one_key_of_a_valid_job(tmp_path_factory, section, data):
    key = data.draw(st.sampled_from(_SCHEMA_KEYS[section]))
    value = data.draw(_values)
    doc = yaml.safe_load(WATER)
    doc.setdefault(section, {})[key] = value
    path = tmp_path_factory.getbasetemp() / "fuzz_one.yaml"
    path.write_text(yaml.safe_dump(doc))
    _load_or_input_error(path)


@_FUZZ_SETTINGS
@given(overrides=st.fixed_dictionaries({}, optional={
    "basis": _scalars, "functional": _scalars, "charge": _scalars, "multiplicity": _scalars,
    "output_dir": _scalars, "name": _scalars, "grid_level": _scalars, "legacy_grids": _scalars,
    "threads": _scalars, "memory": _scalars, "dispersion": _scalars}))
def test_fuzz_overrides(tmp_path_factory, overrides):
    path = tmp_path_factory.getbasetemp() / "fuzz_over.yaml"
    path.write_text(WATER)
    _load_or_input_error(path, overrides)


# ---------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------

def _dm21(*args, cwd):
    return subprocess.run([sys.executable, "-m", "dm21cli", "validate", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_cli_validate_ok(tmp_path):
    write(tmp_path, WATER + "functional: b3lyp\n", "water.yaml")
    proc = _dm21("water.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary, memory = proc.stdout.splitlines()
    assert summary == ("water.yaml: ok (3 atoms, H2O, charge 0, multiplicity 1, b3lyp, "
                       "def2-svp, restricted)")
    assert memory.startswith("water.yaml: memory: the job needs at least "), memory
    write(tmp_path, WATER_XYZ, "water.xyz")
    proc = _dm21("water.xyz", "--charge", "1", "--multiplicity", "2", "--basis", "sto-3g", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "charge 1, multiplicity 2, DM21, sto-3g, unrestricted" in proc.stdout


@pytest.mark.parametrize("args, expected", [
    (["bad.yaml"], "dm21: error: bad.yaml:7: scf.conv_tol: must be greater than 0, got -1"),
    (["water.yaml", "--charge", "1"], "dm21: error: --charge: multiplicity 1 does not fit 9 electrons"),
    (["missing.yaml"], "dm21: error: missing.yaml: no such file"),
])
def test_cli_validate_errors(tmp_path, args, expected):
    write(tmp_path, WATER + "scf:\n  conv_tol: -1\n", "bad.yaml")
    write(tmp_path, WATER, "water.yaml")
    proc = _dm21(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(expected), lines[0]
    assert proc.stdout == ""


def test_validate_command_does_not_import_pyscf(tmp_path):
    """Importing `dm21 validate` (and its --help) loads no PySCF; PySCF is imported only when
    the command runs (its basis and functional checks need it), as dm21cli.cli.validate says."""
    write(tmp_path, WATER, "water.yaml")
    code = textwrap.dedent("""\
        import json, sys
        from dm21cli.cli.validate import validate
        import dm21cli.io.inputs
        heavy = lambda: sorted({m.split('.')[0] for m in sys.modules} & {'pyscf', 'tensorflow'})
        try:
            validate.main(['--help'], standalone_mode=False)
        except SystemExit:
            pass
        imported = heavy()
        validate.main(['water.yaml'], standalone_mode=False)
        print(json.dumps({'imported': imported, 'ran': heavy()}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout and "water.yaml: ok (3 atoms, H2O" in proc.stdout, proc.stdout
    heavy = json.loads(proc.stdout.strip().splitlines()[-1])
    assert heavy == {"imported": [], "ran": ["pyscf"]}, heavy


# ---------------------------------------------------------------------------
# issue 10: effective core potentials
# ---------------------------------------------------------------------------
NACL = "molecule:\n  xyz: |\n    Na 0 0 0\n    Cl 0 0 2.36\n"
HI = "molecule:\n  xyz: |\n    H 0 0 0\n    I 0 0 1.61\n"


def test_pyscf_load_ecp_cases_we_rely_on():
    """What ecp_map reads from PySCF: [] (own library, all-electron element), [ncore, ...], and
    BasisNotFoundError 'No ECP defined' from basis-set-exchange names without an ECP there."""
    from pyscf.gto.basis import load_ecp
    from pyscf.lib.exceptions import BasisNotFoundError

    assert load_ecp("def2-svp", "H") == []
    assert load_ecp("lanl2dz", "H") == []
    assert load_ecp("lanl2dz", "Na")[0] == 10
    assert load_ecp("def2-svp", "I")[0] == 28
    assert load_ecp("sbkjc-vdz", "Na")[0] == 10  # not in PySCF's library: basis-set-exchange
    with pytest.raises(BasisNotFoundError, match="No ECP defined for H"):
        load_ecp("sbkjc-vdz", "H")


@pytest.mark.parametrize("text, expected", [
    (NACL + "basis: lanl2dz\n", {"Na": ("lanl2dz", 10), "Cl": ("lanl2dz", 10)}),
    (HI + "basis: {I: cc-pvdz-pp, default: def2-svp}\n", {"I": ("cc-pvdz-pp", 28)}),
    (HI + "basis: def2-svp\n", {"I": ("def2-svp", 28)}),
    (HI + "basis: lanl2dz\n", {"I": ("lanl2dz", 46)}),
    (NACL.replace("Cl", "H ") + "basis: sbkjc-vdz\n", {"Na": ("sbkjc-vdz", 10)}),  # basis-set-exchange
    (WATER + "basis: def2-svp\n", {}),
    (NACL + "basis: cc-pvdz\n", {}),
])
def test_ecp_map_per_element(tmp_path, text, expected):
    from dm21cli.io.inputs.basis import ecp_map
    from dm21cli.jobs.build import build_molecule

    spec = load_job(write(tmp_path, text + "functional: b3lyp\n"))
    assert {s: tuple(e) for s, e in ecp_map(spec).items()} == expected
    mol = build_molecule(spec)
    core = sum(expected[s][1] for s in spec.molecule.symbols if s in expected)
    assert mol.nelectron == spec.molecule.nelectron() - core
    assert sorted(mol._ecp) == sorted(expected)
    assert [mol.atom_nelec_core(i) for i in range(mol.natm)] == \
        [expected[s][1] if s in expected else 0 for s in spec.molecule.symbols]


def test_nacl_lanl2dz_counts_valence_electrons(tmp_path):
    from dm21cli.jobs.build import build_molecule

    spec = load_job(write(tmp_path, NACL + "basis: lanl2dz\nfunctional: b3lyp\n"))
    mol = build_molecule(spec)
    assert (mol.nelectron, mol.nao_nr()) == (8, 16)  # 28 electrons, 2 x 10 in the ECP cores


def test_ecp_cannot_tell_is_refused(tmp_path, monkeypatch):
    from pyscf.gto import basis as pyscf_basis

    from dm21cli.io.inputs.basis import _ecp_lookup

    def broken(name, symbol):
        raise RuntimeError("Unable to parse the input ECP data")

    _ecp_lookup.cache_clear()
    monkeypatch.setattr(pyscf_basis, "load_ecp", broken)
    try:
        with pytest.raises(InputError) as info:
            load_job(write(tmp_path, NACL + "basis:\n  Na: lanl2dz\n  default: sto-3g\n"))
    finally:
        _ecp_lookup.cache_clear()
    err = info.value
    assert (err.line, err.field) == (6, "basis.Na"), err.render()
    assert "cannot tell whether basis 'lanl2dz' has an effective core potential for Na" in err.message


def test_mixed_guess_chkfile_has_the_ecp(tmp_path):
    from pyscf.scf import chkfile

    from dm21cli.jobs.scan.run import _mixed_guess_chkfile

    spec = load_job(write(tmp_path, NACL + "basis: lanl2dz\nfunctional: b3lyp\n"))
    _mixed_guess_chkfile(spec, tmp_path / "mixed.chk")
    mol = chkfile.load_mol(str(tmp_path / "mixed.chk"))
    assert mol.nelectron == 8
    occ = chkfile.load(str(tmp_path / "mixed.chk"), "scf/mo_occ")
    assert occ.sum() == 8


# ---------------------------------------------------------------------------
# issue 10: bad input found at validation
# ---------------------------------------------------------------------------
H2 = "molecule:\n  xyz: |\n    H 0 0 0\n    H 0 0 0.74\n"


@pytest.mark.parametrize("text, overrides, field, fragment", [
    (H2, {"basis": "sto-3g", "charge": -4}, "--charge",
     "has 6 electrons (3 alpha, 3 beta), but sto-3g gives 2 orbitals: at most 2 electrons of each spin"),
    (H2, {"charge": -10**9}, "--charge", "has 1000000002 electrons (500000001 alpha"),
    (H2, {"charge": -10**30}, "--charge", "but def2-svp gives 10 orbitals"),
    (H2, {"charge": 10**9}, "--charge", "leaves -999999998 electrons"),
    (H2, {"multiplicity": 10**9}, "--multiplicity", "needs at least 999999999 unpaired"),
    ("molecule:\n  xyz: He 0 0 0\n  multiplicity: 3\nbasis: sto-3g\n", {}, "molecule.multiplicity",
     "(2 alpha, 0 beta), but sto-3g gives 1 orbitals"),
    (NACL + "  multiplicity: 11\nbasis: lanl2dz\nfunctional: b3lyp\n", {}, "molecule.multiplicity",
     "needs at least 10 unpaired electrons but ClNa with charge 0 has 8 outside the ECP cores "
     "(20 core electrons)"),
    (NACL + "  charge: 8\nbasis: lanl2dz\nfunctional: b3lyp\n", {}, "molecule.charge",
     "charge 8 leaves 0 electrons outside the ECP cores"),
])
def test_electrons_must_fit_the_orbitals(tmp_path, text, overrides, field, fragment):
    with pytest.raises(InputError) as info:
        load_job(write(tmp_path, text), overrides)
    err = info.value
    assert err.field == field, err.render()
    assert fragment in err.message, err.render()
    assert "\n" not in err.render()


def test_cube_grid_too_large_is_refused(tmp_path):
    from dm21cli.io.inputs.validate import MAX_CUBE_POINTS

    with pytest.raises(InputError) as info:
        load_job(write(tmp_path, H2 + "outputs:\n  cubes: [density]\n  cube_spacing: 1e-5\n"))
    err = info.value
    assert (err.line, err.field) == (7, "outputs.cube_spacing"), err.render()
    assert "would have 2.43e+17 points each (13.6 EB of memory and 3.2 EB on disk per cube)" \
        in err.message, err.render()
    assert f"at most {MAX_CUBE_POINTS:,} points" in err.message
    # a margin that overflows the box, and the default spacing on a huge box
    with pytest.raises(InputError) as info:
        load_job(write(tmp_path, H2 + "outputs:\n  orbitals: [1]\n  cube_margin: 1e300\n"))
    assert (info.value.line, info.value.field) == (7, "outputs.cube_margin"), info.value.render()
    assert "too many to count" in info.value.message
    # no cubes: nothing to refuse
    assert load_job(write(tmp_path, H2 + "outputs:\n  cube_spacing: 1e-5\n")).outputs.cube_spacing == 1e-5


def test_cube_size_estimate_is_the_grid_write_cube_writes(tmp_path):
    from pyscf import gto

    from dm21cli.io.outputs.orbitals import cube_grid_shape, write_cube

    mol = gto.M(atom="O 0 0 0.117; H 0 0.757 -0.469; H 0 -0.757 -0.469", basis="sto-3g", verbose=0)
    path = write_cube(tmp_path / "d.cube", mol, "density", dm=np.eye(mol.nao_nr()), spacing_bohr=0.7,
                      margin_bohr=1.3)
    header = path.read_text().splitlines()[3:6]
    assert [int(line.split()[0]) for line in header] == \
        [int(n) for n in cube_grid_shape(mol.atom_coords(), 0.7, 1.3)]


@pytest.mark.parametrize("kind, fragment", [
    ("text", "not a PySCF chkfile (not an HDF5 file)"),
    ("hdf5-without-scf", "not a PySCF chkfile (no 'scf' group)"),
    ("hdf5-without-mol", "not a PySCF chkfile (no 'mol' record)"),
    ("directory", "is a directory, not a file"),
    ("too-large", "file too large (4,000,000,001 bytes; at most 4,000,000,000 are read)"),
])
def test_guess_chkfile_must_be_a_pyscf_chkfile(tmp_path, kind, fragment):
    # FIFOs and devices: test_cli_bad_files_exit_2_without_blocking (in a subprocess)
    import h5py

    path = tmp_path / "guess.chk"
    if kind == "text":
        path.write_text("not a chkfile\n")
    elif kind == "hdf5-without-scf":
        with h5py.File(path, "w") as h5:
            h5["other/x"] = np.zeros(3)
    elif kind == "hdf5-without-mol":
        with h5py.File(path, "w") as h5:
            h5["scf/mo_coeff"] = np.eye(2)
            h5["scf/mo_occ"] = np.array([2.0, 0.0])
    elif kind == "directory":
        path.mkdir()
    else:
        with open(path, "wb") as f:  # sparse: no disk space used
            f.truncate(4_000_000_001)
    with pytest.raises(InputError) as info:
        load_job(write(tmp_path, WATER + "scf:\n  guess: guess.chk\n"))
    err = info.value
    assert (err.line, err.field) == (7, "scf.guess"), err.render()
    assert fragment in err.message, err.render()


def test_guess_chkfile_written_by_pyscf_is_accepted(tmp_path):
    write_chkfile(tmp_path / "guess.chk")
    spec = load_job(write(tmp_path, WATER + "scf:\n  guess: guess.chk\n"))
    assert spec.guess_chkfile() == tmp_path / "guess.chk"


@pytest.mark.parametrize("where", ["molecule.file", "job file", "bare xyz"])
def test_text_files_are_read_up_to_a_bound(tmp_path, where):
    # FIFOs and devices: test_cli_bad_files_exit_2_without_blocking (in a subprocess)
    from dm21cli.io.inputs.files import MAX_TEXT_FILE_BYTES

    target = tmp_path / ("job.yaml" if where == "job file" else "mol.xyz")
    with open(target, "wb") as f:  # sparse: no disk space used
        f.truncate(MAX_TEXT_FILE_BYTES + 1)
    if where == "molecule.file":
        path = write(tmp_path, "molecule:\n  file: mol.xyz\n")
        expected = (path, 2, "molecule.file")
    else:
        path = str(target)
        expected = (path, None, None)
    with pytest.raises(InputError) as info:
        load_job(path)
    err = info.value
    assert (err.file, err.line, err.field) == expected, err.render()
    assert f"file too large ({MAX_TEXT_FILE_BYTES + 1:,} bytes; at most {MAX_TEXT_FILE_BYTES:,} are read)" \
        in err.message, err.render()


def test_unreadable_paths_are_input_errors(tmp_path, monkeypatch):
    import os

    write(tmp_path, WATER_XYZ, "w.xyz")
    with pytest.raises(InputError, match="no such file"):
        load_job(tmp_path / "w.xyz" / "x.yaml")  # a path through a file: ENOTDIR
    with pytest.raises(InputError, match="name too long"):
        load_job(tmp_path / ("x" * 300 + ".xyz"))
    with pytest.raises(InputError, match="no such file"):
        load_job(write(tmp_path, "molecule:\n  file: w.xyz/inner.xyz\n"))
    # permission denied (the tests run as root, where no file is unreadable): the stat refuses
    real_stat = os.stat

    def denied(path, *args, **kwargs):
        if str(path).endswith("secret.xyz"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", denied)
    with pytest.raises(InputError, match="permission denied") as info:
        load_job(tmp_path / "secret.xyz")
    assert info.value.file == str(tmp_path / "secret.xyz")


def test_distance_range_that_overflows(tmp_path):
    with pytest.raises(InputError) as info:
        load_job(write(tmp_path, WATER_XYZ, "w.xyz"), {"distance": "1:1e308:1e-300"})
    assert info.value.field == "--distance"
    assert "more points than a float counts; at most 200 are allowed" in info.value.message
    with pytest.raises(InputError, match="about 1e\\+23 points"):
        load_job(write(tmp_path, WATER_XYZ, "w.xyz"), {"distance": "1:1e20:1e-3"})


# ---------------------------------------------------------------------------
# issue 10: every problem of a file
# ---------------------------------------------------------------------------
MULTI = """\
molecule:
  xyz: |
    O 0 0 0
    Q 0 0 0.9
scf:
  conv_tol: -1
  max_cycle: 0
outputs:
  molden: 1
"""

MULTI_CHEMISTRY = """\
molecule:
  xyz: |
    O 0 0 0
    H 0 0 0.01
    H 0 0.7 0.5
  charge: 1
basis: {O: nonsense, default: sto-3g}
functional: b3lpy
outputs:
  cubes: [density]
  cube_spacing: 1e-4
"""


def test_every_schema_problem_is_reported(tmp_path):
    path = write(tmp_path, MULTI)
    with pytest.raises(InputError) as info:
        load_job(path)
    found = [(p.file, p.line, p.field) for p in info.value.problems]
    assert found == [(path, 4, "molecule.xyz"), (path, 6, "scf.conv_tol"), (path, 7, "scf.max_cycle"),
                     (path, 9, "outputs.molden")], [p.render() for p in info.value.problems]
    assert info.value is info.value.problems[0]
    assert str(info.value).endswith("(and 3 more problems: 'dm21 validate' lists them all)")


def test_every_chemistry_problem_is_reported(tmp_path):
    path = write(tmp_path, MULTI_CHEMISTRY)
    with pytest.raises(InputError) as info:
        load_job(path)
    found = [(p.line, p.field, p.message.split(":")[0][:30]) for p in info.value.problems]
    assert [f[:2] for f in found] == [(4, "molecule.xyz"), (6, "molecule.charge"),
                                      (11, "outputs.cube_spacing"), (8, "functional"),
                                      (7, "basis.O")], found


def test_later_checks_wait_for_earlier_ones(tmp_path):
    # the orbital index needs a known basis: it is not checked while the basis is unknown
    with pytest.raises(InputError) as info:
        load_job(write(tmp_path, WATER + "basis: nonsense\noutputs:\n  orbitals: [500]\n"))
    assert [p.field for p in info.value.problems] == ["basis"]
    with pytest.raises(InputError) as info:
        load_job(write(tmp_path, WATER + "basis: sto-3g\noutputs:\n  orbitals: [500]\n  cube_spacing: 1e-6\n"))
    assert [p.field for p in info.value.problems] == ["outputs.cube_spacing", "outputs.orbitals[0]"]


def test_cli_validate_lists_every_problem_run_prints_one_line(tmp_path):
    write(tmp_path, MULTI, "multi.yaml")
    proc = _dm21("multi.yaml", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "dm21: error: multi.yaml:4: molecule.xyz: atom 2: unknown element 'Q' (ghost and dummy atoms "
        "are not supported)",
        "dm21: error: multi.yaml:6: scf.conv_tol: must be greater than 0, got -1",
        "dm21: error: multi.yaml:7: scf.max_cycle: must be an integer from 1 to 10000, got 0",
        "dm21: error: multi.yaml:9: outputs.molden: expected true or false, got 1",
    ], proc.stderr
    assert proc.stdout == ""
    run = subprocess.run([sys.executable, "-m", "dm21cli", "run", "multi.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.splitlines() == [
        "dm21: error: multi.yaml:4: molecule.xyz: atom 2: unknown element 'Q' (ghost and dummy atoms "
        "are not supported) (and 3 more problems: 'dm21 validate' lists them all)"], run.stderr
    assert not (tmp_path / "outputs").exists()


def test_cli_validate_names_the_ecp(tmp_path):
    write(tmp_path, NACL + "basis: lanl2dz\n", "nacl.yaml")
    proc = _dm21("nacl.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == (
        "nacl.yaml: ok (2 atoms, ClNa, charge 0, multiplicity 1, DM21, lanl2dz, restricted; "
        "ECP: Na lanl2dz (10 core electrons), Cl lanl2dz (10 core electrons); DM21 was trained on "
        "all-electron calculations: DM21 energies with ECPs are outside its training)")
    proc = _dm21("nacl.yaml", "--functional", "b3lyp", cwd=tmp_path)
    assert proc.stdout.splitlines()[0].endswith("restricted; ECP: Na lanl2dz (10 core electrons), "
                                        "Cl lanl2dz (10 core electrons))"), proc.stdout


@pytest.mark.parametrize("content, name", [
    (b"molecule:\n  xyz: |\n    O 0 0 \x00\n", "nul.yaml"),
    (b"molecule:\n  file: w.xyz\n\x00\n", "nul2.yaml"),
])
def test_nul_byte_in_yaml(tmp_path, content, name):
    path = write(tmp_path, content, name)
    with pytest.raises(InputError) as info:
        load_job(path)
    assert info.value.file == path and info.value.line == 3, info.value.render()
    assert "special characters are not allowed (character U+0000)" in info.value.message


def _limit_memory():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def test_cli_bad_files_exit_2_without_blocking(tmp_path):
    """FIFOs and devices are refused by a stat, never opened: in subprocesses with a timeout (a
    FIFO would block an open for ever) and a memory limit (/dev/zero read whole fills it)."""
    import os

    os.mkfifo(tmp_path / "fifo.xyz")
    os.mkfifo(tmp_path / "fifo.yaml")
    os.mkfifo(tmp_path / "fifo.chk")
    (tmp_path / "zero.xyz").symlink_to("/dev/zero")
    write(tmp_path, "molecule:\n  file: /dev/zero\n", "zero.yaml")
    write(tmp_path, "molecule:\n  file: fifo.xyz\n", "fifo-file.yaml")
    write(tmp_path, WATER + "scf:\n  guess: fifo.chk\n", "fifo-guess.yaml")
    write(tmp_path, WATER + "scf:\n  guess: /dev/zero\n", "zero-guess.yaml")
    fifo, device = "is a FIFO (named pipe), not a regular file", "is a character device, not a regular file"
    for name, expected in [
        ("fifo.xyz", f"fifo.xyz: {fifo}"),
        ("fifo.yaml", f"fifo.yaml: {fifo}"),
        ("zero.xyz", f"zero.xyz: {device}"),
        ("fifo-file.yaml", f"fifo-file.yaml:2: molecule.file: {fifo}: fifo.xyz"),
        ("zero.yaml", f"zero.yaml:2: molecule.file: {device}: /dev/zero"),
        ("fifo-guess.yaml", f"fifo-guess.yaml:7: scf.guess: guess chkfile {tmp_path / 'fifo.chk'}: {fifo}"),
        ("zero-guess.yaml", f"zero-guess.yaml:7: scf.guess: guess chkfile /dev/zero: {device}"),
    ]:
        proc = subprocess.run([sys.executable, "-m", "dm21cli", "validate", name], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60, preexec_fn=_limit_memory)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.splitlines() == [f"dm21: error: {expected}"], proc.stderr


@pytest.mark.parametrize("args, expected", [
    (["run", "h2.xyz", "--foo"], "dm21: error: No such option '--foo' (see 'dm21 run --help')"),
    (["run", "h2.xyz", "--charge", "x"],
     "dm21: error: Invalid value for '--charge': 'x' is not a valid integer (see 'dm21 run --help')"),
    (["run"], "dm21: error: Missing argument 'FILE' (see 'dm21 run --help')"),
    (["validate"], "dm21: error: Missing argument 'FILE' (see 'dm21 validate --help')"),
    (["frobnicate"], "dm21: error: No such command 'frobnicate' (see 'dm21 --help')"),
    (["scan", "h2.xyz", "--workers", "many"],
     "dm21: error: Invalid value for '--workers': 'many' is not a valid integer (see 'dm21 scan --help')"),
])
def test_cli_usage_errors_are_one_line(tmp_path, args, expected):
    write(tmp_path, WATER_XYZ, "h2.xyz")
    proc = subprocess.run([sys.executable, "-m", "dm21cli", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [expected], proc.stderr
    assert proc.stdout == ""


# ---------------------------------------------------------------------------
# issue 22: what the input means (a lone atom's multiplicity, limits, the environment)
# ---------------------------------------------------------------------------
O_ATOM = "molecule:\n  xyz: O 0 0 0\nbasis: sto-3g\nfunctional: b3lyp\n"


def _qcschema_atom(symbol: str, **molecule) -> str:
    return json.dumps({"schema_name": "qcschema_input", "schema_version": 1,
                       "molecule": {"symbols": [symbol], "geometry": [0, 0, 0], **molecule},
                       "driver": "energy", "model": {"method": "b3lyp", "basis": "sto-3g"}})


def test_a_lone_atom_without_multiplicity_is_its_ground_state(tmp_path):
    """Issue 22: the O atom run without a multiplicity was a singlet.  A lone atom (or atomic
    ion) whose input gives no multiplicity gets its ground state by Hund's rule, from a job
    file, a bare .xyz and a QCSchema AtomicInput without molecular_multiplicity alike; a
    given one is kept, and molecules keep the default 1."""
    spec = load_job(write(tmp_path, O_ATOM))
    assert spec.molecule.multiplicity == 3 and not spec.resolved_restricted()
    assert spec.multiplicity_note() == ("multiplicity 3 for the lone O atom (Hund's rule; set "
                                        "molecule.multiplicity to choose another)")
    null = O_ATOM.replace("O 0 0 0", "O 0 0 0\n  multiplicity: null")  # null: the default
    assert load_job(write(tmp_path, null, "null.yaml")).molecule.multiplicity == 3
    xyz = write(tmp_path, "1\nnitrogen\nN 0 0 0\n", "n.xyz")
    assert load_job(xyz).molecule.multiplicity == 4
    assert load_job(xyz).multiplicity_note().endswith("(Hund's rule; set --multiplicity to choose "
                                                       "another)")
    # ions: the ground state of the ion; the note names its configuration
    ion = load_job(write(tmp_path, O_ATOM.replace("xyz: O 0 0 0", "xyz: Fe 0 0 0\n  charge: 2")))
    assert ion.molecule.multiplicity == 5
    assert ion.multiplicity_note() == ("multiplicity 5 for the lone Fe2+ ion (Hund's rule on 3d6; "
                                       "set molecule.multiplicity to choose another)")
    assert load_job(xyz, {"charge": 1}).molecule.multiplicity == 3  # N+ 2p2
    # given: kept, no note
    given = load_job(write(tmp_path, O_ATOM.replace("O 0 0 0", "O 0 0 0\n  multiplicity: 1")))
    assert given.molecule.multiplicity == 1 and given.multiplicity_note() is None
    assert load_job(xyz, {"multiplicity": 2}).molecule.multiplicity == 2
    # molecules: 1, as before
    assert load_job(write(tmp_path, WATER)).molecule.multiplicity == 1
    # the resolved input states it, so that a rerun (or a scan point) computes the same state
    again = write(tmp_path, yaml.safe_dump(spec.to_resolved_dict()), "again.yaml")
    assert load_job(again).molecule.multiplicity == 3 and load_job(again).multiplicity_note() is None
    # QCSchema: a missing molecular_multiplicity is Hund's; a given one is respected
    qc = load_job(write(tmp_path, _qcschema_atom("O"), "o.json"))
    assert qc.molecule.multiplicity == 3
    assert "set molecule.molecular_multiplicity to choose another" in qc.multiplicity_note()
    qc = load_job(write(tmp_path, _qcschema_atom("O", molecular_multiplicity=1), "o1.json"))
    assert qc.molecule.multiplicity == 1 and qc.multiplicity_note() is None


def test_validate_and_run_say_which_multiplicity_a_lone_atom_got(tmp_path, checkpoints_dir):
    """The commands print the note: `dm21 validate` a line, `dm21 run` a log line (B3LYP,
    STO-3G, grid level 0: about a second), and the result is the triplet."""
    write(tmp_path, "1\noxygen\nO 0 0 0\n", "o.xyz")
    note = "multiplicity 3 for the lone O atom (Hund's rule; set --multiplicity to choose another)"
    proc = _dm21("o.xyz", "--basis", "sto-3g", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "o.xyz: ok (1 atom, O, charge 0, multiplicity 3, DM21, sto-3g, unrestricted)" in proc.stdout
    assert f"o.xyz: {note}" in proc.stdout.splitlines()
    proc = subprocess.run([sys.executable, "-m", "dm21cli", "run", "o.xyz", "--basis", "sto-3g",
                           "--functional", "b3lyp", "--grid-level", "0", "--json"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert note in proc.stderr
    result = json.loads(proc.stdout)
    assert result["molecule"]["molecular_multiplicity"] == 3
    assert result["properties"]["calcinfo_nalpha"] - result["properties"]["calcinfo_nbeta"] == 2


def test_the_ase_calculator_gives_a_lone_atom_its_ground_state(tmp_path):
    """The ASE calculator's default multiplicity is a job file's: a lone O atom is the
    triplet (before: 1, a singlet), a given one is kept, molecules get 1."""
    pytest.importorskip("ase")
    from dm21cli.integrations.ase import DM21Calculator

    o_atom = (np.array([8]), np.zeros((1, 3)))
    water = (np.array([8, 1, 1]), np.array([[0, 0, 0.117], [0, 0.757, -0.469], [0, -0.757, -0.469]]))
    calc = DM21Calculator(functional="b3lyp", basis="sto-3g")
    spec = calc._spec(o_atom)
    assert spec.molecule.multiplicity == 3
    assert spec.multiplicity_note() == ("multiplicity 3 for the lone O atom (Hund's rule; set "
                                        "multiplicity to choose another)")
    assert calc._spec(water).molecule.multiplicity == 1
    assert DM21Calculator(functional="b3lyp", basis="sto-3g", multiplicity=1)._spec(o_atom) \
        .molecule.multiplicity == 1
    # a job file's settings: a multiplicity it does not give is chosen for ASE's atoms
    assert DM21Calculator(write(tmp_path, O_ATOM))._spec(water).molecule.multiplicity == 1


def test_small_rho_cutoff_prunes_the_grid_of_pyscf_functionals(tmp_path):
    """Issue 22: scf.small_rho_cutoff was ignored for PySCF's functionals (the grid was
    built before the SCF, so PySCF never pruned it).  Now it prunes as PySCF's own SCF
    does at its first Fock build: the same grid points and energy as plain PySCF."""
    from pyscf import dft, gto

    from dm21cli.io.outputs.qcschema import fields
    from dm21cli.jobs.run import run_job

    text = (WATER + "basis: sto-3g\nfunctional: b3lyp\nscf:\n  grid_level: 1\n"
            "  small_rho_cutoff: {}\noutputs:\n  molden: false\n")
    runs = {}
    for cutoff in ("null", "1e-3"):
        spec = load_job(write(tmp_path, text.format(cutoff), f"w{cutoff}.yaml"),
                        {"output_dir": str(tmp_path / f"out-{cutoff}")})
        runs[cutoff] = fields(run_job(spec))["properties"]
    mol = gto.M(atom="O 0 0 0.117; H 0 0.757 -0.469; H 0 -0.757 -0.469", basis="sto-3g", verbose=0)
    mf = dft.RKS(mol, xc="b3lyp")
    mf.grids.level = 1
    mf.small_rho_cutoff = 1e-3
    mf.conv_tol = 1e-9
    mf.kernel()
    assert runs["1e-3"]["grid_points"] == mf.grids.weights.size < runs["null"]["grid_points"]
    assert runs["1e-3"]["return_energy"] == pytest.approx(mf.e_tot, abs=1e-8)


def test_a_coordinate_beyond_a_float_is_an_input_error(tmp_path):
    """Issue 22: a coordinate of 10**400 ended with exit 1 (OverflowError) in a QCSchema
    AtomicInput; it is refused naming file, line and field.  In a job file (text) it was
    refused already, as are NaN and infinity in both."""
    big = "1" + "0" * 400
    document = _qcschema_atom("H").replace('"symbols": ["H"], "geometry": [0, 0, 0]',
                                           f'"symbols": ["H", "H"],\n "geometry": [0, 0, 0, 0, 0, {big}]')
    path = write(tmp_path, document, "big.json")
    with pytest.raises(InputError) as info:
        load_job(path)
    assert (info.value.file, info.value.line, info.value.field) == (path, 2, "molecule.geometry[5]")
    assert "is too large (limit 188973 bohr = 100000 Angstrom)" in info.value.message
    for token in (big, "nan", "1e400"):
        with pytest.raises(InputError) as info:
            load_job(write(tmp_path, f"molecule:\n  xyz: |\n    H 0 0 0\n    H 0 0 {token}\n"))
        assert (info.value.line, info.value.field) == (4, "molecule.xyz"), info.value.render()


@pytest.mark.parametrize("variable, value", [
    ("PYSCF_MAX_MEMORY", "lots"), ("PYSCF_MAX_MEMORY", ""), ("PYSCF_MAX_MEMORY", "4e3"),
    ("PYSCF_MAX_MEMORY", "0"), ("SLURM_MEM_PER_NODE", "lots"), ("OMP_NUM_THREADS", "lots"),
    ("OMP_NUM_THREADS", "100000000"), ("OMP_NUM_THREADS", "0"), ("SLURM_CPUS_PER_TASK", "-2"),
])
def test_environment_variables_dm21_reads_are_checked(variable, value):
    """Issue 22: PYSCF_MAX_MEMORY=lots ended with exit 1 (PySCF's int() when it is imported),
    OMP_NUM_THREADS=100000000 with libgomp's out-of-memory abort: each variable dm21 reads
    is an input error naming it; good values (OpenMP's list 4,2 too) pass."""
    from dm21cli.core import resources

    problem = resources.environment_problem({variable: value})
    assert isinstance(problem, InputError) and problem.field == variable
    assert problem.render().startswith(f"{variable}: expected a whole number of ")
    good = {"PYSCF_MAX_MEMORY": "4000", "SLURM_MEM_PER_NODE": "16000", "OMP_NUM_THREADS": "4,2",
            "SLURM_CPUS_PER_TASK": "8"}
    assert resources.environment_problem(good) is None


def test_a_bad_environment_variable_exits_2_before_pyscf_reads_it(tmp_path):
    """The command line: one line naming the variable, exit 2 (before: exit 1); `dm21
    info` still reports, naming the problem."""
    import os

    write(tmp_path, WATER + "basis: sto-3g\nfunctional: b3lyp\n", "water.yaml")
    for variable, value in (("PYSCF_MAX_MEMORY", "lots"), ("OMP_NUM_THREADS", "100000000")):
        env = {**os.environ, variable: value}
        for command in (["validate", "water.yaml"], ["run", "water.yaml"]):
            proc = subprocess.run([sys.executable, "-m", "dm21cli", *command], cwd=tmp_path,
                                  env=env, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 2, proc.stderr
            assert proc.stderr.splitlines() == [
                f"dm21: error: {variable}: expected a whole number of "
                + proc.stderr.split("expected a whole number of ", 1)[1].rstrip("\n")]
        assert not (tmp_path / "outputs").exists()
    env = {**os.environ, "PYSCF_MAX_MEMORY": "lots"}
    proc = subprocess.run([sys.executable, "-m", "dm21cli", "info"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "PYSCF_MAX_MEMORY: expected a whole number" in proc.stdout
