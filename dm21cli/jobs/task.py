"""`run_task(spec)`: what the job's ``job.task`` asks for, with `run_job`'s calling convention.

``energy`` and ``gradient`` are single points (`dm21cli.jobs.run.run_job`), ``opt`` a
geometry optimisation (`dm21cli.jobs.opt.run_opt`), ``freq`` a Hessian and its analysis
(`dm21cli.jobs.freq.run_freq`).  Scans call this for their points,
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
        from dm21cli.jobs.freq import plan_freq, run_freq

        return run_freq(plan_freq(spec), checkpoints=checkpoints, overwrite=overwrite,
                        reporter=reporter)
    if spec.job.task == "opt":
        from dm21cli.jobs.opt import run_opt

        return run_opt(spec, checkpoints=checkpoints, overwrite=overwrite, reporter=reporter,
                       interrupted_hint=interrupted_hint)
    from dm21cli.jobs.run import run_job

    return run_job(spec, checkpoints=checkpoints, overwrite=overwrite, reporter=reporter)
