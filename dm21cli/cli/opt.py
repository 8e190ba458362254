"""``dm21 opt FILE``: a geometry optimisation (geomeTRIC) from a YAML job file or an .xyz file."""

from __future__ import annotations

import click

from dm21cli.cli import common


@click.command("opt")
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@common.job_options
@click.option("-o", "--output", "output_dir", default=None, metavar="DIR",
              help="Output directory (default: outputs/<job name>).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
@click.option("--restart", is_flag=True,
              help="Continue the optimisation in the output directory from its last complete "
                   "step (after an interruption, a failure or maxiter); an error if there is none.")
@click.option("--maxiter", type=int, default=None, metavar="N",
              help="Most optimisation steps (opt.maxiter, default 100).")
@click.option("--convergence-set", default=None, metavar="NAME",
              help="geomeTRIC's criteria: GAU (default), GAU_LOOSE, GAU_TIGHT, GAU_VERYTIGHT, "
                   "NWCHEM_LOOSE, TURBOMOLE, INTERFRAG_TIGHT (opt.convergence_set).")
@click.option("--ts", is_flag=True,
              help="Search for a transition state (opt.transition; job.task: ts): from the "
                   "Hessian at the start, then the frequencies at the end (one imaginary mode).")
@click.option("--irc", is_flag=True,
              help="Follow the reaction path (geomeTRIC's IRC; opt.irc; job.task: irc) down "
                   "from the transition state to the minimum on each side: from FILE's geometry, "
                   "or with --ts from the one the search finds (in the folder's irc/).")
@click.option("--hessian-every", type=int, default=None, metavar="N",
              help="With --ts: the Hessian again every N accepted steps (opt.hessian_every; "
                   "default 0: at the start only).")
@click.option("--freq", "with_freq", is_flag=True,
              help="Then the harmonic frequencies and thermochemistry at the optimised geometry "
                   "(as dm21 freq, the job's freq: settings), in the folder's freq/.")
@click.option("--json", "as_json", is_flag=True,
              help="Print result.json to stdout (and nothing else there; with --freq, the "
                   "frequency calculation's).")
def opt(file: str, output_dir: str | None, overwrite: bool, restart: bool, maxiter: int | None,
        convergence_set: str | None, ts: bool, irc: bool, hessian_every: int | None,
        with_freq: bool, as_json: bool,
        checkpoints: str | None, **options) -> None:
    """Optimise the geometry of FILE (.yaml job file, its opt: section, or .xyz) with geomeTRIC.

    Each step is a single point with its nuclear gradient, started from the previous
    step's density.  The output directory holds trajectory.xyz (every step),
    final.xyz (the optimised geometry) and result.json with the history.

    \b
    Examples:
      dm21 opt inputs/water-opt.yaml
      dm21 opt h2o.xyz --basis def2-svp --convergence-set GAU_TIGHT
      dm21 opt inputs/water-opt.yaml --restart      # after an interruption
      dm21 opt inputs/water-opt.yaml --freq         # then the frequencies there
      dm21 opt inputs/nh3-ts.yaml --ts              # a transition state, then its frequencies
      dm21 opt inputs/nh3-ts.yaml --ts --hessian-every 5   # its Hessian again every 5 steps
      dm21 opt inputs/nh3-ts.yaml --ts --irc        # then the reaction path down both sides
    """
    from dm21cli.io.inputs.load import load_job

    def load(task, **more):
        return load_job(file, common.overrides(options, output_dir=output_dir, task=task,
                                               maxiter=maxiter, convergence_set=convergence_set,
                                               hessian_every=hessian_every, **more))

    # a job file's task ts (irc) stays a transition-state search (reaction path); any other
    # task becomes opt; --ts and --irc together: the search, then the path from its end
    spec = load("ts" if ts else "irc" if irc else None, irc=True if ts and irc else None)
    if spec.job.task != "opt":
        spec = load("opt")
    optimise_then(spec, file, checkpoints=checkpoints, overwrite=overwrite, restart=restart,
                  as_json=as_json, with_freq=with_freq)


#: the folders of ``dm21 opt --ts --irc``'s output: the frequencies, the reaction path
FREQ_DIR, IRC_DIR = "freq", "irc"


def optimise_then(spec, file: str, *, checkpoints: str | None, overwrite: bool, restart: bool,
                  as_json: bool, with_freq: bool = False) -> None:
    """`optimise`, then (with_freq, and always after a transition-state search) the
    frequencies at the final geometry in the folder's freq/, as ``dm21 freq`` computes them:
    a transition state's classification expects exactly one imaginary mode; a search with
    ``opt.irc`` then follows the reaction path from there, in the folder's irc/, from the
    Hessian in freq/.  --json prints the last result."""
    from dm21cli.core.errors import InputError

    settings = spec.opt_settings()
    ts, irc = settings.transition, settings.irc
    if irc and with_freq and not ts:
        raise InputError("a reaction path ends at two minima, not at one geometry: optimise "
                         "each end (the first and last frames of irc.xyz) with dm21 opt --freq",
                         field="--freq")
    if overwrite and restart:
        raise InputError("--overwrite starts again, --restart continues: give one of them",
                         field="--restart")
    then_irc = ts and irc
    if then_irc:  # the search first; the path (checked now) from its end
        from dm21cli.jobs.freq.ts import irc_spec_at

        irc_spec_at(spec, spec.molecule.coords_bohr(), spec.output_path() / IRC_DIR)
        spec = spec.model_copy(deep=True)
        spec.opt.irc = False
    with_freq = with_freq or ts
    if with_freq:  # (the freq: section checked before the optimisation starts)
        from dm21cli.io.inputs.validate import validate_freq

        validate_freq(spec)
    done = None
    if restart and with_freq:  # an optimisation that converged: its frequencies continue
        from dm21cli.jobs.opt_restart import converged_optimisation

        done = converged_optimisation(spec)
    if done is not None and then_irc and _converged_path(spec.output_path() / IRC_DIR):
        from dm21cli.core.errors import OutputExistsError

        raise OutputExistsError(f"output directory {spec.output_path()} holds a converged "
                                f"search and its reaction path ({IRC_DIR}/): nothing to "
                                f"restart; use --overwrite to start again or -o for another "
                                f"directory")
    if done is not None:
        click.echo(f"dm21 opt: the {'search' if ts else 'optimisation'} in "
                   f"{spec.output_path()} has converged: continuing with its frequencies "
                   f"(finished points are read)", err=True)
        result = done
    else:
        result = optimise(spec, file, checkpoints=checkpoints, overwrite=overwrite,
                          restart=restart, as_json=as_json, show=not (as_json and with_freq))
    if not with_freq:
        return
    from dm21cli.cli.freq import frequencies
    from dm21cli.io.outputs.qcschema import fields
    from dm21cli.jobs.freq.plan import freq_spec_at

    final = fields(result)["molecule"]["geometry_bohr"]
    freq_spec = freq_spec_at(spec, final, spec.output_path() / FREQ_DIR)
    click.echo(f"dm21 opt: the frequencies at the {'transition state' if ts else 'optimised geometry'}"
               f", in {freq_spec.output_path()}", err=True)
    # (the command that continues: this one with --restart, which skips a converged search)
    resume = (f"finished points are kept: continue with "
              f"'{_resume_command(spec, file, with_freq=not ts)}'")
    frequencies(freq_spec, file, checkpoints=checkpoints, overwrite=overwrite,
                as_json=as_json, kind="ts" if ts else "minimum", show=not then_irc,
                resume_hint=resume)
    if then_irc:
        from dm21cli.jobs.freq.ts import irc_spec_at

        path_spec = irc_spec_at(spec, final, spec.output_path() / IRC_DIR)
        click.echo(f"dm21 opt: the reaction path from the transition state, in "
                   f"{path_spec.output_path()} (from the Hessian in {freq_spec.output_path()})",
                   err=True)
        # (a path always walks again from its transition state: an earlier irc/ is replaced
        # when the search is restarted; its Hessian, in freq/, is kept)
        optimise(path_spec, file, checkpoints=checkpoints, overwrite=overwrite or restart,
                 restart=False, as_json=as_json,
                 hessian_at=(freq_spec.output_path(), final), resume_spec=spec)


def _converged_path(folder) -> bool:
    """Whether `folder` holds a reaction path that reached both its minima."""
    import json

    from dm21cli.io.outputs.qcschema import fields

    try:
        document = fields(json.loads((folder / "result.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return False
    return isinstance(document, dict) and document.get("status") == "success"


def optimise(spec, file: str, *, checkpoints: str | None, overwrite: bool, restart: bool,
             as_json: bool, show: bool = True, hessian_at=None, resume_spec=None) -> dict:
    """Run the optimisation of `spec` (task opt) as ``dm21 opt`` does: progress on stderr,
    the result on stdout, exit status 4 when it did not converge.  A transition-state
    search or a reaction path starts from dm21's Hessian (hessian_at: (its folder, the
    geometry there in bohr) of one computed before: `dm21cli.jobs.freq.ts.run_ts`).
    resume_spec: the job whose --restart continues this one (``--ts --irc``'s path: the
    search's, in the folder above), default `spec`."""
    import functools

    from dm21cli.core.resources import tune_allocator
    from dm21cli.jobs.freq.ts import run_ts
    from dm21cli.jobs.opt import run_opt

    tune_allocator()
    reporter = common.Reporter(quiet=False)
    settings = spec.opt_settings()
    what = ("reaction path (IRC)" if settings.irc else "transition-state search"
            if settings.transition else "geometry optimisation")
    with reporter.live(f"dm21 opt {file}"):
        folder, coords = hessian_at or (None, None)
        runner = functools.partial(run_ts, hessian_folder=folder, hessian_coords_bohr=coords) \
            if settings.transition or settings.irc else run_opt
        result = runner(spec, checkpoints=checkpoints, overwrite=overwrite, restart=restart,
                        reporter=reporter,
                        resume_command=_resume_command(resume_spec or spec, file))
    common.report_result(reporter, result, as_json=as_json, what=what,
                         result_path=spec.output_path() / "result.json", show=show)
    return result


#: options of the command that do not go into the command that continues it (-o is added)
_NOT_REPEATED = ("output_dir", "overwrite", "restart", "as_json", "name", "gradient")


def _resume_command(spec, file: str, with_freq: bool = False) -> str:
    """``dm21 opt FILE [the options given] --restart -o DIR``: what continues this
    optimisation (`dm21cli.jobs.opt_restart.restart_command`), with the options of the command
    line that ran it (``dm21 opt`` or ``dm21 run`` of a job with ``task: opt``) that
    ``dm21 opt`` has; with_freq: with ``--freq`` (a job file's ``task: freq`` after ``opt``
    has no such option to repeat)."""
    from dm21cli.jobs.opt_restart import restart_command

    options: list[str] = []
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        known = {param.name for param in opt.params}
        for param in ctx.command.params:
            value = ctx.params.get(param.name)
            if not isinstance(param, click.Option) or param.name in _NOT_REPEATED or \
                    param.name not in known or value is None or value is False:
                continue
            flag = max(param.opts, key=len)
            options += [flag] if param.is_flag else [flag, str(value)]
    if with_freq and "--freq" not in options:
        options.append("--freq")
    return restart_command(spec, file, options)
