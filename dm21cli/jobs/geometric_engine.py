"""dm21's side of geomeTRIC: the engine it calls and the optimiser that reports each step.

`dm21cli.jobs.opt` drives geomeTRIC's `Optimizer` directly (not PySCF's geometric_solver).
Two classes connect the two, both on an *owner*, the optimisation of dm21's
(`dm21cli.jobs.opt._Optimisation`), which provides

- ``energy_gradient(coords_bohr (N, 3)) -> (energy Eh, gradient (N, 3) Eh/bohr)``: one step;
- ``ours()``: a context in which what dm21's code raises is remembered as its own;
- ``on_geometric_step(optimizer)``: geomeTRIC's convergence numbers of the step just computed;
- ``on_accepted_step(optimizer)``: a step geomeTRIC accepted (a transition-state search's
  Hessian is recomputed there, ``opt.hessian_every``);
- ``on_irc_step(optimizer, leg_before)``: a reaction path's turn from one leg to the other;
- ``history`` (the steps, the last one the geometry just computed) and ``settings``.

`StepEngine` is geomeTRIC's engine interface (``calc_new``).  `ReportingOptimizer` wraps
``Optimizer.evaluateStep``, geomeTRIC's judgement of a computed step (its quality, the trust
radius, convergence), to report what it decided: geomeTRIC has no callback for that.
Imported when an optimisation starts (geomeTRIC loads only then).
"""

from __future__ import annotations

import numpy as np
from geometric.engine import Engine
from geometric.optimize import Optimizer


class StepEngine(Engine):
    """geomeTRIC's engine whose every energy and gradient is one step of `owner`."""

    def __init__(self, molecule, owner):
        super().__init__(molecule)
        self.owner = owner

    def calc_new(self, coords, dirname):
        """geomeTRIC's call: coords (3N,) in bohr -> {"energy": Eh, "gradient": (3N,) Eh/bohr}."""
        with self.owner.ours():
            energy, gradient = self.owner.energy_gradient(np.asarray(coords).reshape(-1, 3))
        return {"energy": energy, "gradient": gradient.ravel()}


class ReportingOptimizer(Optimizer):
    """geomeTRIC's optimiser, telling `owner` what it made of each step: its numbers before
    the judgement, then whether it accepted the step (geomeTRIC keeps the accepted ones in
    ``X_hist``) and, on a reaction path, whether it turned to the other leg."""

    def __init__(self, coords, molecule, ic, engine, dirname, params, *, owner):
        super().__init__(coords, molecule, ic, engine, dirname, params)
        self.owner = owner

    def evaluateStep(self):
        owner = self.owner
        with owner.ours():
            owner.on_geometric_step(self)
        accepted, leg = len(self.X_hist), self.IRC_info.get("direction")
        out = super().evaluateStep()
        with owner.ours():
            if len(self.X_hist) > accepted:
                owner.history[-1]["accepted"] = True
                owner.on_accepted_step(self)
            if owner.settings.irc:
                owner.on_irc_step(self, leg)
        return out
