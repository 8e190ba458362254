"""The ``dm21`` command line: a thin layer over the dm21cli library.

Subcommands live in ``dm21cli/cli/`` and are imported only when invoked,
so ``dm21 --help`` never imports PySCF or TensorFlow.  Errors are turned into
one line on stderr and an exit status here, and only here
(``dm21cli.core.errors.exit_status_for``); ``--traceback`` shows the full trace.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from dm21cli import __version__

#: subcommand name -> "module:attribute", loaded on first use.
SUBCOMMANDS = {
    "run": ("dm21cli.cli.run:run", "Run a single-point calculation (YAML, XYZ or QCSchema JSON input)."),
    "scan": ("dm21cli.cli.scan:scan",
             "Scan a distance, an angle, a dihedral, the electron number or a fractional spin."),
    "opt": ("dm21cli.cli.opt:opt", "Optimise a geometry (geomeTRIC)."),
    "freq": ("dm21cli.cli.freq:freq", "Harmonic frequencies, IR intensities and thermochemistry."),
    "validate": ("dm21cli.cli.validate:validate", "Check an input file without computing."),
    "schema": ("dm21cli.cli.schema:schema", "Print the JSON Schema of job files, for editors."),
    "weights": ("dm21cli.cli.weights:weights", "Find, install, download and verify the DM21 weights."),
    "info": ("dm21cli.cli.info:info", "Versions, weights status, threads and memory."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported when they are invoked."""

    def list_commands(self, ctx):
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx, name):
        if name not in SUBCOMMANDS:
            return None
        target, _ = SUBCOMMANDS[name]
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx, formatter):
        # Short help comes from SUBCOMMANDS so that --help imports nothing.
        rows = [(name, SUBCOMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


_state = {"traceback": False}


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="dm21")
@click.option("--traceback", is_flag=True, envvar="DM21_TRACEBACK",
              help="Show the full Python traceback on errors.")
def cli(traceback: bool) -> None:
    """DM21 neural density functionals from the command line.

    \b
    Examples:
      dm21 run inputs/water.yaml
      dm21 run molecule.xyz --basis def2-svp --functional DM21
      dm21 opt inputs/water-opt.yaml
      dm21 weights list
    """
    _state["traceback"] = traceback


def main(argv: list[str] | None = None) -> None:
    """Run the ``dm21`` command line with `argv` (default: sys.argv); never returns.

    SIGINT and SIGTERM end the command with status 130 (`dm21cli.core.interrupts`),
    also when they arrive after the work is done.
    """
    from dm21cli.cli import common
    from dm21cli.core import interrupts
    from dm21cli.core.errors import DM21Error, ExitStatus, exit_status_for
    from dm21cli.core.resources import settle_blas_threads

    interrupts.install()  # (the console script installed it already, before any import)
    args = sys.argv[1:] if argv is None else list(argv)
    _state["traceback"] = "--traceback" in args or bool(os.environ.get("DM21_TRACEBACK"))
    try:
        settle_blas_threads()  # before anything imports NumPy
        with common.guarded_stdout():  # a closed pipe or a full disk on stdout: the error says so
            rv = cli.main(args=args, prog_name="dm21", standalone_mode=False)
            sys.stdout.flush()
    except click.exceptions.Exit as exc:  # --help, --version
        sys.exit(exc.exit_code)
    except click.exceptions.Abort as exc:  # click's wrapper of KeyboardInterrupt
        cause = exc.__cause__ if isinstance(exc.__cause__, KeyboardInterrupt) else None
        if _state["traceback"] and cause is not None:
            import traceback

            traceback.print_exception(cause)
        message = str(cause) if cause is not None and str(cause) else "interrupted"
        click.echo(f"dm21: error: {message}", err=True)
        interrupts.exit_process(ExitStatus.INTERRUPTED)
    except click.exceptions.NoArgsIsHelpError as exc:  # `dm21`, `dm21 weights`: the help
        exc.show()
        sys.exit(ExitStatus.INPUT_ERROR)
    except click.ClickException as exc:  # usage errors: one line like every other error
        message = " ".join(exc.format_message().split()).removesuffix(".")
        ctx = getattr(exc, "ctx", None)
        command = ctx.command_path if ctx is not None else "dm21"
        click.echo(f"dm21: error: {message} (see '{command} --help')", err=True)
        sys.exit(ExitStatus.INPUT_ERROR)
    except (DM21Error, KeyboardInterrupt, MemoryError, Exception) as exc:  # noqa: BLE001
        status = exit_status_for(exc)
        if _state["traceback"]:
            import traceback

            traceback.print_exc()
        message = str(exc) or exc.__class__.__name__
        if not isinstance(exc, (DM21Error, KeyboardInterrupt)) and interrupts.received():
            # the signal's KeyboardInterrupt turned into another error on its way out, as an
            # extension module's import does ("ImportError: initialization failed"): an
            # interruption, not a bug
            status, message = ExitStatus.INTERRUPTED, interrupts.message()
        elif isinstance(exc, KeyboardInterrupt):
            message = str(exc) if str(exc).startswith("interrupted") else "interrupted"
        elif not isinstance(exc, DM21Error):
            message = f"internal error ({exc.__class__.__name__}): {message}"
            if not _state["traceback"]:
                message += " (run with --traceback for details)"
        click.echo(f"dm21: error: {message}", err=True)
        interrupts.exit_process(status)
    if interrupts.received() is not None:  # a signal whose KeyboardInterrupt was lost
        click.echo(f"dm21: error: {interrupts.message()}", err=True)
        interrupts.exit_process(ExitStatus.INTERRUPTED)
    sys.exit(int(rv or 0))
