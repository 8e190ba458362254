"""A newcomer's route: the command sequences of README and of the manual (docs/, read in the
order of its table of contents), CI running exactly README's test commands, and the checks
a test session makes (compiled kernels, where the weights are).

The manual's pages, code blocks and commands are read by tests/manual_commands.py, which
tests/test_tutorials.py shares to run the tutorials' commands.

Some tests run pytest itself in a subprocess, on a copy of this repository in a
temporary folder: there ``../shared/dm21-checkpoints`` does not exist, as on a
newcomer's machine.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import conftest
from dm21cli.functional import weights
from manual_commands import (DOCS, REPO_ROOT, command_lines, commands, dm21_target,
                             documented_blocks, manual_pages, section_commands, shell_blocks)


# ---------------------------------------------------------------- README and the manual
def test_readme_and_manual_command_sequences_run_in_order_on_a_fresh_clone(monkeypatch):
    """Every dm21 command in the code blocks of README and then of the manual's pages, in
    the order a newcomer runs them in one clone: the files it names exist, and no run or
    scan writes a directory an earlier one wrote (that exits 5), unless it says
    --overwrite.  A scan's directory holds its points: no single-point run may write
    there either."""
    monkeypatch.chdir(REPO_ROOT)
    written: dict[Path, str] = {}
    seen: dict[str, int] = {}
    for source, heading, body in documented_blocks():
        for words in commands(body):
            if words[0] != "dm21" or len(words) < 2:
                continue
            seen[source] = seen.get(source, 0) + 1
            line = " ".join(words)
            sub, target, overwrite = dm21_target(words)
            if sub == "validate":
                assert (REPO_ROOT / words[2]).is_file(), f"{source} '{heading}': {line}: no such file"
            if target is None:
                continue
            key = target.resolve()
            clash = [w for w in written if w == key or key in w.parents or w in key.parents]
            # the same frequency calculation again (other temperatures, say) resumes its folder
            clash = [w for w in clash if not (sub == "freq" and w == key and
                                              written[w].split()[:3] == words[:3])]
            assert overwrite or not clash, (f"{source} '{heading}': `{line}` writes {target}, which "
                                           f"`{written[clash[0]] if clash else ''}` already wrote: exit 5")
            written[key] = line
    assert seen.get("README.md", 0) >= 5, f"README's dm21 commands were not found: {seen}"
    tutorials = {s: n for s, n in seen.items() if s.startswith("docs/tutorials/")}
    assert len(tutorials) == 5 and sum(tutorials.values()) >= 25, f"the tutorials' commands: {seen}"


def test_every_page_of_the_manual_is_read():
    """Every page under docs/ is in the table of contents, once: its commands are
    checked above, and Sphinx builds it."""
    pages = manual_pages()
    assert len(pages) == len(set(pages)), pages
    on_disk = {p for p in DOCS.rglob("*.md") if "_build" not in p.parts}
    assert set(pages) == on_disk, sorted(on_disk ^ set(pages))


def test_the_shell_block_reader_skips_directives_and_reads_indented_headings_never():
    """A MyST directive (```{toctree}) is not a shell block, and what follows its closing
    fence is not one either; a comment line inside a block is not a heading."""
    text = ("# Page\n\n```{toctree}\nfirst\n```\n\nprose\n\n```bash\n# a comment\n"
            "dm21 run a.yaml\n```\n\n## Next\n\n```\ndm21 run b.yaml\n```\n")
    assert shell_blocks(text, level=1) == [("Page", "# a comment\ndm21 run a.yaml\n"),
                                           ("Next", "dm21 run b.yaml\n")]
    batch = "# Job\n\n```bash\n#!/bin/bash\n#SBATCH --array=0-2\ndm21 run a.yaml\n```\n"
    assert shell_blocks(batch, level=1) == []
    assert shell_blocks(batch, level=1, batch=True) == [("Job", "#!/bin/bash\n#SBATCH --array=0-2\n"
                                                                "dm21 run a.yaml\n")]


def test_commands_keep_the_comment_of_their_line():
    """The comment next to a command (where the manual names what it writes) comes with it;
    a `#` inside quotes or a word is not a comment."""
    body = ("dm21 run a.yaml -o 'out#1'   # writes out#1/\n"
            "cd x && dm21 scan b.yaml > log  # two: outputs/b/\n"
            "dm21 info\n# dm21 run c.yaml\n")
    assert command_lines(body) == [(["dm21", "run", "a.yaml", "-o", "out#1"], "writes out#1/"),
                                   (["cd", "x"], "two: outputs/b/"),
                                   (["dm21", "scan", "b.yaml"], "two: outputs/b/"),
                                   (["dm21", "info"], "")]
    assert commands(body) == [words for words, _ in command_lines(body)]


def test_quick_start_commands_name_files_of_the_repository():
    lines = section_commands("Quick start")
    assert lines[0] == "dm21 run inputs/water.yaml"
    for line in lines:
        for word in shlex.split(line):
            if Path(word).suffix in (".yaml", ".yml", ".xyz"):
                assert (REPO_ROOT / word).is_file(), line


@pytest.mark.slow
def test_quick_start_runs_in_order_on_a_copy_of_the_repository(tmp_path, checkpoints_dir):
    """README's Quick start block, run by bash line by line in a copy of the repository,
    with `dm21` on PATH: every line exits 0."""
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    repo = copy_repository(tmp_path)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "dm21").write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m dm21cli \"$@\"\n")
    (bindir / "dm21").chmod(0o755)
    env = session_env(repo, DM21_CHECKPOINTS=str(checkpoints_dir),
                      PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")
    for line in section_commands("Quick start"):
        proc = subprocess.run(["bash", "-o", "pipefail", "-c", line], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, f"{line}: exit {proc.returncode}\n{proc.stderr[-3000:]}"


# ------------------------------------------------------------ CI = README
def test_ci_runs_exactly_the_readme_test_commands():
    """.ci/run runs README's "Tests" commands as written there, and nothing else that
    installs or tests (no other pip, pytest, or weights location)."""
    readme = section_commands("Tests")
    assert any(line.startswith("pip install -e ") for line in readme), readme
    assert readme[-1] == "python -m pytest --durations=20"  # (the slowest tests listed: issue 25)
    script = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    lines = [" ".join(shlex.split(line, comments=True)) for line in script.splitlines()]
    lines = [line for line in lines if line]
    start = lines.index(readme[0])
    assert lines[start:] == readme, f".ci/run ends with {lines[start:]}, README says {readme}"
    for line in lines[:start]:
        assert not re.search(r"(^|\s)(pip3?|pytest)(\s|$)|-m pip|-m pytest", line), line
    assert weights.ENV_VAR not in script  # the tests find the weights themselves


# ------------------------------------------------------------ test sessions
def copy_repository(tmp_path: Path, kernels: bool = True) -> Path:
    """A copy of what a clone holds (package, tests, inputs, manual, pyproject, README), with or
    without the compiled kernels; in tmp_path, where no ../shared folder exists."""
    repo = tmp_path / "repo"
    ignore = ["__pycache__", ".hypothesis", ".pytest_cache", "outputs", "_build"] + ([] if kernels else ["*.so"])
    for name in ("dm21cli", "tests", "inputs", "benchmarks", "docs"):
        shutil.copytree(REPO_ROOT / name, repo / name, ignore=shutil.ignore_patterns(*ignore))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, repo / name)
    assert not (repo.parent / "shared").exists()
    return repo


def session_env(repo: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in (weights.ENV_VAR, "DM21_NO_KERNELS", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = str(repo)  # the copy's dm21cli, as a test session in a clone imports it
    env.update(extra)
    return env


def pytest_in(repo: Path, args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=600)


def test_session_refuses_a_package_without_compiled_kernels(tmp_path):
    """A clone installed with `pip install '.[test]'` (not -e) tests its source folder,
    which has no kernels: the session stops at once and says how to install."""
    if conftest.c_compiler() is None:
        pytest.skip("no C compiler: the kernels cannot be built here, NumPy is the path")
    repo = copy_repository(tmp_path, kernels=False)
    test = "tests/test_examples.py::test_there_are_examples"
    proc = pytest_in(repo, [test], session_env(repo))
    output = proc.stdout + proc.stderr
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, output
    assert f"({repo / 'dm21cli'}) has no compiled kernels" in output
    assert "pip install -e '.[test]'" in output and "DM21_NO_KERNELS=1" in output
    assert "passed" not in output
    # asked for on purpose, the NumPy path is tested (README, Tests): the tests of the
    # kernels themselves are skipped, saying why, and the rest pass
    proc = pytest_in(repo, [test, "tests/test_kernels.py", "-rs"], session_env(repo, DM21_NO_KERNELS="1"))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "9 passed, 20 skipped" in output, output
    assert "DM21_NO_KERNELS is set: the compiled kernels are off, and this test checks them" in output


def test_session_finds_weights_installed_with_dm21_weights_install(tmp_path, checkpoints_dir):
    """No DM21_CHECKPOINTS, no ../shared folder: the tests use the weights that
    `dm21 weights install` put into the user data folder, SHA256SUMS included."""
    repo = copy_repository(tmp_path)
    env = session_env(repo, XDG_DATA_HOME=str(tmp_path / "data"), DM21_NO_KERNELS="1")
    install = subprocess.run([sys.executable, "-m", "dm21cli", "weights", "install", "--from",
                              str(checkpoints_dir)], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=120)
    assert install.returncode == 0, install.stderr
    user_dir = tmp_path / "data" / "dm21cli" / "checkpoints"
    proc = pytest_in(repo, ["tests/test_weights.py::test_checksum_table_matches_the_shared_sha256sums",
                            "tests/test_weights.py::test_load_parameters_returns_float32_arrays_by_tf_name"],
                     env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"dm21 checkpoints: {user_dir} (user data dir)" in proc.stdout
    assert "2 passed" in proc.stdout


def test_checkpoints_for_the_tests_follow_dm21s_search(tmp_path, monkeypatch, checkpoints_dir):
    monkeypatch.delenv(weights.ENV_VAR, raising=False)
    user = weights.user_checkpoints_dir()  # in this test's XDG_DATA_HOME: empty
    fallback = (conftest.FALLBACK_CHECKPOINTS, conftest.SOURCE_FALLBACK)
    assert conftest.find_checkpoints() == (fallback if fallback[0].is_dir() else (user, "user data dir"))
    user.mkdir(parents=True)
    (user / "DM21").symlink_to(checkpoints_dir / "DM21", target_is_directory=True)
    assert conftest.find_checkpoints() == (user, "user data dir")
    monkeypatch.setenv(weights.ENV_VAR, str(tmp_path / "wrong"))  # set: used, as dm21 uses it
    assert conftest.find_checkpoints() == (tmp_path / "wrong", "env DM21_CHECKPOINTS")
    assert conftest.find_checkpoints(tmp_path / "opt") == (tmp_path / "opt", "option")
