"""Every `dm21` command of the tutorials, run as a reader following them runs it (issue 25).

The tutorials (docs/tutorials/, in the manual's reading order: the toctree of
docs/tutorials/index.md, each page top to bottom) run from the root of a clone.  The slow
test makes one: a temporary folder with a copy of the repository's ``inputs/``, the only
thing the commands read.  ``dm21`` is this repository's package (``python -m dm21cli``, the
package the test session imports), with an isolated home and user data folder and no
``DM21_CHECKPOINTS``: the weights are the ones the first tutorial installs.  Every command
must exit 0 (no tutorial shows one failing) and leave what the text next to it names: the
folder dm21 writes, with the files the pages list for its kind of command, the paths its
comment names, and the file its output is redirected to.

What cannot run as written is handled here, each case with its reason:

- ``dm21 weights download`` needs the internet (CI reaches package registries only): not
  run, and the test asserts that the commands not run are exactly ``NOT_RUN``;
- ``dm21 weights install --from DIR``: DIR is the test session's checkpoint folder, installed
  into the isolated ``XDG_DATA_HOME`` (``PLACEHOLDERS``);
- a Slurm batch script (``#SBATCH``) is run by bash, as Slurm runs it, in a submit folder of
  its own holding the job files it names (``BATCH_FILES`` says where a reader has each):
  once, or once per index of its ``#SBATCH --array`` in order, with ``SLURM_ARRAY_TASK_ID``
  set; then the ``--collect`` command the page gives after it.  ``$HOME/dm21-checkpoints``,
  which a script exports as ``DM21_CHECKPOINTS``, holds the weights.

The slow test (README, "Tests") took 48 and 55 minutes on this project's 2-core machine, with
the default suite running beside it; with ``-s`` it prints each command's wall time as it
finishes, and the slowest at the end.  A fast test checks without computing that every
command is accounted for.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from dm21proc import dm21_env
from manual_commands import (DOCS, REPO_ROOT, command_lines, dm21_target, manual_pages,
                             point_count, shell_blocks)

TUTORIALS = manual_pages(DOCS / "tutorials" / "index.md")[1:]

#: the commands not run, (page, command) -> why; the test asserts that exactly these were skipped
NOT_RUN = {
    ("docs/tutorials/first-run.md", "dm21 weights download"):
        "needs the internet (DeepMind's repository), and CI reaches package registries only; "
        "the next line, `dm21 weights install --from DIR`, installs the same weights and is run",
    ("docs/tutorials/cluster.md", "dm21 scan nacl.yaml --dask tcp://..."):
        "a comment in a Python block: it needs the scheduler of a Dask cluster on Slurm "
        "(dask-jobqueue's SLURMCluster), which CI has not; tests/test_scan.py runs --dask on a "
        "LocalCluster",
}

#: words a page leaves for the reader to fill in: (page, command) -> (word, what it becomes)
PLACEHOLDERS = {
    ("docs/tutorials/first-run.md", "dm21 weights install --from DIR"):
        ("DIR", "the test session's checkpoint folder"),
}

#: the job files batch scripts name without a folder: where a reader of the pages has them
#: (a page's yaml block after the marker, or a file of the clone), and why
BATCH_FILES = {
    "water.yaml": ("docs/tutorials/first-run.md", "`inputs/water.yaml` is this job",
                   "the water job the first tutorial shows in a yaml block"),
    "nacl.yaml": (None, "inputs/nacl.yaml", "not shown in a page: the clone's NaCl job, which "
                                            "the dissociation tutorial scans"),
    "water-freq.yaml": (None, "inputs/water-freq.yaml", "not shown in a page: the clone's job "
                                                        "that the optimisation tutorial's dm21 freq runs"),
}

#: what each kind of command writes into its folder, as the pages list it
SCAN_FILES = ["scan.csv", "scan.json", "scan.png", "scan.log", "scan.definition.json"]  # dissociation.md
RUN_FILES = ["result.json", "summary.txt", "dm21.log"]  # reference/outputs.md (freq: the first two)
OPT_FILES = ["trajectory.xyz", "final.xyz"]  # optimisation.md, "The output directory"
FREQ_FILES = ["vibrations.molden", "modes/mode_01.xyz", "freq.log", "freq.definition.json",
              "reference/result.json"]  # optimisation.md, "The folder"
#: what the listing dissociation.md shows for `dm21 scan inputs/h2plus.yaml` names in it
H2PLUS_LISTING = ["DM21/point-04.000A/", "DM21/reference-moving/", "B3LYP/point-01.000A/"]
H2PLUS_POINT = ["result.json", "summary.txt", "scf.chk", "scan-point.json"]  # in DM21/point-04.000A/

TIMEOUT = 4 * 3600  # seconds for one command (the slowest take minutes)


def page_name(path: Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix()


def yaml_block_after(text: str, marker: str) -> str:
    """The first ```yaml block after `marker` in a page's text."""
    found = re.search(re.escape(marker) + r".*?^```yaml\n(.*?)^```", text, re.S | re.M)
    assert found, f"no yaml block after {marker!r}"
    return found.group(1)


def other_commands(text: str) -> list[str]:
    """dm21 commands in the comments of a page's code blocks in other languages (Python):
    shown to the reader, but not shell commands."""
    out = []
    for language, body in re.findall(r"^```(\w+)\n(.*?)^```", text, re.S | re.M):
        if language not in ("bash", "sh"):
            out += re.findall(r"#.*?\b(dm21 (?:run|scan|opt|freq|validate|info|weights|schema)\b.*)$",
                              body, re.M)
    return [command.strip() for command in out]


def shell_dm21_lines() -> list[tuple[str, str]]:
    """(page, command) of every line of the tutorials' shell fences (plain, bash, sh; batch
    scripts included) that starts with `dm21 `, comments cut: counted by a regular
    expression, not by the reader of `manual_commands`, so that a command that reader missed
    shows up as a difference.  A pipe or redirection and what follows it are cut off."""
    out = []
    for path in TUTORIALS:
        text = path.read_text(encoding="utf-8")
        for language, body in re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
            if language in ("", "bash", "sh"):
                out += [(page_name(path), re.split(r" (?:\||>>?) ", " ".join(shlex.split(line, comments=True)))[0])
                        for line in body.splitlines() if re.match(r"\s*dm21 ", line)]
    return out


def shell_not_run() -> int:
    """How many of NOT_RUN's commands are shell lines (the others are in Python blocks)."""
    return len(set(NOT_RUN) & set(shell_dm21_lines()))


def arrays() -> int:
    """Slurm job arrays in the tutorials: each is followed by the page's --collect command."""
    return sum(len(re.findall(r"^#SBATCH --array=", path.read_text(encoding="utf-8"), re.M))
               for path in TUTORIALS)


@dataclass
class BatchScript:
    """A Slurm script of a page: what it reads, how often it runs, what comes after it."""

    body: str
    files: dict[str, bytes]  # job files for its submit folder
    indices: list[int | None]  # SLURM_ARRAY_TASK_ID of each run (None: not an array)
    dm21: list[tuple[list[str], str, str]]  # its dm21 commands: words, comment, line
    collect: list[str] | None  # the page's --collect command after an array


def batch_script(body: str, text: str, clone: Path) -> BatchScript:
    """A batch script of a page with text `text`, its job files taken from BATCH_FILES
    (`clone`: the folder holding inputs/)."""
    dm21 = [(words, comment, line) for line in body.splitlines()
            for words, comment in command_lines(line) if words[0] == "dm21"]
    assert dm21, f"a batch script without a dm21 command:\n{body}"
    files = {}
    for words, _comment, _line in dm21:
        for name in (w for w in words if w.endswith((".yaml", ".yml", ".xyz", ".json"))):
            assert name in BATCH_FILES, f"where does a reader have {name}? Say so in BATCH_FILES"
            page, where, _why = BATCH_FILES[name]
            files[name] = (yaml_block_after((REPO_ROOT / page).read_text(encoding="utf-8"), where)
                           .encode() if page else (clone / where).read_bytes())
    array = re.search(r"^#SBATCH --array=(\d+)-(\d+)\b", body, re.M)
    indices = list(range(int(array.group(1)), int(array.group(2)) + 1)) if array else [None]
    collect = None
    if array:
        assert len(dm21) == 1, body
        words = dm21[0][0]
        assert words[-2:] == ["--point", "$SLURM_ARRAY_TASK_ID"], words
        collect = [*words[:-2], "--collect"]
        assert " ".join(collect) in text, f"the page does not say `{' '.join(collect)}` after the array"
    return BatchScript(body, files, indices, dm21, collect)


def search_kind(words: list[str], root: Path) -> tuple[bool, bool]:
    """(transition-state search, reaction path) of a dm21 run/opt command, from its options
    and its file's job.task."""
    from dm21cli.io.inputs.load import load_job

    path = next(root / w for w in words[2:] if w.endswith((".yaml", ".yml", ".xyz", ".json")))
    opt = load_job(path).opt
    return "--ts" in words or bool(opt and opt.transition), "--irc" in words or bool(opt and opt.irc)


def named_outputs(words: list[str], comment: str, line: str, root: Path) -> list[Path]:
    """What the text says a dm21 command (its words, the comment and whole `line` it is
    shown on) leaves when run in `root`."""
    sub, target, _overwrite = dm21_target(words, root)
    out = []
    if sub == "weights" and words[2] == "install":
        from dm21cli.functional import weights
        out.append(weights.user_checkpoints_dir() / "DM21" / "saved_model.pb")
    if target is not None and sub == "scan":
        out += [target / name for name in SCAN_FILES]
        if words[2] == "inputs/h2plus.yaml":
            out += [target / name for name in H2PLUS_LISTING]
            out += [target / H2PLUS_LISTING[0] / name for name in H2PLUS_POINT]
    elif target is not None:
        out += [target / name for name in (RUN_FILES if sub != "freq" else RUN_FILES[:2])]
        transition, irc = search_kind(words, root) if sub in ("run", "opt") else (False, False)
        if sub == "opt":
            out += [target / name for name in OPT_FILES]
        if sub == "freq":
            out += [target / name for name in FREQ_FILES]
        if "--freq" in words or transition:  # the frequencies follow, in freq/
            out += [target / "freq" / "result.json", target / "freq" / "vibrations.molden"]
        if transition or irc:  # from a Hessian at the start
            out.append(target / "start-hessian")
        if irc:  # optimisation.md, "The reaction path": in irc/ after a --ts search
            path_dir = target / "irc" if transition else target
            out += [path_dir / "irc.xyz", path_dir / "irc.csv"]
        if "--hessian-every" in words:
            out.append(target / "hessians")
    # the comment: outputs/... (in the clone), (name/) in the command's folder
    out += [root / p.rstrip(".,;:)") for p in re.findall(r"(?<![\w/])outputs/\S+", comment)]
    out += [target / name for name in re.findall(r"\((\w[\w.-]*/)\)", comment) if target]
    # a redirection: the file the output goes to
    shell = shlex.split(line, comments=True)
    out += [root / shell[i + 1] for i, w in enumerate(shell[:-1]) if w in (">", ">>")]
    return out


class Reader:
    """A reader following the tutorials in a clone: runs their commands, keeps the record."""

    def __init__(self, tmp_path: Path, checkpoints: Path):
        self.root = tmp_path / "clone"
        shutil.copytree(REPO_ROOT / "inputs", self.root / "inputs",
                        ignore=shutil.ignore_patterns("__pycache__", "outputs"))
        self.checkpoints = checkpoints
        home = tmp_path / "home"
        home.mkdir()
        # what the batch script exports as DM21_CHECKPOINTS: the reader's copy of the weights
        (home / "dm21-checkpoints").symlink_to(checkpoints, target_is_directory=True)
        bindir = tmp_path / "bin"  # `dm21` on PATH for the batch scripts, as an install puts it
        bindir.mkdir()
        (bindir / "dm21").write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m dm21cli \"$@\"\n")
        (bindir / "dm21").chmod(0o755)
        env = dm21_env()  # XDG_DATA_HOME and XDG_CACHE_HOME are this test's own (conftest)
        for name in [n for n in env if n.startswith("SLURM_")] + ["DM21_CHECKPOINTS"]:
            env.pop(name, None)
        env.update(HOME=str(home), PYTHONPATH=str(REPO_ROOT),
                   PATH=f"{bindir}{os.pathsep}{env['PATH']}")
        self.env = env
        self.batch_dir = tmp_path / "batch"
        self.timings: list[tuple[float, str]] = []
        self.failures: list[str] = []
        self.skipped: dict[tuple[str, str], str] = {}
        self.filled: set[tuple[str, str]] = set()
        self.shown = 0  # commands of the pages run (a batch script's dm21 line counts once)

    def call(self, argv: list[str], cwd: Path, label: str, env: dict | None = None) -> bool:
        """Run one command; record its wall time, and a failure unless it exits 0."""
        start = time.monotonic()
        try:
            proc = subprocess.run(argv, cwd=cwd, env=env or self.env, capture_output=True,
                                  text=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            self.failures.append(f"{label}: still running after {TIMEOUT} s\n{exc.stderr or ''}")
            return False
        seconds = time.monotonic() - start
        self.timings.append((seconds, label))
        print(f"[tutorials] {seconds:8.1f} s  exit {proc.returncode}  {label}", flush=True)
        if proc.returncode != 0:
            self.failures.append(f"{label}: exit {proc.returncode}\n--- stderr (tail) ---\n"
                                 f"{proc.stderr[-3000:]}\n--- stdout (tail) ---\n{proc.stdout[-1500:]}")
        return proc.returncode == 0

    def dm21(self, words: list[str], cwd: Path, label: str) -> bool:
        return self.call([sys.executable, "-m", "dm21cli", *words[1:]], cwd, label)

    def check(self, label: str, paths: list[Path]) -> None:
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            self.failures.append(f"{label}: the text names {missing}, not there afterwards")

    def block(self, page: str, heading: str, body: str) -> None:
        """A shell block's dm21 commands, in the clone."""
        for line in body.splitlines():
            for words, comment in command_lines(line):
                if words[0] != "dm21" or len(words) < 2:
                    continue
                shown = " ".join(words)
                label = f"{page} '{heading}': {shown}"
                if (page, shown) in NOT_RUN:
                    self.skipped[(page, shown)] = NOT_RUN[(page, shown)]
                    print(f"[tutorials]  not run  {label}: {NOT_RUN[(page, shown)]}", flush=True)
                    continue
                argv = words
                if (page, shown) in PLACEHOLDERS:
                    word, _what = PLACEHOLDERS[(page, shown)]
                    argv = [str(self.checkpoints) if w == word else w for w in words]
                    self.filled.add((page, shown))
                before = self.points(words) if "no point recomputed" in comment else None
                self.shown += 1
                if self.dm21(argv, self.root, label):
                    self.check(label, named_outputs(words, comment, line, self.root))
                    if before is not None and self.points(words) != before:
                        self.failures.append(f"{label}: the comment says no point is recomputed, "
                                             "but a point's result.json was written again")

    def points(self, words: list[str]) -> dict[str, int]:
        """The points' result.json in a freq folder (not its own), with modification times."""
        _sub, target, _ = dm21_target(words, self.root)
        return {str(p): p.stat().st_mtime_ns for p in target.glob("*/**/result.json")}

    def batch(self, page: str, heading: str, body: str, text: str, number: int) -> None:
        """A Slurm script run as Slurm runs it (once per array index), in its submit folder."""
        script = batch_script(body, text, self.root)
        submit = self.batch_dir / f"{Path(page).stem}-{number}"
        submit.mkdir(parents=True)
        for name, content in script.files.items():
            (submit / name).write_bytes(content)
        (submit / "job.sh").write_text(body)
        shown = "; ".join(" ".join(words) for words, _c, _l in script.dm21)
        self.shown += len(script.dm21)
        ok = True
        for index in script.indices:
            env = dict(self.env)
            if index is not None:
                env["SLURM_ARRAY_TASK_ID"] = str(index)
            label = (f"{page} '{heading}': batch script {number}"
                     f"{'' if index is None else f' (SLURM_ARRAY_TASK_ID={index})'}: {shown}")
            ok = self.call(["bash", "-e", "job.sh"], submit, label, env) and ok
        if script.collect:  # then the page's --collect: what the array computed, assembled
            self.shown += 1
            label = f"{page} '{heading}': {' '.join(script.collect)}"
            if self.dm21(script.collect, submit, label):
                self.check(label, named_outputs(script.collect, "", " ".join(script.collect), submit))
        elif ok:
            for words, comment, line in script.dm21:
                label = f"{page} '{heading}': batch script {number}: {' '.join(words)}"
                outputs = named_outputs(words, comment, line, submit)
                self.check(label, outputs)
                for path in (p for p in outputs if p.parent == submit and p.suffix == ".json"):
                    if "--json" in words and path.exists() and \
                            "return_result" not in json.loads(path.read_text(encoding="utf-8")):
                        self.failures.append(f"{label}: {path.name} does not hold result.json")


def test_every_tutorial_command_is_accounted_for(tmp_path):
    """Without computing: the tutorials are the five pages; the commands not run and the
    placeholders filled are commands of their pages; each batch script's job files are
    known, an array's --collect is on its page, and its indices are exactly the points of
    its command (--point I exits 2 beyond them)."""
    assert [p.name for p in TUTORIALS] == ["first-run.md", "dissociation.md", "optimisation.md",
                                           "fractional.md", "cluster.md"]
    shown, scripts = set(), 0
    for path in TUTORIALS:
        text = path.read_text(encoding="utf-8")
        for _heading, body in shell_blocks(text, level=1, batch=True):
            if "#SBATCH" not in body:
                shown |= {(page_name(path), " ".join(words)) for words in
                          (w for w, _c in command_lines(body)) if words[0] == "dm21"}
                continue
            scripts += 1
            script = batch_script(body, text, REPO_ROOT)
            folder = tmp_path / str(scripts)
            folder.mkdir()
            for name, content in script.files.items():
                (folder / name).write_bytes(content)
            if script.collect:
                assert script.indices == list(range(point_count(script.collect, folder))), \
                    f"{page_name(path)}: #SBATCH --array for `{' '.join(script.collect)}`"
        shown |= {(page_name(path), command) for command in other_commands(text)}
    assert set(NOT_RUN) <= shown and set(PLACEHOLDERS) <= shown, shown
    assert scripts == 3
    # the reader the slow test runs the pages with finds every dm21 line a regular expression finds
    parsed = [(page_name(path), " ".join(words)) for path in TUTORIALS
              for _heading, body in shell_blocks(path.read_text(encoding="utf-8"), level=1, batch=True)
              for words, _comment in command_lines(body) if words[0] == "dm21"]
    assert parsed == shell_dm21_lines() and arrays() == 2, (parsed, shell_dm21_lines())
    text = (DOCS / "tutorials" / "dissociation.md").read_text(encoding="utf-8")
    listing = text[text.index("\noutputs/h2plus/\n"):]
    listing = listing[:listing.index("```")]
    assert all(name in listing for name in H2PLUS_LISTING + H2PLUS_POINT), listing


@pytest.mark.slow
def test_every_tutorial_command_runs_in_reading_order(tmp_path, checkpoints_dir):
    """The tutorials' dm21 commands in the manual's reading order, each a subprocess in one
    clone: every one exits 0 and leaves what the text names; the commands not run are
    exactly NOT_RUN."""
    started = time.monotonic()
    reader = Reader(tmp_path, checkpoints_dir)
    for path in TUTORIALS:
        text = path.read_text(encoding="utf-8")
        for command in other_commands(text):  # none is a shell command: each must be in NOT_RUN
            reader.skipped[(page_name(path), command)] = NOT_RUN.get((page_name(path), command), "?")
            print(f"[tutorials]  not run  {page_name(path)}: {command}: "
                  f"{NOT_RUN.get((page_name(path), command), 'not in NOT_RUN')}", flush=True)
        scripts = 0
        for heading, body in shell_blocks(text, level=1, batch=True):
            if "#SBATCH" in body:
                scripts += 1
                reader.batch(page_name(path), heading, body, text, scripts)
            else:
                reader.block(page_name(path), heading, body)
    minutes = (time.monotonic() - started) / 60
    print(f"\n[tutorials] {reader.shown} commands of the pages run ({len(reader.timings)} "
          f"processes), {len(reader.skipped)} not run, {minutes:.1f} min; the slowest:\n" +
          "\n".join(f"  {s:8.1f} s  {label}" for s, label in sorted(reader.timings, reverse=True)[:5]),
          flush=True)
    assert reader.skipped == NOT_RUN, f"not run: {reader.skipped}; allowed: {NOT_RUN}"
    assert reader.filled == set(PLACEHOLDERS), f"placeholders filled: {reader.filled}"
    assert not reader.failures, (f"{len(reader.failures)} problems with the tutorials' commands:\n\n"
                                 + "\n\n".join(reader.failures))
    assert reader.shown == len(shell_dm21_lines()) - shell_not_run() + arrays(), reader.shown
