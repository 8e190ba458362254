"""``dm21 validate FILE``: check an input file (and options) without computing.

PySCF is imported only when the command runs (inside `dm21cli.inputs.validate_job`).
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
def validate(file: str, basis: str | None, functional: str | None, charge: int | None,
             multiplicity: int | None) -> None:
    """Check FILE (.yaml/.yml job file or .xyz geometry) without computing anything.

    Prints one summary line and exits 0 when the input is valid; otherwise
    prints one error line naming the file, line and field and exits 2.
    """
    from dm21cli.inputs import load_job

    spec = load_job(file, {"basis": basis, "functional": functional,
                           "charge": charge, "multiplicity": multiplicity})
    mol = spec.molecule
    kind = "restricted" if spec.resolved_restricted() else "unrestricted"
    click.echo(f"{file}: ok ({mol.natm} atom{'s' if mol.natm != 1 else ''}, {mol.formula()}, "
               f"charge {mol.charge}, multiplicity {mol.multiplicity}, {spec.functional}, "
               f"{spec.basis_label()}, {kind})")
