"""``dm21 weights``: find, verify, install and download the DM21 checkpoints.

Results go to stdout, progress to stderr.  Failures raise
:class:`dm21cli.core.errors.WeightsError`, which ``dm21cli.cli.main`` turns into
``dm21: error: ...`` and exit status 3.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dm21cli.cli.common import print_if_it_fits, use_rich

_DIR = click.Path(file_okay=False, path_type=Path)
_CHECKPOINTS_HELP = ("Checkpoint root holding DM21/, DM21m/, DM21mc/, DM21mu/ "
                     "(default: $DM21_CHECKPOINTS, then the user data dir).")


def _progress(message: str) -> None:
    click.echo(message, err=True)


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    """A rich table on a terminal wide enough for it (without colour under NO_COLOR), else
    plain aligned columns."""
    if use_rich(sys.stdout):
        from rich.table import Table
        from rich.text import Text

        styles = {"yes": "green", "no": "bold red"}
        table = Table(*header)
        for row in rows:  # Text, not markup: paths may contain "[...]"
            table.add_row(*(Text(cell, style=styles.get(cell, "")) for cell in row))
        if print_if_it_fits(table):
            return
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.ljust(w) for cell, w in zip(row, widths)] + [row[-1]]
        click.echo("  ".join(cells).rstrip())


def _warn_if_shadowed(root: Path) -> None:
    """Tell the user if DM21_CHECKPOINTS points elsewhere than where we installed."""
    from dm21cli.functional.weights import ENV_VAR, resolve_root

    found, source = resolve_root(None)
    if found.expanduser().resolve() != root.resolve():
        click.echo(f"note: the weights will be looked up in {found} ({source}), not in {root}; "
                   f"use --checkpoints {root} or set {ENV_VAR}={root}"
                   if source != "user data dir" else
                   f"note: {root} is not searched by default; "
                   f"use --checkpoints {root} or set {ENV_VAR}={root}", err=True)


@click.group()
def weights() -> None:
    """Find, install, download and verify the DM21 weights.

    \b
    Search order for the checkpoint root (a folder holding DM21, DM21m,
    DM21mc, DM21mu): --checkpoints DIR, then $DM21_CHECKPOINTS, then the
    per-user data folder (see `dm21 weights path`).
    """


@weights.command("list")
@click.option("--checkpoints", type=_DIR, default=None, help=_CHECKPOINTS_HELP)
def list_(checkpoints: Path | None) -> None:
    """Show each variant, where it was found and whether it verifies."""
    from dm21cli.core.errors import WeightsError
    from dm21cli.functional.weights import fix_hint, status

    states = status(checkpoints)
    rows = [[s.variant, "yes" if s.verified else "no", s.source or "-",
             str(s.path) if s.path else "-", s.problem or ""] for s in states]
    _print_table(["variant", "verified", "source", "path", "problem"], rows)
    bad = [s for s in states if not s.verified]
    if bad:
        raise WeightsError(f"{len(bad)} of {len(states)} variants missing or corrupted "
                           f"(first: {bad[0].problem}); {fix_hint(checkpoints)}")


@weights.command("path")
@click.option("--checkpoints", type=_DIR, default=None, help=_CHECKPOINTS_HELP)
def path_(checkpoints: Path | None) -> None:
    """Print the checkpoint root that the search resolves to."""
    from dm21cli.functional.weights import resolve_root

    root, source = resolve_root(checkpoints)
    click.echo(f"({source}{'' if root.is_dir() else '; does not exist yet'})", err=True)
    click.echo(str(root))


@weights.command("install")
@click.option("--from", "source", type=_DIR, required=True,
              help="Folder holding DM21/, DM21m/, DM21mc/, DM21mu/ (e.g. a copy of upstream's checkpoints/).")
@click.option("--dest", type=_DIR, default=None, help="Checkpoint root to install into (default: user data dir).")
def install(source: Path, dest: Path | None) -> None:
    """Copy and verify the checkpoints from a local folder.

    The folder's SHA256SUMS, README.md and ARCHITECTURE.md come along when present
    (a SHA256SUMS is written when it has none).
    """
    from dm21cli.functional.weights import VARIANTS, install_from

    _progress(f"verifying and copying {', '.join(VARIANTS)} from {source}")
    root = install_from(source, dest)
    click.echo(f"installed {', '.join(VARIANTS)} into {root}")
    _warn_if_shadowed(root)


@weights.command("download")
@click.option("--url", default=None, metavar="URL",
              help="Base URL holding DM21/, DM21m/, ... (default: DeepMind's GitHub repository).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=60.0,
              show_default=True, metavar="SECONDS", help="Network timeout per connection/read.")
@click.option("--dest", type=_DIR, default=None, help="Checkpoint root to install into (default: user data dir).")
def download_(url: str | None, timeout_s: float, dest: Path | None) -> None:
    """Download the checkpoints over HTTPS, verify and install them.

    On failure nothing is installed and a destination that did not exist is
    removed again; `dm21 weights install --from DIR` works without the network.
    """
    from dm21cli.functional.weights import UPSTREAM_URL, VARIANTS, download

    root = download(url or UPSTREAM_URL, dest, timeout_s=timeout_s, progress=_progress)
    click.echo(f"downloaded and verified {', '.join(VARIANTS)} into {root}")
    _warn_if_shadowed(root)
