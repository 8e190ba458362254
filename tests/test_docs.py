"""The manual (docs/) against the code: its input reference covers every key of the models,
its hand-written details name keys that exist, and its exit codes are README's table.

The build itself (``sphinx-build -W``, README "Tests") fails on the same gaps; these
checks need no Sphinx and say which key or section is missing.  The command sequences of
the tutorials are checked in tests/test_setup.py and run by tests/test_tutorials.py (slow).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = REPO_ROOT / "docs"
INPUTS_PAGE = DOCS / "reference" / "inputs.md"
sys.path.insert(0, str(DOCS / "_ext"))

import dm21_inputs  # noqa: E402  (docs/_ext: the extension that renders the input reference)

#: ```{dm21-inputs} PATH``` in a page
DIRECTIVE = re.compile(r"^```\{dm21-inputs\} (\S+)\n```", re.M)


def _rendered() -> list[str]:
    paths = DIRECTIVE.findall(INPUTS_PAGE.read_text(encoding="utf-8"))
    return ["" if p == "." else p for p in paths]


def test_the_input_reference_has_a_table_of_every_section():
    paths = [path for path, _model in dm21_inputs.sections()]
    assert {"", "job", "molecule", "scf", "scf.occupations", "opt.constraints", "freq", "scan",
            "solvent"} <= set(paths)
    assert sorted(_rendered()) == sorted(paths)


@pytest.mark.parametrize("path", [p for p, _m in dm21_inputs.sections()], ids=lambda p: p or ".")
def test_rows_are_the_fields_of_the_model(path):
    """One row per field, with its default as YAML writes it and the unit of its description."""
    model = dict(dm21_inputs.sections())[path]
    rows = dm21_inputs.rows(path)
    assert [r[0] for r in rows] == list(model.model_fields)
    for key, type_text, default, unit, description in rows:
        assert type_text and default and description, (path, key)
        if unit:
            assert f"[{unit}]" in description


def test_rows_say_the_types_defaults_and_units():
    scf = {r[0]: r for r in dm21_inputs.rows("scf")}
    assert scf["conv_tol"][1:4] == ("number | null", "null", "Ha")
    assert scf["precision"][1:3] == ("mixed | float64 | float32", "mixed")
    assert scf["occupations"][1] == "section | null"
    top = {r[0]: r for r in dm21_inputs.rows("")}
    assert top["molecule"][2] == "required" and top["basis"][2] == "def2-svp"
    assert {r[0]: r for r in dm21_inputs.rows("freq")}["temperatures"][2:4] == ("[298.15]", "K")
    with pytest.raises(KeyError, match="no section 'nope'"):
        dm21_inputs.rows("nope")


def test_details_name_keys_of_their_section():
    """The bullets after a section's table ("- `key` ...: meaning", README's former
    tables) name keys of that section, so a renamed key cannot stay in the prose."""
    text = INPUTS_PAGE.read_text(encoding="utf-8")
    sections = dict(dm21_inputs.sections())
    matches = list(DIRECTIVE.finditer(text))
    assert matches
    for match in matches:
        path = "" if match.group(1) == "." else match.group(1)
        end = re.compile(r"^#", re.M).search(text, match.end())
        details = text[match.end():end.start() if end else len(text)]
        for bullet in re.findall(r"^- ((?:`[^`]+`(?:, )?)+) \(", details, re.M):
            for key in re.findall(r"`([^`]+)`", bullet):
                model = sections[path]
                for part in key.split("."):  # (opt: `constraints.freeze`)
                    assert part in model.model_fields, f"{match.group(1)}: {key}"
                    sub = dm21_inputs._model_of(model.model_fields[part].annotation)
                    model = sub if sub is not None else model


def test_the_exit_codes_page_includes_readmes_table():
    """One table, in README (tests/test_exit_codes.py reads it there): the manual includes it."""
    page = (DOCS / "reference" / "exit-codes.md").read_text(encoding="utf-8")
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start = re.search(r"^:start-after: (.+)$", page, re.M).group(1)
    end = re.search(r"^:end-before: (.+)$", page, re.M).group(1)
    assert "```{include} ../../README.md" in page
    assert readme.count(start) == 1 and readme.count(end) == 1
    table = readme[readme.index(start):readme.index(end)]
    assert "| 0 | success (converged) |" in table and "| 130 |" in table
    assert "| status |" not in page  # (not a second copy)


# ---------------------------------------------------------------- the changelog
def test_changelog_versions_are_keep_a_changelog_and_dm21_version_is_the_newest():
    """CHANGELOG.md (issue 25): [Unreleased] first, then one "## [x.y.z] - YYYY-MM-DD" per
    landed capability, newest first, every section under a version; `dm21 --version`, the
    package and pyproject.toml name the newest."""
    import tomllib

    from click.testing import CliRunner

    import dm21cli
    from dm21cli.cli.main import cli

    root = Path(__file__).resolve().parent.parent
    text = (root / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert headings[0] == "[Unreleased]", headings
    versions = []
    for heading in headings[1:]:
        match = re.fullmatch(r"\[(\d+)\.(\d+)\.(\d+)\] - (\d{4}-\d{2}-\d{2})", heading)
        assert match, f"not a version heading: {heading!r}"
        versions.append((tuple(int(g) for g in match.groups()[:3]), match.group(4)))
    assert versions and versions == sorted(versions, reverse=True), versions
    first = text.index("## [Unreleased]")
    assert "\n### " not in text[:first]  # (no section above the versions)
    newest = ".".join(map(str, versions[0][0]))
    assert dm21cli.__version__ == newest
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["version"] == newest
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"dm21, version {newest}"
