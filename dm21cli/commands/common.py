"""Options and terminal output shared by the ``run`` (and later ``scan``) commands."""

from __future__ import annotations

import contextlib
import os
import sys
import time

import click


def job_options(func):
    """The options that override job-file values (same names as YAML keys)."""
    options = [
        click.option("--basis", default=None, metavar="NAME", help="Basis set (e.g. def2-svp)."),
        click.option("--functional", default=None, metavar="NAME",
                     help="DM21, DM21m, DM21mc, DM21mu or any PySCF/libxc functional (b3lyp, pbe0, ...)."),
        click.option("--charge", type=int, default=None, help="Total charge."),
        click.option("--multiplicity", type=int, default=None, help="Spin multiplicity 2S+1."),
        click.option("--name", default=None, metavar="NAME",
                     help="Job name (default: the input file's name); output goes to outputs/NAME."),
        click.option("--grid-level", type=int, default=None, help="PySCF grid level 0-9 (default 3)."),
        click.option("--legacy-grids", is_flag=True, default=None,
                     help="Radial grids of PySCF <= 2.6 (reproduces published DM21 values)."),
        click.option("--dispersion", default=None, metavar="d3bj|none", help="Dispersion correction."),
        click.option("--threads", type=int, default=None,
                     help="Threads (default: OMP_NUM_THREADS, SLURM_CPUS_PER_TASK or all cores)."),
        click.option("--memory", default=None, metavar="SIZE",
                     help="Memory limit, e.g. 4GB or 500MB (default: PYSCF_MAX_MEMORY or half the RAM)."),
        click.option("--checkpoints", default=None, metavar="DIR",
                     help="DM21 checkpoint folder (default: $DM21_CHECKPOINTS, then the user data folder)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def overrides(options: dict, **extra) -> dict:
    """CLI option values as `dm21cli.inputs.load_job` overrides (None = not given)."""
    result = {key: options.get(key) for key in
              ("basis", "functional", "charge", "multiplicity", "name", "grid_level", "legacy_grids",
               "dispersion", "threads", "memory")}
    result.update(extra)
    return result


def use_rich(stream=None) -> bool:
    """Rich output only on a terminal and when NO_COLOR is unset."""
    stream = stream or sys.stderr
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


class Reporter:
    """Progress lines on stderr: a live status line on a terminal, plain lines otherwise."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.rich = use_rich()
        self._status = None
        self._t0 = time.perf_counter()
        if self.rich:
            from rich.console import Console

            self.console = Console(stderr=True)

    @contextlib.contextmanager
    def live(self, title: str):
        if self.rich and not self.quiet:
            with self.console.status(title) as status:
                self._status = status
                try:
                    yield self
                finally:
                    self._status = None
        else:
            yield self

    def __call__(self, message: str) -> None:
        if self.quiet:
            return
        elapsed = time.perf_counter() - self._t0
        if self.rich:
            self.console.log(message)
            if self._status is not None:
                self._status.update(message)
        else:
            click.echo(f"[dm21 {elapsed:7.1f}s] {message}", err=True)

    def show_result(self, result: dict) -> None:
        """The result summary on stdout: a rich table on a terminal, plain text otherwise."""
        from dm21cli import outputs

        if use_rich(sys.stdout):
            from rich.console import Console

            Console().print(outputs.render_table(result))
        else:
            click.echo(outputs.render_summary(result))
