"""The commands README and the manual (docs/) show, read as a newcomer reads them: the pages
in the order of the table of contents, their shell code blocks, the `dm21` commands in them
and the folder each writes.  tests/test_setup.py checks that the sequence can run in one
clone (files exist, no folder written twice); tests/test_tutorials.py runs the tutorials'.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
DOCS = REPO_ROOT / "docs"
TOCTREE = re.compile(r"^```\{toctree\}\n(.*?)^```", re.S | re.M)


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


def shell_blocks(text: str, level: int = 2, batch: bool = False) -> list[tuple[str, str]]:
    """(section heading, body) of every shell code block under a heading of `level` or
    deeper, in order: fences at the start of a line without a language or marked bash/sh,
    except batch-job templates (#SBATCH) unless `batch`.  Headings are read outside fences
    only.  (README is read with level 2: the block under its title shows the Quick start's
    first command; a page of the manual with level 1, its title.)"""
    blocks, heading, fence, body = [], None, None, []
    for line in text.splitlines(keepends=True):
        if fence is None:
            if line.startswith("```"):
                fence, body = line[3:].strip(), []
            elif re.match(rf"^#{{{level},}} ", line):
                heading = line.lstrip("#").strip()
        elif line.startswith("```"):
            if fence in ("", "bash", "sh") and heading is not None \
                    and (batch or "#SBATCH" not in "".join(body)):
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


def command_lines(body: str) -> list[tuple[list[str], str]]:
    """The commands of a code block as (word list, the comment of their line): `&&` and `;`
    chains split, pipes and redirections cut off."""
    out = []
    for line in body.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:  # not a shell line
            continue
        comment = _comment(line)
        segment: list[str] = []
        for word in [*words, "&&"]:
            if word not in ("&&", ";"):
                segment.append(word)
                continue
            cut = [i for i, w in enumerate(segment) if w in ("|", ">", ">>")]
            if segment:
                out.append((segment[:cut[0]] if cut else segment, comment))
            segment = []
    return out


def _comment(line: str) -> str:
    """The comment of a shell line: after the first `#` that starts a word outside quotes."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[i + 1:].strip()
    return ""


def commands(body: str) -> list[list[str]]:
    """The commands of a code block as word lists: comments dropped, `&&` and `;`
    chains split, pipes and redirections cut off."""
    return [words for words, _ in command_lines(body)]


def section_commands(heading: str) -> list[str]:
    """The command lines (comments removed) of the first code block under `heading`."""
    for section, body in readme_blocks():
        if section == heading:
            return [" ".join(shlex.split(line, comments=True)) for line in body.splitlines()
                    if shlex.split(line, comments=True)]
    raise AssertionError(f"README.md has no code block under '{heading}'")


def _job(words: list[str], root: Path):
    """(subcommand, parsed options, job, scan plan or None) of a `dm21 run/opt/scan/freq`
    command run in `root`, as dm21 reads them (a scan through `load_scan`, as `dm21 scan`);
    (subcommand, None, None, None) for others."""
    from dm21cli.cli import common
    from dm21cli.cli.freq import freq
    from dm21cli.cli.opt import opt
    from dm21cli.cli.run import run
    from dm21cli.cli.scan import scan
    from dm21cli.io.inputs.load import load_job
    from dm21cli.jobs.scan import load_scan

    sub, args = words[1], words[2:]
    if sub not in ("run", "scan", "opt", "freq"):
        return sub, None, None, None
    command = {"run": run, "scan": scan, "opt": opt, "freq": freq}[sub]
    params = command.make_context(sub, list(args)).params
    path = root / params["file"]
    assert path.is_file(), f"{' '.join(words)}: {params['file']} does not exist in {root}"
    if sub in ("run", "opt", "freq"):
        extra = {"task": "freq"} if sub == "freq" else {}
        return sub, params, load_job(path, common.overrides(params, output_dir=params["output_dir"],
                                                            **extra)), None
    plan = load_scan(path, common.overrides(params, output_dir=params["output_dir"],
                                            distance=params["distance"], angle=params["angle"],
                                            dihedral=params["dihedral"],
                                            electrons=params["electrons"],
                                            fractional_spin=params["fractional_spin"],
                                            reference_atoms=params["reference_atoms"],
                                            relax=params["relax"]))
    return sub, params, plan.spec, plan


def dm21_target(words: list[str], root: Path = REPO_ROOT) -> tuple[str, Path | None, bool]:
    """For a `dm21 run/opt/scan/freq/validate ...` command run in `root`: (subcommand, the
    directory it writes or None, whether it may replace existing results), parsed by dm21's
    own options and resolved as dm21 resolves it (relative to `root`)."""
    sub, params, spec, plan = _job(words, root)
    if spec is None:
        return sub, None, False
    if plan is not None:
        return sub, root / plan.scan_dir, params["overwrite"]
    return sub, root / spec.output_path(), params["overwrite"] or params.get("restart", False)


def point_count(words: list[str], root: Path = REPO_ROOT) -> int:
    """How many points `dm21 scan ...` or `dm21 freq ...` has: `--point I` takes I from 0 to
    this number minus 1."""
    from dm21cli.jobs.freq import plan_freq

    sub, _params, spec, plan = _job(words, root)
    assert sub in ("scan", "freq"), words
    return len((plan or plan_freq(spec)).values)
