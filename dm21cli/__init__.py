"""dm21cli: DeepMind's DM21 neural density functionals from the command line.

The package is a library first (``dm21cli.runner.run_job``) with a thin click
command line on top (``dm21cli.cli``).  Importing it is cheap: TensorFlow is
never imported at run time and PySCF only where a calculation needs it.
"""

__version__ = "0.1.0"
