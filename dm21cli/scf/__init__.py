"""Kohn-Sham with DM21 on PySCF, and the SCF that converges.

- `ks`: `DM21RKS` / `DM21UKS`, PySCF's RKS/UKS with DM21's energy and potential;
- `escalation`: warm-started frozen-XC iterations, then an escalating ladder of
  SCF strategies (`run_with_escalation`);
- `directmin`: direct minimisation over orbital rotations (non-aufbau states);
- `occupations`: fixed (fractional) occupation numbers;
- `guess`: starting densities from a chkfile or another geometry's orbitals;
- `aufbau`: whether a solution has an occupied orbital above an empty one;
- `reproducible`: the same numbers in every run (deterministic J/K, degenerate orbitals).

Imports `dm21cli.functional` and `dm21cli.core` only.
"""
