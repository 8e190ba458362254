"""`run_task(spec)`: what the job's ``job.task`` asks for, with `run_job`'s calling convention.

``energy`` and ``gradient`` are single points (`dm21cli.jobs.run.run_job`), ``opt`` a
geometry optimisation (`dm21cli.jobs.opt.run_opt`).  Scans call this for their points,
so that a relaxed scan's points (``task: opt``) run through the same machinery.
"""

from __future__ import annotations


def run_task(spec, *, checkpoints=None, overwrite: bool = False, reporter=None) -> dict:
    """Run `spec` as its task says; returns the result dict (result.json)."""
    if spec.job.task == "opt":
        from dm21cli.jobs.opt import run_opt

        return run_opt(spec, checkpoints=checkpoints, overwrite=overwrite, reporter=reporter)
    from dm21cli.jobs.run import run_job

    return run_job(spec, checkpoints=checkpoints, overwrite=overwrite, reporter=reporter)
