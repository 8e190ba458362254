"""File formats at the edges: the job file in (`io.inputs`), the output files out (`io.outputs`).

Angstrom, eV and Debye appear here, at the edges; everything handed to or taken
from the other layers is in atomic units.  Imports `dm21cli.core` (and the
variant names of `dm21cli.functional`) only.
"""
