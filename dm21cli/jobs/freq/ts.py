"""`run_ts`: a transition-state search (``dm21 opt --ts``, ``job.task: ts``).

geomeTRIC's transition-state optimiser (`dm21cli.jobs.opt.run_opt` with ``opt.transition``)
starts from a Hessian: `start_hessian` computes it as ``dm21 freq`` does (a resumable
campaign of gradient jobs, `dm21cli.jobs.freq`) at the starting geometry.  The final
frequencies, classified as a transition state's, are the caller's (``dm21 opt --ts`` runs
them in the folder's ``freq/``).  Here, above `dm21cli.jobs.opt`, so that the optimiser
does not depend on the Hessian's machinery (whose points run through `dm21cli.jobs.task`).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from dm21cli.jobs.freq.plan import freq_spec_at, plan_freq
from dm21cli.jobs.freq.run import run_freq
from dm21cli.jobs.opt import run_opt


def start_hessian(spec, coords_bohr, folder: Path, log, *, checkpoints=None):
    """(the Hessian (3N, 3N) in Eh/bohr^2 at `coords_bohr`, its classification as a
    transition state's, in words), computed in `folder` (resumed from it)."""
    document = run_freq(plan_freq(freq_spec_at(spec, coords_bohr, folder)),
                        checkpoints=checkpoints, reporter=log, kind="ts")
    verdict = document["extras"]["dm21cli"]["vibrations"]["classification"]["message"]
    return np.asarray(document["return_result"], dtype=float), verdict


def run_ts(spec, *, checkpoints=None, **kwargs) -> dict:
    """`run_opt` of a transition-state search of `spec` (``opt.transition``), started from
    `start_hessian`; the keyword arguments are run_opt's."""
    return run_opt(spec, checkpoints=checkpoints,
                   start_hessian=functools.partial(start_hessian, checkpoints=checkpoints),
                   **kwargs)
