"""dm21cli: DeepMind's DM21 neural density functionals from the command line.

A library first, with a thin click command line on top.  The layers, each a
subpackage that imports only the ones listed before it (docs/explanation/architecture.md):

- `dm21cli.core`: errors and exit statuses, units, elements, threads and
  memory, signal handling; imports nothing of dm21cli;
- `dm21cli.functional`: DM21 itself: weights on disk, the network, the local
  exact-exchange features, E_xc and its potential on a grid;
- `dm21cli.scf`: Kohn-Sham with DM21 on PySCF and the SCF that converges;
- `dm21cli.io`: file formats: the job file and its model (`io.inputs`), the
  output files (`io.outputs`);
- `dm21cli.jobs`: what a user runs: a single point (`jobs.run`), a geometry
  optimisation (`jobs.opt`), a scan (`jobs.scan`);
- `dm21cli.cli`: the ``dm21`` command; nothing imports it.

The entry points scripts use are importable from here::

    from dm21cli import load_job, run_job
    result = run_job(load_job("water.yaml"))

They are loaded on first use, so ``import dm21cli`` stays cheap: TensorFlow is
never imported at run time and PySCF only where a calculation needs it.
"""

__version__ = "0.6.0"

#: name -> module it comes from (imported on first access, PEP 562)
_API = {
    "load_job": "dm21cli.io.inputs.load",
    "validate_job": "dm21cli.io.inputs.validate",
    "JobSpec": "dm21cli.io.inputs.models",
    "run_job": "dm21cli.jobs.run",
    "run_opt": "dm21cli.jobs.opt",
    "plan_scan": "dm21cli.jobs.scan.plan",
    "run_scan": "dm21cli.jobs.scan.run",
    "collect_scan": "dm21cli.jobs.scan.run",
    "ScanPlan": "dm21cli.jobs.scan.plan",
    "ScanReport": "dm21cli.jobs.scan.records",
    "DM21Error": "dm21cli.core.errors",
    "ExitStatus": "dm21cli.core.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'dm21cli' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
