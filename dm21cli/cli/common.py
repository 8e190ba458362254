"""Options and terminal output shared by the ``run``, ``scan`` and ``opt`` commands, and the
guard on stdout that every command writes through."""

from __future__ import annotations

import contextlib
import errno
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
        click.option("--solvent", default=None, metavar="NAME|EPS|none",
                     help="Implicit solvent: a name from PySCF's table (water, methanol, ...; "
                          "solvent.name), a dielectric constant (solvent.eps), or none for the "
                          "gas phase; the model is solvent.model (default IEF-PCM)."),
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
    """CLI option values as `dm21cli.io.inputs.load.load_job` overrides (None = not given)."""
    result = {key: options.get(key) for key in
              ("basis", "functional", "charge", "multiplicity", "name", "grid_level", "legacy_grids",
               "dispersion", "solvent", "threads", "memory")}
    result.update(extra)
    return result


def use_rich(stream=None) -> bool:
    """Rich output (live status line, tables) on a terminal that can redraw a line.

    NO_COLOR (https://no-color.org) only removes colour: rich's Console reads it
    and keeps the display, bold included.  TERM=dumb gets plain output.
    """
    stream = stream or sys.stderr
    return stream.isatty() and os.environ.get("TERM") != "dumb"


def print_if_it_fits(table) -> bool:
    """Print a rich Table on stdout if the terminal is wide enough for it to lose nothing;
    returns whether it did.

    Rich squeezes a table into any width: it folds long words, and below the width of
    its borders and padding it drops the cells' text (``COLUMNS=10`` once left the result
    table of ``dm21 run`` without a single value).  So the table is first rendered
    off-screen at the terminal's width and printed only if every character of its cells
    and headers is there; else the caller prints plain text, which the terminal wraps.
    """
    import collections
    import io

    from rich.console import Console

    console = Console()
    probe = Console(file=io.StringIO(), width=console.width, color_system=None)
    probe.print(table)
    texts = [str(column.header) for column in table.columns]
    texts += [str(cell) for column in table.columns for cell in column.cells]
    needed = collections.Counter(c for text in texts for c in text if not c.isspace())
    shown = collections.Counter(probe.file.getvalue())
    if any(shown[c] < n for c, n in needed.items()):
        return False
    console.print(table)
    return True


def _clock_text(seconds: float) -> str:
    """Elapsed time as m:ss (h:mm:ss from an hour)."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _StatusLine:
    """The live status line: elapsed time and what is being done, rendered anew
    at every refresh of rich's display, so the clock ticks on its own."""

    def __init__(self, reporter: "Reporter"):
        self.reporter = reporter

    def __rich__(self):
        from rich.text import Text

        r = self.reporter
        return Text.assemble((_clock_text(time.perf_counter() - r._t0), "bold"), "  ",
                             (r._phase or r._message).strip(), no_wrap=True, overflow="ellipsis")


class Reporter:
    """Progress on stderr, one line per event (`reporter(message)`).

    In logs and pipes: plain lines ``[dm21  elapsed s] message``.  On a
    terminal: the same lines (no wrapping by rich: the terminal wraps them),
    under a live status line that shows the elapsed time, ticking on its own,
    and the current phase (`reporter.status(text)`, e.g. a DM21 evaluation's
    phase; None goes back to the last line).
    """

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.rich = use_rich()
        self._status = None
        self._t0 = time.perf_counter()
        self._message = ""
        self._phase: str | None = None
        if self.rich:
            from rich.console import Console

            self.console = Console(stderr=True)

    @contextlib.contextmanager
    def live(self, title: str):
        self._message = title
        if self.rich and not self.quiet:
            with self.console.status(_StatusLine(self)) as status:
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
        self._message, self._phase = message, None
        if self.rich:
            from rich.text import Text

            self.console.print(Text.assemble((f"[dm21 {elapsed:7.1f}s]", "dim"), " ", message),
                               soft_wrap=True)
        else:
            click.echo(f"[dm21 {elapsed:7.1f}s] {message}", err=True)

    def status(self, text: str | None) -> None:
        """Show text as the current phase on the live status line (terminal only;
        nothing is printed).  None shows the last line again."""
        self._phase = text

    def show_result(self, result: dict) -> None:
        """The result summary on stdout: a rich table on a terminal wide enough to hold it
        (no cell cut short: ``COLUMNS=10`` once dropped every value), plain text otherwise
        (the terminal wraps its lines, nothing is lost)."""
        from dm21cli.io.outputs.summary import render_summary, render_table

        if use_rich(sys.stdout) and print_if_it_fits(render_table(result)):
            return
        click.echo(render_summary(result))


def report_result(reporter: Reporter, result: dict, *, as_json: bool, what: str,
                  result_path, show: bool = True) -> None:
    """Print a finished run's result.json (``--json``) or its summary (nothing unless
    `show`: a step of a command that prints another result), then raise ConvergenceError
    (exit 4) when it did not converge: `what` names what did not ("SCF", "geometry
    optimisation"), `result_path` where the result is."""
    import json

    from dm21cli.core.errors import ConvergenceError, DM21Error
    from dm21cli.io.outputs.qcschema import fields

    try:
        if not show:
            pass
        elif as_json:
            click.echo(json.dumps(result, indent=2))
        else:
            reporter.show_result(result)
        sys.stdout.flush()
    except DM21Error as exc:
        results_named(exc, result_path)
        raise
    if not fields(result)["converged"]:
        raise ConvergenceError(
            f"{what} did not converge ({result['error']['error_message']}); "
            f"results marked converged: false in {result_path}")


class StdoutGuard:
    """The command's stdout: a write or flush that fails becomes the dm21cli error that
    says so, naming stdout, instead of an unclassified OSError (exit 1) or silence.

    A closed pipe (``dm21 run x.yaml --json | head -1``) is an OutputLocationError
    (exit 8), a full device (``> /dev/full``) a ResourceError (exit 6); both carry
    ``stdout = True``.  After the first failure file descriptor 1 points at /dev/null
    (what is still buffered is dropped instead of failing again at exit), and every
    later write or flush raises the same error again: a caller that swallowed it (click
    probes its streams) cannot make the failure silent.  Everything else is the
    wrapped stream's (``isatty``, ``encoding``, ``fileno``).
    """

    def __init__(self, stream):
        self._stream = stream
        self.error: Exception | None = None

    def write(self, text):
        if self.error is not None:
            raise self.error
        try:
            return self._stream.write(text)
        except OSError as exc:
            raise self._fail(exc) from exc

    def flush(self) -> None:
        if self.error is not None:
            raise self.error
        try:
            self._stream.flush()
        except OSError as exc:
            raise self._fail(exc) from exc

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def _fail(self, exc: OSError) -> Exception:
        from dm21cli.core.errors import DISK_FULL_ERRNOS, OutputLocationError, ResourceError

        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EPIPE:
            error = OutputLocationError(f"writing stdout failed: {reason} (the program reading "
                                        f"the output ended before it was all written)")
        elif exc.errno in DISK_FULL_ERRNOS:
            error = ResourceError(f"writing stdout failed: {reason} (stdout goes to a full disk "
                                  f"or device)")
        else:
            error = OutputLocationError(f"writing stdout failed: {reason}")
        error.stdout = True
        self.error = error
        return error


@contextlib.contextmanager
def guarded_stdout():
    """sys.stdout wrapped in a `StdoutGuard` while the command runs."""
    saved = sys.stdout
    if saved is None or isinstance(saved, StdoutGuard):
        yield
        return
    sys.stdout = StdoutGuard(saved)
    try:
        yield
    finally:
        sys.stdout = saved


def results_named(exc: BaseException, where) -> None:
    """Add to the message of `exc`, if it is a failure to write stdout, where the results
    are (they are complete on disk)."""
    if getattr(exc, "stdout", False):
        exc.args = (f"{exc}; the results are in {where}",)
