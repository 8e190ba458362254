"""Job input: YAML job files and bare .xyz files, validated before any computation.

`load_job(path, overrides)` reads a ``.yaml``/``.yml`` job file or a bare
``.xyz`` file, applies command-line overrides, validates everything (schema
with pydantic, chemistry with `validate_job`) and returns a `JobSpec`.  Every
problem names the file, the 1-based line and the dotted field
(``scf.conv_tol``) or the command-line option (``--charge``).

Modules: `fields` (scalar coercion, the section base), `xyz` (atom lines),
`files` (bounded reading, YAML with line numbers), `models` (the job model),
`scan_model` (the ``scan:`` section and its distance grammar), `basis`
(functional, basis and ECP names PySCF must know), `validate` (the chemistry
checks), `load` (`load_job`).
"""

from dm21cli.io.inputs.basis import EcpEntry, ecp_map, ecp_summary
from dm21cli.io.inputs.fields import DM21_FUNCTIONALS, parse_memory
from dm21cli.io.inputs.load import OVERRIDE_KEYS, load_job
from dm21cli.io.inputs.models import (
    CUBE_KINDS,
    GUESS_KEYWORDS,
    JobSettings,
    JobSpec,
    Molecule,
    OutputSettings,
    ResourceSettings,
    ScfSettings,
)
from dm21cli.io.inputs.scan_model import ScanSettings, parse_distances
from dm21cli.io.inputs.validate import validate_job
from dm21cli.io.inputs.xyz import Atom, parse_xyz

__all__ = [
    "DM21_FUNCTIONALS", "GUESS_KEYWORDS", "CUBE_KINDS", "OVERRIDE_KEYS",
    "Atom", "JobSettings", "Molecule", "ScfSettings", "OutputSettings", "ResourceSettings",
    "ScanSettings", "JobSpec", "load_job", "validate_job", "parse_xyz", "parse_memory",
    "parse_distances", "EcpEntry", "ecp_map", "ecp_summary",
]
