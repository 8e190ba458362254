"""``dm21 validate FILE``: check an input file (and options) without computing.

PySCF is imported only when the command runs (inside `dm21cli.io.inputs.validate.validate_job`).
"""

from __future__ import annotations

import click


@click.command("validate")
@click.argument("file", type=click.Path(dir_okay=True, path_type=str))
@click.option("--basis", default=None, metavar="NAME", help="Basis set, overriding the file's.")
@click.option("--functional", default=None, metavar="NAME",
              help="DM21, DM21m, DM21mc, DM21mu or a PySCF/libxc name, overriding the file's.")
@click.option("--charge", type=int, default=None, help="Total charge, overriding the file's.")
@click.option("--multiplicity", type=int, default=None, help="Spin multiplicity 2S+1, overriding the file's.")
@click.option("--solvent", default=None, metavar="NAME|EPS|none",
              help="Implicit solvent (a name, a dielectric constant, or none), overriding the "
                   "file's.")
@click.option("--threads", type=int, default=None,
              help="Threads the job would run with (the memory estimate grows with them; "
                   "default: as dm21 run).")
@click.option("--memory", default=None, metavar="SIZE",
              help="Memory budget to check the job against, e.g. 4GB (default: as dm21 run).")
def validate(file: str, basis: str | None, functional: str | None, charge: int | None,
             multiplicity: int | None, solvent: str | None, threads: int | None,
             memory: str | None) -> None:
    """Check FILE (.yaml/.yml job file or .xyz geometry) without computing anything.

    Prints a summary line (and, for a lone atom whose multiplicity FILE does not
    give, the ground state chosen) and the job's memory estimate, the numbers
    'dm21 run' prints for the same job, and exits 0 when the input is valid;
    otherwise prints every problem found, one line each naming the file, line
    and field, and exits 2 (6 if the memory budget cannot hold the job).
    """
    from dm21cli.core import resources
    from dm21cli.core.errors import InputError
    from dm21cli.io.inputs.basis import ECP_DM21_NOTE, ecp_map, ecp_summary
    from dm21cli.io.inputs.fields import DM21_FUNCTIONALS
    from dm21cli.io.inputs.load import load_job
    from dm21cli.jobs import memory as job_memory
    from dm21cli.jobs.build import build_molecule

    try:
        spec = load_job(file, {"basis": basis, "functional": functional, "charge": charge,
                               "multiplicity": multiplicity, "solvent": solvent,
                               "threads": threads, "memory": memory})
    except InputError as exc:
        # every problem on its own line; the last one goes the way of every error
        *others, last = exc.problems
        for problem in others:
            click.echo(f"dm21: error: {problem.render()}", err=True)
        raise last from None
    mol = spec.molecule
    kind = "restricted" if spec.resolved_restricted() else "unrestricted"
    ecp = ecp_map(spec)
    extra = ""
    if ecp:
        extra = f"; ECP: {ecp_summary(ecp)}"
        functionals = [spec.functional, *((spec.scan.functionals or []) if spec.scan else [])]
        if any(f in DM21_FUNCTIONALS for f in functionals):
            extra += f"; {ECP_DM21_NOTE}"
    if spec.solvent is not None:
        extra += f"; solvent {spec.solvent.label()}"
    click.echo(f"{file}: ok ({mol.natm} atom{'s' if mol.natm != 1 else ''}, {mol.formula()}, "
               f"charge {mol.charge}, multiplicity {mol.multiplicity}, {spec.functional}, "
               f"{spec.basis_label()}, {kind}{extra})")
    note = spec.multiplicity_note()
    if note:
        click.echo(f"{file}: {note}")
    res = resources.resolve(spec.resources.threads, spec.memory_mb())
    need = job_memory.estimate(spec, build_molecule(spec), res["threads"])
    click.echo(f"{file}: memory: {job_memory.summary(need, res['memory_mb'], res['memory_source'])}")
    job_memory.check(res["memory_mb"], need, res["memory_source"])
