"""``dm21 freq FILE``: harmonic frequencies, IR intensities and thermochemistry from a Hessian
of central differences of analytic gradients."""

from __future__ import annotations

import click

from dm21cli.cli import common


@click.command("freq")
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@common.job_options
@click.option("-o", "--output", "output_dir", default=None, metavar="DIR",
              help="Output directory (default: outputs/<job name>).")
@click.option("--step", type=float, default=None, metavar="BOHR",
              help="Displacement of each atom along x, y and z (freq.step, default 0.005 bohr).")
@click.option("--temperature", "temperatures", default=None, metavar="T1,T2,...",
              help="Temperatures of the thermochemistry in K (freq.temperatures, default 298.15).")
@click.option("--pressure", type=float, default=None, metavar="ATM",
              help="Pressure of the thermochemistry in atm (freq.pressure, default 1).")
@click.option("--symmetry-number", type=int, default=None, metavar="SIGMA",
              help="Rotational symmetry number (freq.symmetry_number; default: from the point group).")
@click.option("--qrrho", is_flag=True, default=None,
              help="Quasi-RRHO treatment of low modes: Grimme's entropy, Head-Gordon's enthalpy "
                   "(freq.qrrho).")
@click.option("--overwrite", is_flag=True,
              help="Accept a changed input in an existing folder (points whose own input did "
                   "not change are still reused).")
@click.option("--json", "as_json", is_flag=True,
              help="Print result.json to stdout (and nothing else there).")
@click.option("--workers", type=int, default=1, show_default=True, metavar="N",
              help="Compute the displaced geometries in N processes (threads divided).")
@click.option("--point", "point", type=int, default=None, metavar="I",
              help="Compute only point I (0: the reference geometry, first; 1 to 6N: the "
                   "displaced ones), e.g. $SLURM_ARRAY_TASK_ID; then --collect.")
@click.option("--dask", "dask_address", default=None, metavar="ADDRESS",
              help="Send the displaced geometries to the Dask scheduler at ADDRESS.")
@click.option("--collect", is_flag=True,
              help="Compute nothing: the Hessian and its analysis from the points on disk.")
@click.option("-v", "--verbose", is_flag=True,
              help="Show every log line of every point (serial runs).")
def freq(file: str, output_dir: str | None, step: float | None, temperatures: str | None,
         pressure: float | None, symmetry_number: int | None, qrrho: bool | None,
         overwrite: bool, as_json: bool, workers: int, point: int | None,
         dask_address: str | None, collect: bool, verbose: bool, checkpoints: str | None,
         **options) -> None:
    """Harmonic frequencies and thermochemistry of FILE (.yaml job file with an optional
    freq: section, .xyz, or a QCSchema AtomicInput) at its geometry.

    The Hessian is the central difference of analytic gradients: every atom moved by
    the step along x, y and z, both ways (6N gradient jobs in displacements/, each from
    the density of the reference geometry in reference/).  Re-running the same command
    resumes: finished points are read from disk.  The folder gets result.json (driver
    hessian), summary.txt (modes and thermochemistry), vibrations.molden (animate it in
    Jmol, Molden or Avogadro) and modes/mode_NN.xyz.  Optimise the geometry first
    (dm21 opt --freq does both).

    \b
    Examples:
      dm21 freq inputs/water-freq.yaml
      dm21 freq water.xyz --basis def2-svp --functional b3lyp --temperature 298.15,500
      dm21 freq inputs/water-freq.yaml --workers 2
      dm21 freq inputs/water-freq.yaml --point $SLURM_ARRAY_TASK_ID   # one point per task
      dm21 freq inputs/water-freq.yaml --collect                      # then the analysis
    """
    from dm21cli.core.errors import InputError
    from dm21cli.io.inputs.load import load_job

    if collect and (point is not None or workers != 1 or dask_address):
        raise InputError("--collect computes nothing; it cannot be combined with --point, "
                         "--workers or --dask", field="--collect")
    if point is not None and (workers != 1 or dask_address):
        raise InputError("--point computes one point; it cannot be combined with --workers or "
                         "--dask", field="--point")
    if dask_address and workers != 1:
        raise InputError("--dask and --workers exclude each other (the Dask workers compute "
                         "the points)", field="--dask")
    temps = None
    if temperatures is not None:
        temps = [t.strip() for t in temperatures.split(",")]
    spec = load_job(file, common.overrides(
        options, output_dir=output_dir, task="freq", step=step, temperature=temps,
        pressure=pressure, symmetry_number=symmetry_number, qrrho=qrrho))
    frequencies(spec, file, checkpoints=checkpoints, overwrite=overwrite, as_json=as_json,
                workers=workers, point=point, dask=dask_address, collect=collect,
                verbose=verbose)


def frequencies(spec, file: str, *, checkpoints: str | None, overwrite: bool, as_json: bool,
                workers: int = 1, point: int | None = None, dask: str | None = None,
                collect: bool = False, verbose: bool = False, kind: str = "minimum",
                show: bool = True, resume_hint: str | None = None) -> None:
    """Run (or collect) the Hessian of `spec` as ``dm21 freq`` does: progress on stderr, the
    result on stdout (unless not `show`: a step of a command that prints another result),
    exit status 4 when a point did not converge.  resume_hint: what an interruption's
    message says continues the run (default: the same dm21 freq command again)."""
    from dm21cli.core.resources import tune_allocator
    from dm21cli.jobs.freq import collect_freq, plan_freq, run_freq

    plan = plan_freq(spec)
    result_path = plan.scan_dir / plan.files["result"]
    tune_allocator()
    reporter = common.Reporter(quiet=False)
    if collect:
        result = collect_freq(plan, kind=kind)
    else:
        with reporter.live(f"dm21 freq {file}"):
            result = run_freq(plan, checkpoints=checkpoints, overwrite=overwrite,
                              reporter=reporter, detail=reporter if verbose else None,
                              workers=workers, point=point, dask=dask, kind=kind,
                              resume_hint=resume_hint)
    if result is None:  # one point of a job array
        click.echo(f"dm21 freq: point {point} done in {plan.scan_dir}; when every point is, "
                   f"run the same command with --collect", err=True)
        return
    common.report_result(reporter, result, as_json=as_json, what="frequency calculation",
                         result_path=result_path, show=show)
