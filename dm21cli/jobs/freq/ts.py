"""`run_ts`: a transition-state search (``dm21 opt --ts``, ``job.task: ts``) or a reaction
path down from one (``dm21 opt --irc``, ``job.task: irc``).

geomeTRIC's transition-state optimiser (`dm21cli.jobs.opt.run_opt` with ``opt.transition``)
and its IRC (``opt.irc``) start from a Hessian: `start_hessian` computes it as ``dm21 freq`` does (a resumable
campaign of gradient jobs, `dm21cli.jobs.freq`) at the starting geometry.  The final
frequencies, classified as a transition state's, are the caller's (``dm21 opt --ts`` runs
them in the folder's ``freq/``).  Here, above `dm21cli.jobs.opt`, so that the optimiser
does not depend on the Hessian's machinery (whose points run through `dm21cli.jobs.task`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dm21cli.core.units import BOHR_ANGSTROM
from dm21cli.jobs.freq.plan import freq_spec_at, plan_freq
from dm21cli.jobs.freq.run import run_freq
from dm21cli.jobs.opt import run_opt
from dm21cli.jobs.scan.plan import build_spec, point_data


#: how a Hessian of `dm21 opt` stopped by a signal continues (its own log says it)
RESUME_HINT = ("finished points are kept: dm21 opt --restart continues (a search with no step "
               "finished, from this Hessian's points)")


def start_hessian(spec, coords_bohr, folder: Path, log, *, checkpoints=None):
    """(the Hessian (3N, 3N) in Eh/bohr^2 at `coords_bohr`, its classification as a
    transition state's: dm21 freq's ``vibrations.classification``, with ``message`` in
    words and ``ok``), computed in `folder` (resumed from it)."""
    document = run_freq(plan_freq(freq_spec_at(spec, coords_bohr, folder)),
                        checkpoints=checkpoints, reporter=log, kind="ts",
                        resume_hint=RESUME_HINT)
    verdict = {**document["extras"]["dm21cli"]["vibrations"]["classification"],
               "folder": str(folder)}
    return np.asarray(document["return_result"], dtype=float), verdict


def run_ts(spec, *, checkpoints=None, hessian_folder: Path | None = None,
           hessian_coords_bohr=None, **kwargs) -> dict:
    """`run_opt` of a transition-state search (``opt.transition``) or a reaction path
    (``opt.irc``) of `spec`, started from `start_hessian`; the other keyword arguments are
    run_opt's.

    hessian_folder, hessian_coords_bohr (N, 3): where the first Hessian is, and the geometry
    it was computed at (``dm21 opt --ts --irc``: the search's freq/ and its final geometry),
    resumed from there instead of the folder the optimisation names; a start within 1e-8
    bohr of that geometry (the round trip through Angstrom text) is taken as that geometry,
    so that the Hessian's points are read, not recomputed.
    """
    def first(spec, coords_bohr, folder, log):
        coords = np.asarray(coords_bohr, dtype=float).reshape(-1, 3)
        if hessian_coords_bohr is not None:
            known = np.asarray(hessian_coords_bohr, dtype=float).reshape(-1, 3)
            if known.shape == coords.shape and np.allclose(coords, known, rtol=0, atol=1e-8):
                coords = known
        return start_hessian(spec, coords, hessian_folder or folder, log,
                             checkpoints=checkpoints)

    return run_opt(spec, checkpoints=checkpoints, start_hessian=first, **kwargs)


def irc_spec_at(spec, coords_bohr, output_dir: Path):
    """The job of `spec` as a reaction path (``opt.irc``, the job's other ``opt`` settings,
    no transition-state search) from the geometry `coords_bohr` (N, 3), in `output_dir`: what
    ``dm21 opt --ts --irc`` runs from the transition state it found."""
    coords = np.asarray(coords_bohr, dtype=float).reshape(-1, 3)
    data = point_data(spec, spec.functional, coords * BOHR_ANGSTROM, f"{spec.job.name}-irc",
                      Path(output_dir), False, relax=True)
    opt = spec.opt_settings().resolved()
    for key in ("transition", "hessian_every"):
        opt.pop(key, None)
    data["opt"] = {**opt, "irc": True}
    return build_spec(data, spec, spec._meta.locate(("opt",)),
                      "the reaction path from the transition state")
