"""The nuclear gradient of a job's energy: the SCF's (any functional, in the gas phase or an
implicit solvent) plus D3(BJ).

`nuclear_gradient(mf, spec)` takes the converged SCF object of a job built by
`dm21cli.jobs.build` (DM21 or a PySCF functional) and returns dE/dR in
Hartree/bohr, the same energy `run_job` reports: the SCF energy (for DM21
the float64 final energy) plus the D3(BJ) dispersion energy when the job
asks for it.  Jobs, optimisers and the ASE calculator all take their
gradients from here.
"""

from __future__ import annotations

import time

import numpy as np

from dm21cli.jobs.build import dispersion_gradient


def nuclear_gradient(mf, spec, *, grid_response: bool = True) -> dict:
    """dE/dR of the converged SCF `mf` of the job `spec`.

    grid_response: include the motion of the atom-centred grid with the atoms
    (on by default for every functional: then the gradient is the derivative of
    the energy the job computes at a fixed grid level; for DM21 the difference
    is 3e-4 to 2e-2 Ha/bohr, see `dm21cli.scf.grad`).

    In an implicit solvent the SCF's gradient is PySCF's solvent-attached one
    (`pyscf.solvent.grad.pcm.make_grad_object`): the gradient without the solvent (for
    DM21 `dm21cli.scf.grad`) plus the solvent's terms, which are also returned alone.

    Returns {'gradient_hartree_per_bohr': (natm, 3) total,
    'scf_gradient_hartree_per_bohr': (natm, 3), 'dispersion_gradient_hartree_per_bohr':
    (natm, 3) or None, 'solvent_gradient_hartree_per_bohr': (natm, 3) or None (gas phase),
    'grid_response': bool, 'wall_s': float}.
    """
    t0 = time.perf_counter()
    grad = mf.nuc_grad_method()
    grad.grid_response = grid_response
    scf_grad = np.asarray(grad.kernel(), dtype=float)
    disp = None
    total = scf_grad.copy()
    if spec.dispersion == "d3bj":
        disp = dispersion_gradient(mf.mol, spec.functional)
        total += disp
    solvent = getattr(grad, "de_solvent", None)  # PySCF's solvent part (in the SCF's)
    return {"gradient_hartree_per_bohr": total, "scf_gradient_hartree_per_bohr": scf_grad,
            "dispersion_gradient_hartree_per_bohr": disp,
            "solvent_gradient_hartree_per_bohr": None if solvent is None else np.asarray(solvent),
            "grid_response": bool(grid_response), "wall_s": time.perf_counter() - t0}


def summary(gradient_hartree_per_bohr: np.ndarray) -> dict:
    """The maximum absolute component and the RMS of a gradient (natm, 3), Hartree/bohr."""
    g = np.asarray(gradient_hartree_per_bohr, dtype=float)
    return {"max_hartree_per_bohr": float(np.abs(g).max()) if g.size else 0.0,
            "rms_hartree_per_bohr": float(np.sqrt(np.mean(g * g))) if g.size else 0.0}
