"""Writing results: atomically, never over results silently, in formats chemists open.

Modules: `atomic` (atomic writes: a complete file under its final name, or
none; regular files only; the logs), `jobdir` (one job's output directory:
refusal, overwrite of dm21's own folders only, the ``.dm21-output`` and
``.running`` markers),
`orbitals` (cube, Molden and PySCF chkfile), `summary` (``summary.txt`` and
the terminal table), `vibrations` (a vibrational analysis: Molden file, .xyz movies,
the summary's tables of modes and thermochemistry).  Atomic units inside; Angstrom, eV and Debye only in the
renderings.  Library code: no printing, no ``sys.exit``.
"""

from dm21cli.io.outputs.atomic import (
    atomic_path,
    atomic_write,
    check_output_name,
    finite,
    open_log,
    read_json_object,
    to_builtin,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
    write_text_files_atomic,
    write_yaml_atomic,
)
from dm21cli.io.outputs.jobdir import MARKER_NAME, OUTPUT_MARKER, JobDirectory, RunningMarker
from dm21cli.io.outputs.orbitals import (
    CUBE_KINDS,
    chkfile_bytes,
    cube_grid_shape,
    orbital_label,
    write_cube,
    write_molden,
)
from dm21cli.io.outputs.summary import formula, render_summary, render_table
from dm21cli.io.outputs.vibrations import (
    modes_table_lines,
    thermo_table_lines,
    write_mode_movies,
    write_molden_vibrations,
)

__all__ = [
    "MARKER_NAME", "OUTPUT_MARKER", "RunningMarker", "check_output_name", "open_log",
    "read_json_object", "CUBE_KINDS", "atomic_path", "atomic_write", "write_text_atomic",
    "write_json_atomic", "write_yaml_atomic", "write_bytes_atomic", "write_text_files_atomic",
    "chkfile_bytes", "to_builtin", "finite", "JobDirectory", "cube_grid_shape", "write_cube",
    "write_molden", "orbital_label", "formula", "render_summary", "render_table",
    "write_molden_vibrations", "write_mode_movies", "modes_table_lines", "thermo_table_lines",
]
