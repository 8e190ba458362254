"""Harmonic frequencies and thermochemistry (``dm21 freq``, ``job.task: freq``).

- `plan`: the geometries of the Hessian's central differences (`plan_freq`), a campaign
  of independent gradient jobs that ``dm21 scan``'s machinery runs;
- `run`: `run_freq`, the reference geometry first, then the displaced ones (serially,
  worker processes, Dask, job-array tasks), resumable;
- `hessian`: the Hessian and dipole derivatives from the points' gradients and dipoles;
- `report`: `collect_freq`, the analysis (`dm21cli.vib`) and the files;
- `ts`: `run_ts`, a transition-state search (``dm21 opt --ts``) from the Hessian at the start.
"""

from dm21cli.jobs.freq.plan import plan_freq
from dm21cli.jobs.freq.report import collect_freq
from dm21cli.jobs.freq.run import run_freq

__all__ = ["collect_freq", "plan_freq", "run_freq"]
