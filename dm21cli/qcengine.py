"""``import dm21cli.qcengine`` registers DM21 with QCEngine as program ``dm21``.

A shim: the harness lives in `dm21cli.integrations.qcengine` (the manual:
docs/howto/qcengine.md).  Needs the ``qc`` extra (``pip install -e '.[qc]'`` in a clone).
"""

from dm21cli.integrations.qcengine import DM21Harness, register, run_atomic_input

register()

__all__ = ["DM21Harness", "register", "run_atomic_input"]
