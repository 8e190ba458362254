"""``dm21 scan FILE``: a dissociation curve, an angle or dihedral, or fractional charge or
spin: one single point (or, relaxed, one optimisation) per value and functional."""

from __future__ import annotations

import click

from dm21cli.cli import common


@click.command("scan")
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--distance", "distance", default=None, metavar="START:STOP:STEP|D1,D2,...",
              help="Distances in Angstrom: a range with the stop included (2:10:0.5) or a "
                   "comma list (2.0,2.36,3,5); replaces scan.distances.")
@click.option("--angle", "angle", nargs=4, default=None, metavar="I J K START:STOP:STEP|A1,...",
              help="Angle I-J-K (1-based atoms, J the vertex) in degrees, between 0 and 180: a "
                   "range (90:130:10) or a list; the atoms on K's side of J-K turn about J. "
                   "Replaces scan.angles and scan.atoms.")
@click.option("--dihedral", "dihedral", nargs=5, default=None,
              metavar="I J K L START:STOP:STEP|D1,...",
              help="Dihedral I-J-K-L (1-based atoms) in degrees, -180 to 360, kept in [0, 360) "
                   "(-60 is 300): e.g. 0:180:30; the atoms on K's side of J-K turn about the J-K "
                   "axis. Replaces scan.dihedrals and scan.atoms.")
@click.option("--electrons", "electrons", default=None, metavar="START:STOP:STEP|N1,N2,...",
              help="Fractional charge: the electron number N at fixed geometry, e.g. 5:7:0.25 "
                   "(the integers around the range are added); replaces scan.electrons.")
@click.option("--fractional-spin", "fractional_spin", default=None, metavar="START:STOP:STEP|F1,...",
              help="Fractional spin: the fraction f (0 to 1) of one electron moved from alpha to "
                   "beta, e.g. 0:1:0.125 (f = 0 is added); replaces scan.fractional_spin.")
@common.job_options
@click.option("-o", "--output", "output_dir", default=None, metavar="DIR",
              help="Scan directory (default: outputs/<job name>).")
@click.option("--reference-atoms", is_flag=True, default=None,
              help="Also compute the separated fragments (the dissociation limit).")
@click.option("--relax", is_flag=True, default=None,
              help="Relaxed scan: at each value optimise everything else with geomeTRIC "
                   "(the scanned distance, angle or dihedral frozen; the job's opt: settings); "
                   "scan.relax.")
@click.option("--overwrite", is_flag=True,
              help="Accept a changed scan definition in an existing scan directory "
                   "(points whose inputs did not change are still reused).")
@click.option("--json", "as_json", is_flag=True,
              help="Print scan.json to stdout (and nothing else there).")
@click.option("--workers", type=int, default=1, show_default=True, metavar="N",
              help="Compute points in N processes (independent starting guesses, threads divided).")
@click.option("--point", "point", type=int, default=None, metavar="I",
              help="Compute only point I (0-based index in the sorted values), e.g. "
                   "$SLURM_ARRAY_TASK_ID; point 0 also computes the reference fragments.")
@click.option("--dask", "dask_address", default=None, metavar="ADDRESS",
              help="Send the points to the Dask scheduler at ADDRESS (e.g. tcp://10.0.0.5:8786).")
@click.option("--collect", is_flag=True,
              help="Compute nothing: assemble scan.csv/json/png from the points on disk.")
@click.option("-v", "--verbose", is_flag=True, help="Show every log line of every point (serial runs).")
def scan(file: str, distance: str | None, angle: tuple[str, ...] | None,
         dihedral: tuple[str, ...] | None, electrons: str | None, fractional_spin: str | None,
         output_dir: str | None, reference_atoms: bool | None, relax: bool | None,
         overwrite: bool, as_json: bool, workers: int, point: int | None, dask_address: str | None,
         collect: bool, verbose: bool, checkpoints: str | None, **options) -> None:
    """Scan a bond distance, an angle, a dihedral, the electron number or the spin of FILE
    (.yaml job file with an optional scan: section, or .xyz).

    Each point is a full single point in its own directory
    (<scan dir>/<functional>/point-02.500A/, point-104.500deg/, N-05.500/ or f-0.250/,
    named by its value).  Electron-number and fractional-spin scans record each point's
    deviation from the exact straight (or flat) line, in mHa.  Re-running
    the same command resumes: finished points are read from disk.  The curve goes to scan.csv,
    scan.json and scan.png in the scan directory.

    \b
    Examples:
      dm21 scan inputs/h2.yaml
      dm21 scan nacl.yaml --distance 2:10:0.5 --functional DM21,B3LYP
      dm21 scan h2.xyz --distance 0.5,0.74,1,2,3 --basis def2-svp --reference-atoms
      dm21 scan water.yaml --distance 0.8:1.4:0.1 --relax   # the other O-H and the angle relax
      dm21 scan water.yaml --angle 2 1 3 90:130:10
      dm21 scan inputs/h2o2-dihedral.yaml --dihedral 1 2 3 4 0:180:30 --relax -o h2o2-relaxed
      dm21 scan inputs/h2.yaml --workers 2
      dm21 scan inputs/h2.yaml --point $SLURM_ARRAY_TASK_ID   # one point per array task
      dm21 scan inputs/h2.yaml --collect                      # then assemble the curve
      dm21 scan inputs/h2.yaml --dask tcp://scheduler:8786
      dm21 scan inputs/h-fractional-charge.yaml --electrons 0:2:0.25 --functional DM21,B3LYP
      dm21 scan inputs/h-fractional-spin.yaml --fractional-spin 0:1:0.125
    """

    from dm21cli.core.errors import ComputeError, ConvergenceError, DM21Error, ExitStatus, InputError
    from dm21cli.jobs.scan.records import FILES
    from dm21cli.jobs.scan.run import collect_scan, load_scan, run_scan

    if collect and (point is not None or workers != 1 or dask_address):
        raise InputError("--collect computes nothing; it cannot be combined with --point, --workers "
                         "or --dask", field="--collect")
    if point is not None and (workers != 1 or dask_address):
        raise InputError("--point computes one point; it cannot be combined with --workers or --dask",
                         field="--point")
    if dask_address and workers != 1:
        raise InputError("--dask and --workers exclude each other (the Dask workers compute the "
                         "points)", field="--dask")
    if workers < 1:
        raise InputError(f"must be at least 1, got {workers}", field="--workers")

    plan = load_scan(file, common.overrides(options, output_dir=output_dir, distance=distance,
                                            angle=angle, dihedral=dihedral,
                                            electrons=electrons, fractional_spin=fractional_spin,
                                            reference_atoms=reference_atoms, relax=relax))
    if point is not None and not 0 <= point < len(plan.values):
        raise InputError(f"point {point} does not exist: the scan has {len(plan.values)} "
                         f"{plan.coordinate.key.replace('_', ' ')} values (indices 0 to "
                         f"{len(plan.values) - 1})", field="--point")
    reporter = common.Reporter(quiet=False)
    if collect:
        report = collect_scan(plan)
    else:
        with reporter.live(f"dm21 scan {file}"):
            report = run_scan(plan, checkpoints=checkpoints, overwrite=overwrite, reporter=reporter,
                              detail=reporter if verbose else None, workers=workers, point=point,
                              dask=dask_address)
    try:
        _show_report(report, plan, point, as_json)
    except DM21Error as exc:  # stdout cannot be written: say where the curve is
        common.results_named(exc, plan.scan_dir / FILES["csv"])
        raise
    line = f"{report.summary_line()}; curve in {plan.scan_dir / FILES['csv']}"
    if report.exit_status == ExitStatus.COMPUTE_ERROR:
        raise ComputeError(line)
    if report.exit_status == ExitStatus.NOT_CONVERGED:
        raise ConvergenceError(line)
    click.echo(f"dm21 scan: {line}", err=True)


def _show_report(report, plan, point: int | None, as_json: bool) -> None:
    """The scan's table on stdout (scan.json with --json; one point's rows with --point)."""
    import sys

    from dm21cli.jobs.scan.curves import render_table_text
    from dm21cli.jobs.scan.records import FILES

    if point is not None:
        click.echo(render_table_text(report, plan.coordinate))
    elif as_json:
        click.echo((plan.scan_dir / FILES["json"]).read_text(encoding="utf-8"), nl=False)
    else:
        lines = render_table_text(report, plan.coordinate).splitlines()
        if common.use_rich(sys.stdout):  # a terminal: bold header, the rest as plain columns
            lines[0] = click.style(lines[0], bold=True)
        click.echo("\n".join(lines))
    sys.stdout.flush()
