"""`dm21 schema`: the JSON Schema of job files (issue 25), checked against the models.

The schema must never flag a file dm21 accepts (an editor's false error), so every
comparison is with the models themselves: for each field and a pool of spellings, the
models accepting a value implies the schema accepting it; where the schema claims to
be exact (keywords, booleans, cube names, plain numbers against their ranges) the two
agree both ways.  Files: every example in inputs/ (read as YAML 1.1 and as YAML 1.2,
the language server's default), the job files written by the other tests, and the
mistakes a user makes, which the schema must reject too.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dm21cli.core.errors import ExitStatus, InputError, OutputLocationError
from dm21cli.io.inputs import schema as schema_module
from dm21cli.io.inputs.fields import DM21_FUNCTIONALS
from dm21cli.io.inputs.load import load_job_data
from dm21cli.io.inputs.models import CUBE_KINDS, TASKS
from dm21cli.io.inputs.opt_model import CONVERGENCE_SETS, COORDSYS
from dm21cli.io.inputs.schema import MODELINE, input_forms, job_schema, schema_text

REPO_ROOT = Path(__file__).resolve().parent.parent
INPUTS = REPO_ROOT / "inputs"
YAML_EXAMPLES = sorted(p for p in INPUTS.iterdir() if p.suffix in (".yaml", ".yml"))
#: the schema as committed, which the examples' first line names
COMMITTED = REPO_ROOT / "docs" / "dm21-input.schema.json"
REGENERATE = "dm21 schema -o docs/dm21-input.schema.json"

SCHEMA = job_schema()
VALIDATOR = jsonschema.Draft7Validator(SCHEMA)
H2 = {"xyz": "H 0 0 0\nH 0 0 0.74"}

_PROPERTY = settings(max_examples=150, deadline=None, derandomize=True,
                     suppress_health_check=list(HealthCheck))


class Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2's core schema, as the YAML language server reads a file by default:
    ``yes``/``on`` and dates are text, ``1e-6`` is a number, ``2:10:0.5`` text."""


Yaml12Loader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in [
        ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
        ("int", r"^[-+]?[0-9]+$", "-+0123456789"),
        ("float", (r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                   r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), "-+0123456789."),
        ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""])]:
    Yaml12Loader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), list(_first))


def as_json(data):
    """The document as JSON holds it (what a schema validates): keys are text."""
    return json.loads(json.dumps(data, default=str))


def readings(text: str) -> dict:
    """A YAML text as YAML 1.1 (PyYAML, as dm21 reads it) and YAML 1.2 (editors) read it."""
    return {"yaml-1.1": yaml.safe_load(text), "yaml-1.2": yaml.load(text, Loader=Yaml12Loader)}


def model_accepts(data) -> bool:
    """Whether the models accept `data` (the structure of a job file; the chemistry,
    which needs PySCF, is `dm21 validate`'s and not the schema's)."""
    try:
        load_job_data(data, label="job.yaml", chemistry=False)
    except InputError:
        return False
    return True


def schema_accepts(data) -> bool:
    return VALIDATOR.is_valid(as_json(data))


def job_with(path: tuple, value) -> dict:
    """A valid job (H2) with the field at `path` (``("scf", "conv_tol")``, ``("basis",)``) set."""
    data: dict = {"molecule": dict(H2)}
    if path[0] == "solvent":  # (a solvent section names its solvent: the field beside it)
        data["solvent"] = {"eps": 78.4} if path[-1] == "name" else {"name": "water"}
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return data


def verdicts(path: tuple, value) -> tuple[bool, bool]:
    data = job_with(path, value)
    return model_accepts(data), schema_accepts(data)


# ------------------------------------------------------------------ the schema itself
def test_schema_is_a_valid_draft7_schema_with_descriptions():
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert SCHEMA["$id"] and SCHEMA["title"] and SCHEMA["description"]
    assert SCHEMA["required"] == ["molecule"] and SCHEMA["additionalProperties"] is False
    for name, definition in SCHEMA["definitions"].items():
        assert definition["additionalProperties"] is False, name
        for key, prop in definition["properties"].items():
            assert prop.get("description"), f"{name}.{key} has no description"
            assert "$ref" not in prop, f"{name}.{key}: draft-07 ignores what stands beside a $ref"
    scf = SCHEMA["definitions"]["ScfSettings"]["properties"]["conv_tol"]["description"]
    assert scf.startswith("Energy convergence threshold [Ha]")  # the model's own text


def _patterns(node) -> list[str]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in ([v] if k == "pattern" else _patterns(v))]
    if isinstance(node, list):
        return [p for v in node for p in _patterns(v)]
    return []


def test_patterns_are_regular_expressions_in_python_and_javascript():
    """The language server runs the patterns as JavaScript RegExps (Unicode mode first),
    jsonschema as Python's: both must compile them."""
    patterns = sorted(set(_patterns(SCHEMA)))
    assert len(patterns) > 10
    for pattern in patterns:
        re.compile(pattern)
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the JavaScript check needs it")
    code = ("const ps = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
            "for (const p of ps) { new RegExp(p, 'u'); } console.log(ps.length);")
    proc = subprocess.run([node, "-e", code], input=json.dumps(patterns), check=False,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(len(patterns))


def test_every_field_of_the_models_has_its_forms():
    """A new key in a model must say how it may be written (`input_forms`); a key the
    models no longer have must go."""
    missing: list[str] = []
    job_schema(missing)
    assert missing == [], f"add these fields to dm21cli.io.inputs.schema.input_forms: {missing}"
    for model, forms in input_forms().items():
        definition = SCHEMA if model == "JobSpec" else SCHEMA["definitions"][model]
        stale = set(forms) - set(definition["properties"])
        assert not stale, f"input_forms has {model}.{sorted(stale)}, which the model does not"


def test_committed_schema_is_what_dm21_schema_prints():
    assert COMMITTED.is_file(), f"{COMMITTED} is missing: run `{REGENERATE}`"
    assert COMMITTED.read_text(encoding="utf-8") == schema_text(), \
        f"{COMMITTED.name} is out of date: run `{REGENERATE}`"


# ------------------------------------------------------------------ files that must pass
@pytest.mark.parametrize("path", YAML_EXAMPLES, ids=lambda p: p.name)
def test_example_validates_and_names_the_schema(path):
    text = path.read_text(encoding="utf-8")
    first = text.splitlines()[0]
    assert first == MODELINE.format("../docs/dm21-input.schema.json"), first
    named = (path.parent / first.split("$schema=", 1)[1]).resolve()
    assert named == COMMITTED.resolve()
    for reading, data in readings(text).items():
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in VALIDATOR.iter_errors(as_json(data))]
        assert errors == [], f"{path.name} read as {reading}: {errors}"


def _suite_job_files() -> list[tuple[str, str]]:
    """(where, text) of the job files the other tests write: their string constants
    that hold a ``molecule:`` section, and test_inputs.py's error cases."""
    found = []
    for path in sorted(Path(__file__).parent.glob("test_*.py")):
        if path.name == Path(__file__).name:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and "molecule:" in node.value:
                found.append((f"{path.name}:{node.lineno}", textwrap.dedent(node.value)))
    from test_inputs import ERROR_CASES

    found += [(f"test_inputs.py ERROR_CASES {case[0]}", case[1]) for case in ERROR_CASES
              if isinstance(case[1], str)]
    return found


def test_job_files_of_the_test_suite_that_the_models_accept_validate():
    """Every job file of the other tests that the models accept (read either way) is
    valid against the schema; the structural mistakes among them are rejected by both."""
    accepted = 0
    for where, text in _suite_job_files():
        try:
            documents = readings(text)
        except yaml.YAMLError:
            continue
        for reading, data in documents.items():
            if not isinstance(data, dict) or not model_accepts(data):
                continue
            accepted += 1
            errors = [e.message for e in VALIDATOR.iter_errors(as_json(data))]
            assert errors == [], f"{where} ({reading}): {errors}\n{text}"
    assert accepted >= 60, f"only {accepted} job files found in the tests"


#: mistakes a user makes: (what, the job's data); the models reject each, and so must the schema
MISTAKES = [
    ("unknown top-level key", {"molecule": H2, "molecul": {}}),
    ("a key in the wrong section", {"molecule": H2, "charge": 1}),
    ("unknown key in scf", {"molecule": H2, "scf": {"conv_tl": 1e-6}}),
    ("unknown key in opt.constraints", {"molecule": H2, "opt": {"constraints": {"fix": ["xyz 1"]}}}),
    ("no molecule", {"basis": "def2-svp"}),
    ("molecule null", {"molecule": None}),
    ("both xyz and file", {"molecule": {**H2, "file": "h2.xyz"}}),
    ("neither xyz nor file", {"molecule": {"charge": 0}}),
    ("text for a number", {"molecule": H2, "scf": {"conv_tol": "small"}}),
    ("a list for a number", {"molecule": H2, "outputs": {"cube_spacing": [0.2]}}),
    ("a mapping for a section's number", {"molecule": H2, "scf": {"max_cycle": {"n": 5}}}),
    ("a fraction for an integer", {"molecule": {**H2, "charge": 0.5}}),
    ("1 for a yes/no key", {"molecule": H2, "outputs": {"molden": 1}}),
    ("a number out of range", {"molecule": H2, "scf": {"grid_level": 10}}),
    ("zero threshold", {"molecule": H2, "scf": {"conv_tol": 0}}),
    ("too many threads", {"molecule": H2, "resources": {"threads": 100000}}),
    ("unknown units", {"molecule": {**H2, "units": "nm"}}),
    ("unknown task", {"molecule": H2, "job": {"task": "optimise"}}),
    ("unknown precision", {"molecule": H2, "scf": {"precision": "half"}}),
    ("unknown convergence set", {"molecule": H2, "opt": {"convergence_set": "TIGHT"}}),
    ("unknown coordinate system", {"molecule": H2, "opt": {"coordsys": "zmat"}}),
    ("unknown dispersion", {"molecule": H2, "dispersion": "d4"}),
    ("dispersion true", {"molecule": H2, "dispersion": True}),
    ("blank functional", {"molecule": H2, "functional": "  "}),
    ("DM21 as the warm start", {"molecule": H2, "scf": {"warm_start": "dm21m"}}),
    ("job name with a slash", {"molecule": H2, "job": {"name": "a/b"}}),
    ("unknown cube", {"molecule": H2, "outputs": {"cubes": ["elf"]}}),
    ("orbital 0", {"molecule": H2, "outputs": {"cubes": "orbital:0"}}),
    ("orbital index 0", {"molecule": H2, "outputs": {"orbitals": [0]}}),
    ("memory unit", {"molecule": H2, "resources": {"memory": "4 GBs"}}),
    ("memory below 1 MB", {"molecule": H2, "resources": {"memory": 0.5}}),
    ("scan range with text", {"molecule": H2, "scan": {"distances": "2:x:1"}}),
    ("scan list with a gap", {"molecule": H2, "scan": {"distances": "1,,2"}}),
    ("negative distance", {"molecule": H2, "scan": {"distances": [-1.0, 2.0]}}),
    ("empty distance list", {"molecule": H2, "scan": {"distances": []}}),
    ("five scanned atoms", {"molecule": H2, "scan": {"atoms": [1, 2, 3, 4, 5]}}),
    ("fraction above 1", {"molecule": H2, "scan": {"fractional_spin": 1.5}}),
    ("unknown constraint", {"molecule": H2, "opt": {"constraints": {"freeze": ["bond 1 2"]}}}),
    ("set without a value", {"molecule": H2, "opt": {"constraints": {"set": ["distance 1 2"]}}}),
    ("Cartesian set", {"molecule": H2, "opt": {"constraints": {"set": ["xyz 1"]}}}),
    ("freeze one atom of a distance",
     {"molecule": H2, "opt": {"constraints": {"freeze": "distance 1"}}}),
    ("temperature 0 K", {"molecule": H2, "freq": {"temperatures": [0]}}),
    ("symmetry number as text", {"molecule": H2, "freq": {"symmetry_number": "2"}}),
    ("unknown quasi-RRHO key", {"molecule": H2, "freq": {"qrrho": {"cutoff": 100}}}),
    ("occupation above 1", {"molecule": H2, "scf": {"occupations": {"alpha": [1.5]}}}),
    ("a basis mapping that is empty", {"molecule": H2, "basis": {}}),
]


@pytest.mark.parametrize("what, data", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_typical_mistakes_are_rejected(what, data):
    assert not model_accepts(data), f"{what}: the models accept it: not a mistake"
    assert not schema_accepts(data), f"{what}: the schema accepts it"


# ------------------------------------------------------------------ field by field
_SCALARS = [
    None, True, False, 0, 1, 2, 3, -1, 9, 10, 59, 60, 61, 100, 1000, 1024, 1025, 10_000, 10_001,
    10**12, 10**12 + 1, -0.5, 0.0, 1e-20, 0.0000999, 0.0001, 0.001, 0.0011, 0.005, 0.1, 0.1001,
    0.2, 0.5, 1.0, 1.5, 2.5, 4.0, 1000.5, 1e5, 100000.5, 1e6, 1000001.0,
    "1e-6", " 4 ", "4.0", "1_000", "1d-3", "+2", ".5", "5.", "-3", "0", "4.5", "inf", "nan",
    "0x10", "1e999", "", "  ", "x",
    "yes", "No", "ON", " off ", "True", "tRuE", "y", "1",
    "angstrom", "Bohr", "AU", "a.u.", "Ang", "a", "nm", "mixed", " Float64 ", "double", "single",
    "half", "energy", "Gradient", "opt", "FREQ", "ts", "irc", "optimise", "GAU", "gau_tight",
    "NWCHEM_LOOSE", "tight", "tric", "TRIC-P", "cart", "zmat", "auto", "MINAO", "1e", "atom",
    "guess.chk", "DM21", "dm21mc", "DM21MU", "b3lyp", "b88,lyp", "d3bj", "D3(BJ)", "d3-bj", "d4",
    "none", "null", "false",
    "density", "Spin-Density", "spin density", "spin_density", "homo", " LUMO", "orbital:5",
    "orbital 5a", "ORBITAL:12B", "orbital:0", "orbital:05", "orbital:5c", "orbital5", "orbital-5",
    "water", "water-2.x", ".", "..", "a/b", "my job", "x" * 201, "2024-01-05",
    "4GB", "500 mb", "2 GiB", "4 GBs", "1.5t", "0.5", "4gib", "10kb", "1e3MB", "4 ki",
    "2:10:0.5", "0.9,1.0", "1,,2", "2:x:1", "0:1:0.25", "1:2", "-1,2", "0,0.5,1",
    "xyz 1", "XYZ 1-3", "xy 1,3,5-7 # fixed", "distance 1 2", "Distance 1 2 1.5", "angle 2 1 3",
    "angle 2 1 3 104.5", "dihedral 1 2 3 4 180", "# a comment", "bond 1 2", "distance 1",
    "xyz 1 2", "distance 1 2 x",
]
_COMPOSITES = [
    [], [1, 2], [1], [2, 1], [0, 1], [1, 2, 3], ["1", "2"], [0.5, 0.5], [1.5], [298.15, 400.0],
    [-1.0, 2.0], [2.0, 2.5, 3.0], ["2.0", 2.5], ["density", "homo"], ["orbital:5", 3],
    ["DM21", "b3lyp"], [[1]], [None], ["xyz 1", "distance 1 2"], [["distance", 1, 2]], ["bond 1 2"],
    ["D", "13C"], {}, {"I": "cc-pvdz-pp", "default": "def2-svp"}, {"H": ""}, {"5": 2, "6": 3},
    {"-1": 2}, {"x": 2}, {"5": 0}, {"entropy": "grimme"}, {"entropy": "Grimme"},
    {"cutoff_cm1": "100"}, {"cutoff_cm1": 0}, {"enthalpy": "head-gordon", "cutoff_cm1": 50},
    {"foo": 1}, {"1": "D"}, {"alpha": [1]}, {"alpha": [1], "beta": 0.5},
    {"freeze": ["xyz 1"]}, {"set": "angle 2 1 3 104.5"},
]
_POOL = _SCALARS + _COMPOSITES


def _fields() -> list[tuple]:
    """Every field of the job file as a path, but the molecule's atoms (xyz, file)."""
    out = []
    for model, forms in input_forms().items():
        section = {"JobSpec": (), "JobSettings": ("job",), "Molecule": ("molecule",),
                   "ScfSettings": ("scf",), "Occupations": ("scf", "occupations"),
                   "OutputSettings": ("outputs",), "ResourceSettings": ("resources",),
                   "ScanSettings": ("scan",), "OptSettings": ("opt",),
                   "Constraints": ("opt", "constraints"), "FreqSettings": ("freq",),
                   "SolventSettings": ("solvent",)}[model]
        out += [(*section, key) for key in forms if (model, key) not in
                (("Molecule", "xyz"), ("Molecule", "file"))]
    return out


@pytest.mark.parametrize("path", _fields(), ids=lambda p: ".".join(p))
def test_the_models_accepting_a_value_implies_the_schema_does(path):
    wrong = [value for value in _POOL if verdicts(path, value) == (True, False)]
    assert wrong == [], f"{'.'.join(path)}: the schema rejects what the models accept: {wrong}"


#: (field, values) where the schema is exact: it accepts a value if and only if the models do
EXACT = {
    ("job", "task"): _SCALARS, ("molecule", "units"): _SCALARS, ("scf", "precision"): _SCALARS,
    ("opt", "coordsys"): _SCALARS, ("opt", "convergence_set"): _SCALARS,
    ("scf", "restricted"): _SCALARS, ("outputs", "molden"): _SCALARS, ("scan", "relax"): _SCALARS,
    ("dispersion",): _SCALARS, ("outputs", "cubes"): _POOL,
    # (JSON does not tell 4.0 from 4: an integer-valued float is an integer to the schema)
    ("freq", "qrrho"): _POOL,
    ("freq", "symmetry_number"): [v for v in _POOL if not isinstance(v, float)],
    ("scf", "warm_start"): _POOL, ("job", "name"): [v for v in _POOL if not isinstance(v, float)],
}
_NUMBERS = [v for v in _SCALARS if isinstance(v, (int, float)) and not isinstance(v, bool)]
#: fields whose plain numbers the schema checks against the models' ranges
RANGES = [("scf", "conv_tol"), ("scf", "max_cycle"), ("scf", "max_attempts"), ("scf", "grid_level"),
          ("scf", "small_rho_cutoff"), ("outputs", "cube_spacing"), ("outputs", "cube_margin"),
          ("outputs", "orbitals"), ("resources", "threads"), ("resources", "memory"),
          ("molecule", "multiplicity"), ("opt", "maxiter"), ("opt", "hessian_every"),
          ("opt", "convergence_gmax"), ("freq", "step"), ("freq", "temperatures"),
          ("freq", "pressure"), ("freq", "imaginary_threshold"), ("scan", "distances"),
          ("scan", "electrons"), ("scan", "fractional_spin"), ("scf", "occupations", "alpha")]


#: scan values: in a list (one number from 60 on may be YAML 1.1's reading of a range,
#: `dm21cli.io.inputs.schema._values`); the model rounds them to 1e-9 first
SCAN_VALUES = [("scan", "distances"), ("scan", "electrons"), ("scan", "fractional_spin")]


@pytest.mark.parametrize("path", [*EXACT, *RANGES], ids=lambda p: ".".join(p))
def test_the_schema_agrees_with_the_models_where_it_is_exact(path):
    values = EXACT.get(path, _NUMBERS)
    if path in RANGES and path[-1] in ("max_cycle", "max_attempts", "grid_level", "threads",
                                       "maxiter", "hessian_every", "multiplicity", "orbitals"):
        values = [v for v in values if isinstance(v, int) or v == int(v)]
    if path in SCAN_VALUES:
        values = [[v] for v in values if abs(v) > 1e-9]
    differ = {repr(v): verdicts(path, v) for v in values}
    differ = {v: f"models {m}, schema {s}" for v, (m, s) in differ.items() if m != s}
    assert differ == {}, f"{'.'.join(path)}: {differ}"


# ------------------------------------------------------------------ generated spellings
def _text(alphabet: str, max_size: int = 12):
    return st.text(alphabet=st.sampled_from(list(alphabet)), max_size=max_size)


@_PROPERTY
@given(st.sampled_from([("scf", "conv_tol"), ("molecule", "charge"), ("scf", "max_cycle")]),
       _text(" \t0123456789.eEdD+-_xin", 10))
def test_numbers_as_text_that_the_models_read_match_the_pattern(path, text):
    """Numbers written as text: what the models read as a number (a float, an integer)
    matches the schema's pattern, and what matches it Python's float() reads (perhaps as
    infinity, which the models refuse)."""
    model, schema = verdicts(path, text)
    assert schema or not model, f"{'.'.join(path)}: {text!r}"
    if re.search(schema_module.NUMBER_TEXT["pattern"], text):
        float(text.strip().replace("d", "e").replace("D", "E"))


#: keyword fields and words to misspell for them: theirs, their aliases, and some they do not know
_KEYWORDS = {
    ("job", "task"): (*TASKS, "optimise"),
    ("molecule", "units"): ("angstrom", "bohr", "ang", "a", "au", "a.u.", "nm"),
    ("scf", "precision"): ("mixed", "float64", "float32", "double", "single", "half"),
    ("opt", "coordsys"): (*COORDSYS, "zmat"),
    ("opt", "convergence_set"): (*CONVERGENCE_SETS, "TIGHT"),
    ("outputs", "molden"): ("true", "yes", "on", "false", "no", "off", "y", "1"),
    ("dispersion",): ("d3bj", "D3(BJ)", "none", "null", "false", "off", "no", "d4"),
    ("outputs", "cubes"): (*CUBE_KINDS, "orbital:5", "orbital:12b", "orbital:0", "elf"),
    ("scf", "warm_start"): (*DM21_FUNCTIONALS, "b3lyp", "none", "off"),
    ("job", "name"): ("water", "water-2.x", "..", "a/b"),
}


@st.composite
def _spellings(draw) -> tuple[tuple, str]:
    """A keyword field and one of its words in another spelling: its case changed here and
    there, blanks around it, and at most one character put in ('_', '-', '(', ':', a blank,
    a letter) or taken out."""
    path = draw(st.sampled_from(sorted(_KEYWORDS)))
    word = draw(st.sampled_from(_KEYWORDS[path]))
    out = "".join(c.swapcase() if draw(st.booleans()) else c for c in word)
    edit = draw(st.sampled_from(["", "", "drop", "add"]))
    if edit == "drop" and out:
        k = draw(st.integers(0, len(out) - 1))
        out = out[:k] + out[k + 1:]
    elif edit == "add":
        k = draw(st.integers(0, len(out)))
        out = out[:k] + draw(st.sampled_from(list("_-(: \tab1."))) + out[k:]
    return path, draw(st.sampled_from(["", "", " ", "\t"])) + out + draw(st.sampled_from(["", "", " "]))


@settings(_PROPERTY, max_examples=400)
@given(_spellings())
def test_keyword_spellings_agree_with_the_models(spelling):
    path, text = spelling
    model, schema = verdicts(path, text)
    assert model == schema, f"{'.'.join(path)}: {text!r}: models {model}, schema {schema}"


_LENIENT_TEXT = [(("resources", "memory"), " 0123456789.eE+-kKmMgGtTiIbB"),
                 (("scan", "distances"), " 0123456789.,:-e"),
                 (("scan", "fractional_spin"), " 0123456789.,:-e"),
                 (("opt", "constraints", "freeze"), " 0123456789,-#xyzdistanceglhr"),
                 (("opt", "constraints", "set"), " 0123456789.,-#xyzdistanceglhr"),
                 (("scf", "conv_tol"), " 0123456789.eEdD+-_"),
                 (("scf", "max_cycle"), " 0123456789.eE+-_")]


@_PROPERTY
@given(st.data())
def test_text_the_models_accept_is_valid_in_the_schema(data):
    path, alphabet = data.draw(st.sampled_from(_LENIENT_TEXT))
    text = data.draw(_text(alphabet, 24))
    model, schema = verdicts(path, text)
    assert schema or not model, f"{'.'.join(path)}: {text!r}: the schema rejects what the models accept"


_BASES = [yaml.safe_load(p.read_text(encoding="utf-8")) for p in YAML_EXAMPLES]


@_PROPERTY
@given(st.data())
def test_changed_examples_the_models_accept_are_valid(data):
    """An example from inputs/ with a few of its keys changed to values from the pool:
    whenever the models accept it, the schema does."""
    document = json.loads(json.dumps(data.draw(st.sampled_from(_BASES)), default=str))
    for _ in range(data.draw(st.integers(1, 4))):
        path = data.draw(st.sampled_from(_fields()))
        node = document
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[path[-1]] = data.draw(st.sampled_from(_POOL))
    if model_accepts(document):
        errors = [e.message for e in VALIDATOR.iter_errors(as_json(document))]
        assert errors == [], f"{errors}\n{document}"


# ------------------------------------------------------------------ the command
def test_dm21_schema_prints_the_schema_and_writes_it_atomically(tmp_path):
    from dm21cli.cli.main import cli

    runner = CliRunner()
    result = runner.invoke(cli, ["schema"], catch_exceptions=False)
    assert result.exit_code == 0
    assert result.stdout == schema_text() and json.loads(result.stdout) == SCHEMA
    assert result.stdout.startswith('{\n  "$schema": ')  # indent 2
    target = tmp_path / "dm21-input.schema.json"
    target.write_text("old")
    result = runner.invoke(cli, ["schema", "-o", str(target)], catch_exceptions=False)
    assert result.exit_code == 0 and result.stdout == ""
    assert target.read_text(encoding="utf-8") == schema_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # no temporary left
    result = runner.invoke(cli, ["schema", "-o", str(tmp_path / "missing" / "s.json")])
    assert isinstance(result.exception, OutputLocationError)
    assert result.exception.exit_status == ExitStatus.OUTPUT_ERROR


def test_dm21_schema_imports_neither_pyscf_nor_tensorflow(tmp_path):
    code = textwrap.dedent("""\
        import sys
        from dm21cli.cli.main import main
        try:
            main(["schema", "-o", "s.json"])
        except SystemExit as exc:
            assert exc.code in (0, None), exc.code
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("pyscf", "tensorflow"))
        print("HEAVY=" + ",".join(heavy))
        """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=False,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY=", proc.stdout
    assert json.loads((tmp_path / "s.json").read_text(encoding="utf-8")) == SCHEMA


def test_the_manual_shows_the_command_and_the_modeline():
    """The how-to page "In the editor" (it was README's section)."""
    page = (REPO_ROOT / "docs" / "howto" / "editor-schema.md").read_text(encoding="utf-8")
    assert "dm21 schema -o dm21-input.schema.json" in page
    assert MODELINE.format("dm21-input.schema.json") in page
