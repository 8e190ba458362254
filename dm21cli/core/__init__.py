"""Foundations every layer uses: errors and exit statuses, units, elements, resources, signals.

Standard library only at import time (NumPy, PySCF inside functions), and no
import of any other part of dm21cli.
"""
