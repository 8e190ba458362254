"""scf.chk: the run's last SCF state, a complete PySCF chkfile at every moment.

`ScfCheckpoint` keeps the latest SCF state in memory and writes it atomically
(`dm21cli.io.outputs.atomic.write_bytes_atomic`), so an interruption or a full
disk leaves the previous complete file or none, never half of one.
"""

from __future__ import annotations

import time
from pathlib import Path

from dm21cli.io.outputs.atomic import write_bytes_atomic
from dm21cli.io.outputs.orbitals import chkfile_bytes

#: The SCF state is written to scf.chk at most this often while it changes
#: (every state is kept in memory; the last one is always written when an
#: attempt, the warm start or the run ends, also when it is interrupted).
CHECKPOINT_INTERVAL_S = 10.0


class ScfCheckpoint:
    """The run's last SCF state: kept in memory, written to scf.chk atomically.

    PySCF's own chkfile writing is switched off (``mf.chkfile = None``): it
    updates an HDF5 file in place, so an interruption or a full disk could
    leave half a file, and HDF5 itself crashed on a full disk.  Here the file
    is built in memory (`dm21cli.io.outputs.orbitals.chkfile_bytes`) and renamed into
    place, so ``scf.chk`` is always a complete restart file (or absent).
    """

    def __init__(self, path: Path, mol, interim: bool = True):
        self.path = path
        self.mol = mol
        #: write the states as they come; False: keep them in memory only, and the owner
        #: writes the last one (`write`) once the work it belongs to is complete (a geometry
        #: optimisation's step away from the geometry a restart starts from)
        self.interim = interim
        self.state: tuple | None = None
        self.written = False  # the file holds the current state
        self._last_write = -float("inf")

    def update(self, e_tot, mo_energy, mo_coeff, mo_occ, final: bool = False) -> None:
        """Keep this state; write it if `interim` and `final` or CHECKPOINT_INTERVAL_S have passed."""
        self.state = (float(e_tot), mo_energy, mo_coeff, mo_occ)
        self.written = False
        if self.interim and (final or time.monotonic() - self._last_write >= CHECKPOINT_INTERVAL_S):
            self.write()

    def write(self) -> bool:
        """Write the current state unless the file already holds it; returns whether a file exists."""
        if self.state is not None and not self.written:
            e_tot, mo_energy, mo_coeff, mo_occ = self.state
            write_bytes_atomic(self.path, chkfile_bytes(self.mol, e_tot, mo_energy,
                                                                 mo_coeff, mo_occ))
            self.written = True
            self._last_write = time.monotonic()
        return self.written
