"""``dm21 run FILE``: one single-point calculation from a YAML job file or an .xyz file."""

from __future__ import annotations

import click

from dm21cli.cli import common


@click.command("run")
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@common.job_options
@click.option("-o", "--output", "output_dir", default=None, metavar="DIR",
              help="Output directory (default: outputs/<job name>).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
@click.option("--gradient", is_flag=True,
              help="Also compute the nuclear gradient (job.task: gradient), in Hartree/bohr.")
@click.option("--json", "as_json", is_flag=True,
              help="Print result.json to stdout (and nothing else there).")
def run(file: str, output_dir: str | None, overwrite: bool, gradient: bool, as_json: bool,
        checkpoints: str | None, **options) -> None:
    """Run a single point for FILE (.yaml job file, .xyz geometry, or .json QCSchema AtomicInput).

    \b
    Examples:
      dm21 run inputs/water.yaml
      dm21 run h2o.xyz --basis def2-tzvp --functional DM21 --threads 4
      dm21 run inputs/water.yaml --functional b3lyp -o outputs/water-b3lyp
      dm21 run inputs/water-qcschema.json
      dm21 run inputs/water.yaml --gradient -o outputs/water-gradient

    A job file with job.task: opt is optimised as by 'dm21 opt FILE', one with
    job.task: freq gets its frequencies as by 'dm21 freq FILE'.
    """
    from dm21cli.core.resources import tune_allocator
    from dm21cli.io.inputs.load import load_job
    from dm21cli.jobs.run import run_job

    spec = load_job(file, common.overrides(options, output_dir=output_dir,
                                           task="gradient" if gradient else None))
    if spec.job.task == "freq":  # the job file asks for frequencies: as dm21 freq FILE
        from dm21cli.cli.freq import frequencies

        frequencies(spec, file, checkpoints=checkpoints, overwrite=overwrite, as_json=as_json)
        return
    if spec.job.task == "opt":  # the job file asks for an optimisation: as dm21 opt FILE
        from dm21cli.cli.opt import optimise_then

        optimise_then(spec, file, checkpoints=checkpoints, overwrite=overwrite, restart=False,
                      as_json=as_json)
        return
    tune_allocator()
    reporter = common.Reporter(quiet=False)
    with reporter.live(f"dm21 run {file}"):
        result = run_job(spec, checkpoints=checkpoints, overwrite=overwrite, reporter=reporter)
    common.report_result(reporter, result, as_json=as_json, what="SCF",
                         result_path=spec.output_path() / "result.json")
