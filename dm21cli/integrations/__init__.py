"""dm21cli inside other programs: `qcengine` (a QCEngine program harness, ``dm21``) and
`ase` (an ASE calculator, `dm21cli.integrations.ase.DM21Calculator`).

Each module imports its program at the top; nothing in dm21cli imports them,
so the program stays an optional dependency.
"""
