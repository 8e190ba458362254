"""A newcomer's route: the command sequences of README and of the manual (docs/, read in the
order of its table of contents), CI running exactly README's test commands, and the checks
a test session makes (compiled kernels, where the weights are).

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

REPO_ROOT = Path(__file__).resolve().parent.parent
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
DOCS = REPO_ROOT / "docs"
TOCTREE = re.compile(r"^```\{toctree\}\n(.*?)^```", re.S | re.M)


# ---------------------------------------------------------------- README and the manual
def manual_pages(page: Path = DOCS / "index.md") -> list[Path]:
    """The manual's pages in reading order: `page`, then the pages of its toctrees, each
    followed by its own (depth first, as Sphinx numbers them)."""
    pages = [page]
    for toctree in TOCTREE.findall(page.read_text(encoding="utf-8")):
        for line in toctree.splitlines():
            entry = line.strip()
            if entry and not entry.startswith(":"):
                pages += manual_pages(page.parent / f"{entry}.md")
    return pages


def shell_blocks(text: str, level: int = 2) -> list[tuple[str, str]]:
    """(section heading, body) of every shell code block under a heading of `level` or
    deeper, in order: fences at the start of a line without a language or marked bash/sh,
    except batch-job templates (#SBATCH).  Headings are read outside fences only.
    (README is read with level 2: the block under its title shows the Quick start's first
    command; a page of the manual with level 1, its title.)"""
    blocks, heading, fence, body = [], None, None, []
    for line in text.splitlines(keepends=True):
        if fence is None:
            if line.startswith("```"):
                fence, body = line[3:].strip(), []
            elif re.match(rf"^#{{{level},}} ", line):
                heading = line.lstrip("#").strip()
        elif line.startswith("```"):
            if fence in ("", "bash", "sh") and heading is not None and "#SBATCH" not in "".join(body):
                blocks.append((heading, "".join(body)))
            fence = None
        else:
            body.append(line)
    return blocks


def readme_blocks(text: str = README) -> list[tuple[str, str]]:
    """(section heading, body) of every shell code block of README from "Install" on."""
    return shell_blocks(text, level=2)


def documented_blocks() -> list[tuple[str, str, str]]:
    """(file, section heading, body) of README's shell code blocks, then the manual's, in
    reading order: what a newcomer runs in one clone."""
    out = [("README.md", heading, body) for heading, body in readme_blocks()]
    for page in manual_pages():
        text = page.read_text(encoding="utf-8")
        name = page.relative_to(REPO_ROOT).as_posix()
        out += [(name, heading, body) for heading, body in shell_blocks(text, level=1)]
    return out


def commands(body: str) -> list[list[str]]:
    """The commands of a code block as word lists: comments dropped, `&&` and `;`
    chains split, pipes and redirections cut off."""
    out = []
    for line in body.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:  # not a shell line
            continue
        segment: list[str] = []
        for word in [*words, "&&"]:
            if word not in ("&&", ";"):
                segment.append(word)
                continue
            cut = [i for i, w in enumerate(segment) if w in ("|", ">", ">>")]
            if segment:
                out.append(segment[:cut[0]] if cut else segment)
            segment = []
    return out


def section_commands(heading: str) -> list[str]:
    """The command lines (comments removed) of the first code block under `heading`."""
    for section, body in readme_blocks():
        if section == heading:
            return [" ".join(shlex.split(line, comments=True)) for line in body.splitlines()
                    if shlex.split(line, comments=True)]
    raise AssertionError(f"README.md has no code block under '{heading}'")


def dm21_target(words: list[str]) -> tuple[str, Path | None, bool]:
    """For a `dm21 run/opt/scan/freq/validate ...` command: (subcommand, the directory it
    writes or None, whether it may replace existing results), parsed by dm21's
    own options and resolved as dm21 resolves it."""
    from dm21cli.cli import common
    from dm21cli.cli.freq import freq
    from dm21cli.cli.opt import opt
    from dm21cli.cli.run import run
    from dm21cli.cli.scan import scan
    from dm21cli.io.inputs.load import load_job
    from dm21cli.jobs.scan.plan import plan_scan

    sub, args = words[1], words[2:]
    if sub not in ("run", "scan", "opt", "freq"):
        return sub, None, False
    command = {"run": run, "scan": scan, "opt": opt, "freq": freq}[sub]
    params = command.make_context(sub, list(args)).params
    path = REPO_ROOT / params["file"]
    assert path.is_file(), f"{' '.join(words)}: {params['file']} does not exist in a clone"
    if sub in ("run", "opt", "freq"):
        spec = load_job(path, common.overrides(params, output_dir=params["output_dir"]))
        return sub, spec.output_path(), params["overwrite"] or params.get("restart", False)
    functional, functionals = params.get("functional"), None
    if functional and "," in functional:
        functionals = [f.strip() for f in functional.split(",")]
        params["functional"] = functionals[0]
    spec = load_job(path, common.overrides(params, output_dir=params["output_dir"],
                                           distance=params["distance"],
                                           angle=params["angle"], dihedral=params["dihedral"],
                                           electrons=params["electrons"],
                                           fractional_spin=params["fractional_spin"],
                                           reference_atoms=params["reference_atoms"],
                                           relax=params["relax"]))
    return sub, plan_scan(spec, functionals=functionals).scan_dir, params["overwrite"]


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
