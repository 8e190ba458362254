"""Whether a solution is aufbau: no occupied orbital above an empty one of the same spin.

A converged SCF can be an excited (non-aufbau) state, with a lower one nearby;
`non_aufbau` finds it from the orbital energies and occupations (the log,
summary.txt and result.json's ``non_aufbau`` property report it, worded by
`dm21cli.io.outputs.summary.non_aufbau_text`; the run still succeeds).
"""

from __future__ import annotations

import numpy as np

#: An occupied orbital this far (Ha) or more above an empty one of the same spin makes a
#: solution non-aufbau.  Below it the two are degenerate within what a converged SCF
#: resolves: DM21 converges the orbital gradient to 1e-3 (scf.conv_tol_grad's default),
#: and degenerate open-shell orbitals then differ by up to about that much.
NON_AUFBAU_TOL_HARTREE = 1e-3


def non_aufbau(mo_energy, mo_occ) -> list[dict]:
    """Per spin channel where an occupied orbital lies above an empty one by
    NON_AUFBAU_TOL_HARTREE or more: {'spin', 'highest_occupied_hartree',
    'lowest_empty_hartree', 'gap_hartree'} (gap negative); [] for an aufbau solution.
    Fractional occupations count as occupied."""
    restricted = np.asarray(mo_occ).ndim == 1
    found = []
    channels = ([(None, mo_energy, mo_occ)] if restricted
                else [("alpha", mo_energy[0], mo_occ[0]), ("beta", mo_energy[1], mo_occ[1])])
    for spin, energy, occ in channels:
        energy, occ = np.asarray(energy), np.asarray(occ)
        occupied, empty = energy[occ > 0], energy[occ == 0]
        if len(occupied) == 0 or len(empty) == 0:
            continue
        gap = float(empty.min() - occupied.max())
        if gap <= -NON_AUFBAU_TOL_HARTREE:
            found.append({"spin": spin or "both", "highest_occupied_hartree": float(occupied.max()),
                          "lowest_empty_hartree": float(empty.min()), "gap_hartree": gap})
    return found
