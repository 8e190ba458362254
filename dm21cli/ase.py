"""``from dm21cli.ase import DM21Calculator``: the ASE calculator under the name issue 12 gives it.

A shim: the calculator lives in `dm21cli.integrations.ase` (the manual: docs/howto/ase.md).
Needs the ``ase`` extra (``pip install -e '.[ase]'`` in a clone).
"""

from dm21cli.integrations.ase import DM21Calculator, DM21SCFError, job_atoms

__all__ = ["DM21Calculator", "DM21SCFError", "job_atoms"]
