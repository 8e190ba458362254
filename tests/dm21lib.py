"""Running dm21's jobs in the test process: the library calls the ``dm21`` commands make.

A ``python -m dm21cli`` subprocess (`dm21proc.dm21`) pays for every command the start of
Python and the import of PySCF, dm21cli and geomeTRIC (about a second of CPU, up to 3 s on
a busy 2-core machine).  Tests of the numbers and files a job produces
(energies, result.json, scan.csv, resuming from what is on disk) call here what the
command calls (``dm21cli/cli/*.py``: `load_job` with the command line's overrides, then
`run_job`, `run_opt`, `run_ts`, `load_scan` and `run_scan`, `plan_freq` and `run_freq`),
in this process.  What belongs to the command line itself stays in subprocess tests: the
exit status and the one-line error, stdout and stderr, --help and --version, signals,
worker processes, environment variables read at start, the job array as a shell script
runs it.

Each call runs inside `dm21_process`: the state a `dm21proc.dm21` subprocess starts in
(its working directory, 2 threads, no colour, no DM21_TRACEBACK, DM21_CHECKPOINTS when
given), undone afterwards, with the thread counts of PySCF and of the BLAS libraries that
a job sets (`dm21cli.core.resources.apply_threads`).  OPENBLAS_THREAD_TIMEOUT, which the
command sets before NumPy loads, conftest.py sets for the whole test process.  What the
command line does to its process alone is left out: `dm21cli.core.resources.tune_allocator`
(the process would keep its peak memory until it ends) and the signal handlers of
`dm21cli.core.interrupts`.

The keyword arguments are the commands' options by their Python names (``grid_level=1``
for ``--grid-level 1``, ``output_dir="sc"`` for ``-o sc``, ``angle=("2", "1", "3",
"90,120")`` for ``--angle 2 1 3 90,120``), but ``checkpoints`` is DM21_CHECKPOINTS, as
`dm21proc.dm21_env` sets it, and ``option_checkpoints`` the option ``--checkpoints DIR``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from pathlib import Path

#: what a `dm21proc.dm21` subprocess's environment sets (`dm21proc.dm21_env`)
THREADS = "2"


class Progress:
    """A reporter that keeps the progress lines: what ``dm21`` prints on stderr, one line
    per event, without the ``[dm21  elapsed s]`` stamp (`dm21cli.cli.common.Reporter`)."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, message: str) -> None:
        self.lines.append(message)

    def status(self, text: str | None) -> None:
        """The live status line's phase (a terminal's only): not a line."""

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@contextlib.contextmanager
def dm21_process(cwd: Path, checkpoints=None, xdg_root: Path | None = None):
    """Run the body as in a `dm21proc.dm21` subprocess started in `cwd` (see the module's
    docstring); everything is restored afterwards.  xdg_root: the user data and cache
    folders there (for module-scoped fixtures, which run outside a test's isolated ones)."""
    from pyscf import lib
    from threadpoolctl import threadpool_limits

    env = {"OMP_NUM_THREADS": THREADS, "NO_COLOR": "1", "DM21_TRACEBACK": None}
    if checkpoints is not None:
        env["DM21_CHECKPOINTS"] = str(checkpoints)
    if xdg_root is not None:
        env["XDG_DATA_HOME"] = str(Path(xdg_root) / "data")
        env["XDG_CACHE_HOME"] = str(Path(xdg_root) / "cache")
    saved_env = {name: os.environ.get(name) for name in env}
    saved_cwd = os.getcwd()
    saved_threads = lib.num_threads()
    blas = threadpool_limits(limits=None)  # records the limits, changes nothing
    try:
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        os.chdir(cwd)
        yield
    finally:
        os.chdir(saved_cwd)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        lib.num_threads(saved_threads)
        blas.restore_original_limits()


def _overrides(options: dict) -> dict:
    """`load_job`'s overrides from the command's options, as `dm21cli.cli.common.overrides`
    makes them (the job options, then the command's own)."""
    from dm21cli.cli.common import overrides

    return overrides(options, **options)


def _printed(document: dict) -> dict:
    """A result as ``--json`` prints it and a reader parses it."""
    return json.loads(json.dumps(document, indent=2))


@dataclasses.dataclass
class Done:
    """A finished run, optimisation or frequency calculation: its result.json (as --json
    prints it), its job and its progress lines."""

    result: dict
    spec: object
    progress: Progress

    @property
    def converged(self) -> bool:
        """What the command's exit status 0 says of a result (4: not converged)."""
        from dm21cli.io.outputs.qcschema import fields

        return fields(self.result)["converged"]


def run(file, cwd: Path, *, checkpoints=None, overwrite: bool = False, gradient: bool = False,
        option_checkpoints=None, xdg_root: Path | None = None, **options) -> Done:
    """``dm21 run FILE [options]`` in `cwd`, of a single point (task energy or gradient: the
    command sends a job file whose task is freq or opt on to ``dm21 freq`` or ``dm21 opt``,
    which `freq` and `opt` run here)."""
    from dm21cli.io.inputs.load import load_job
    from dm21cli.jobs.run import run_job

    with dm21_process(cwd, checkpoints, xdg_root):
        spec = load_job(file, _overrides({**options, "task": "gradient" if gradient else None}))
        assert spec.job.task in ("energy", "gradient"), f"{file}: task {spec.job.task}: see run()"
        progress = Progress()
        result = run_job(spec, checkpoints=option_checkpoints, overwrite=overwrite,
                         reporter=progress)
        return Done(_printed(result), spec, progress)


def opt(file, cwd: Path, *, checkpoints=None, overwrite: bool = False, restart: bool = False,
        irc: bool = False, option_checkpoints=None, **options) -> Done:
    """``dm21 opt FILE [options]`` in `cwd`, for an optimisation or a reaction path (--irc)
    that no frequency calculation follows (--ts and --freq run one: the command's)."""
    from dm21cli.io.inputs.load import load_job

    with dm21_process(cwd, checkpoints):
        spec = load_job(file, _overrides({**options, "task": "irc" if irc else None}))
        if spec.job.task != "opt":
            spec = load_job(file, _overrides({**options, "task": "opt"}))
        return _optimise(spec, file, option_checkpoints, overwrite, restart,
                         {**options, "irc": irc})


def _optimise(spec, file, checkpoints, overwrite: bool, restart: bool, options: dict) -> Done:
    """`dm21cli.cli.opt.optimise`'s library call: `run_opt`, or `run_ts` for a reaction path,
    continued by the command that ran it (`restart_command`, with the options given)."""
    from dm21cli.jobs.freq.ts import run_ts
    from dm21cli.jobs.opt import run_opt
    from dm21cli.jobs.opt_restart import restart_command

    settings = spec.opt_settings()
    assert not settings.transition, "a transition-state search is followed by its frequencies: " \
                                    "dm21 opt --ts (tests/dm21proc.py)"
    not_repeated = {"output_dir", "overwrite", "restart", "name", "gradient", "task"}
    flags: list[str] = []
    for name, value in options.items():
        if name in not_repeated or value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        flags += [flag] if value is True else [flag, str(value)]
    progress = Progress()
    runner = run_ts if settings.irc else run_opt
    result = runner(spec, checkpoints=checkpoints, overwrite=overwrite, restart=restart,
                    reporter=progress, resume_command=restart_command(spec, str(file), flags))
    return Done(_printed(result), spec, progress)


def freq(file, cwd: Path, *, checkpoints=None, overwrite: bool = False,
         temperature: str | None = None, option_checkpoints=None, **options) -> Done:
    """``dm21 freq FILE [options]`` in `cwd` (serial: --workers, --point and --collect are
    the command's)."""
    from dm21cli.io.inputs.load import load_job

    temps = None if temperature is None else [t.strip() for t in temperature.split(",")]
    with dm21_process(cwd, checkpoints):
        spec = load_job(file, _overrides({**options, "task": "freq", "temperature": temps}))
        return _frequencies(spec, option_checkpoints, overwrite)


def _frequencies(spec, checkpoints, overwrite: bool) -> Done:
    """`dm21cli.cli.freq.frequencies`'s library call."""
    from dm21cli.jobs.freq import plan_freq, run_freq

    progress = Progress()
    result = run_freq(plan_freq(spec), checkpoints=checkpoints, overwrite=overwrite,
                      reporter=progress, kind="minimum")
    return Done(_printed(result), spec, progress)


@dataclasses.dataclass
class Scanned:
    """A finished ``dm21 scan``: its plan, its report, its progress lines."""

    plan: object
    report: object
    progress: Progress
    cwd: Path

    @property
    def scan_dir(self) -> Path:
        """The scan directory (the plan's is relative to the command's working directory)."""
        return Path(self.cwd) / self.plan.scan_dir

    @property
    def exit_status(self):
        """The command's exit status: the report's (`ScanReport.exit_status`)."""
        return self.report.exit_status

    @property
    def summary(self) -> str:
        """The counts of the command's last line (``4 points: 4 converged (1 read from
        disk)``)."""
        return self.report.summary_line()

    @property
    def document(self) -> dict:
        """scan.json, which --json prints."""
        from dm21cli.jobs.scan import FILES

        return json.loads((self.scan_dir / FILES["json"]).read_text(encoding="utf-8"))

    @property
    def table(self) -> str:
        """The table the command prints (off a terminal: plain columns)."""
        from dm21cli.jobs.scan import render_table_text

        return render_table_text(self.report, self.plan.coordinate)


def scan(file, cwd: Path, *, checkpoints=None, overwrite: bool = False, point: int | None = None,
         collect: bool = False, option_checkpoints=None, **options) -> Scanned:
    """``dm21 scan FILE [options]`` in `cwd`, serially (one point with ``point``, the curve
    from disk with ``collect``); --workers and --dask are the command's."""
    from dm21cli.jobs.scan import collect_scan, load_scan, run_scan

    with dm21_process(cwd, checkpoints):
        plan = load_scan(file, _overrides(options))
        progress = Progress()
        if collect:
            report = collect_scan(plan)
        else:
            report = run_scan(plan, checkpoints=option_checkpoints, overwrite=overwrite,
                              reporter=progress, point=point)
        return Scanned(plan, report, progress, Path(cwd))
