"""The DM21 functional: weights on disk, the network, its exact-exchange features, E_xc on a grid.

- `weights`, `tfbundle`: the published checkpoints, found, verified and read
  with NumPy alone;
- `network`, `kernels`: the network (forward and backward) in NumPy, with
  optional compiled element-wise kernels (`_kernels.c`);
- `features`: the local exact-exchange energy densities and their integrals;
- `xc`: E_xc and dE_xc/dD of a density on a PySCF grid (`DM21XC`).

Knows nothing of jobs, files or the command line (imports `dm21cli.core` only).
"""

#: the four published DM21 functionals, in their official spelling
VARIANTS = ("DM21", "DM21m", "DM21mc", "DM21mu")
