"""The Hessian and the dipole derivatives from the gradients and dipoles of the displaced points.

Central differences: H[3a+k, :] = (g(x_ak + h) - g(x_ak - h)) / 2h (Eh/bohr^2), and
d mu / d x_ak = (mu(+h) - mu(-h)) / 2h (atomic units: e).  The rows come from different
SCFs, so H is not exactly symmetric: its asymmetry measures the gradients' noise
(`dm21cli.vib.harmonic.harmonic_analysis` symmetrises it and reports the largest
|H - H^T| / 2).  The error of a central difference is O(h^2) (anharmonicity) plus
noise / h (the gradients' numerical noise), which the step balances.
"""

from __future__ import annotations

import numpy as np


def central_differences(gradients_plus, gradients_minus, step_bohr: float) -> np.ndarray:
    """(3N, 3N) Hessian in Eh/bohr^2 from the gradients (3N, N, 3) at +h and at -h of each
    of the 3N Cartesian coordinates (row i: coordinate i displaced), Eh/bohr."""
    plus = np.asarray(gradients_plus, dtype=float)
    minus = np.asarray(gradients_minus, dtype=float)
    n3 = plus.shape[0]
    return (plus.reshape(n3, -1) - minus.reshape(n3, -1)) / (2.0 * step_bohr)


def dipole_derivatives(dipoles_plus, dipoles_minus, step_bohr: float) -> np.ndarray:
    """(3N, 3) d mu_b / d x_i in atomic units from the dipoles (3N, 3) at +h and -h (au)."""
    return (np.asarray(dipoles_plus, dtype=float) - np.asarray(dipoles_minus, dtype=float)) \
        / (2.0 * step_bohr)
