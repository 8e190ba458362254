"""Integrations with other programs: `qcengine` (a QCEngine program harness, ``dm21``).

Each module imports its program at the top; nothing in dm21cli imports them,
so the program stays an optional dependency.
"""
