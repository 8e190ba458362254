"""`run_task(spec)`: what the job's ``job.task`` asks for, with `run_job`'s calling convention.

``energy`` and ``gradient`` are single points (`dm21cli.jobs.run.run_job`), ``opt`` a
geometry optimisation (`dm21cli.jobs.opt.run_opt`).  ``freq`` (a Hessian, whose points
this module runs: `dm21cli.jobs.freq.run_freq`) is its callers' to dispatch: the command
line and the QCEngine harness.  Scans call this for their points,
so that a relaxed scan's points (``task: opt``) run through the same machinery.
"""

from __future__ import annotations


def run_task(spec, *, checkpoints=None, overwrite: bool = False, reporter=None,
             interrupted_hint: str | None = None) -> dict:
    """Run `spec` as its task says; returns the result dict (result.json).

    interrupted_hint: how the caller's user continues after an interruption (a scan: its
    own command), for an optimisation's messages instead of its ``dm21 opt --restart``.
    """
    if spec.job.task == "freq":
        from dm21cli.core.errors import InputError

        raise InputError("job.task freq is a Hessian of many points: run it with "
                         "dm21cli.jobs.freq.run_freq(plan_freq(spec)) (dm21 freq)",
                         field="job.task")
    if spec.job.task == "opt":
        from dm21cli.jobs.opt import run_opt

        return run_opt(spec, checkpoints=checkpoints, overwrite=overwrite, reporter=reporter,
                       interrupted_hint=interrupted_hint)
    from dm21cli.jobs.run import run_job

    return run_job(spec, checkpoints=checkpoints, overwrite=overwrite, reporter=reporter)
