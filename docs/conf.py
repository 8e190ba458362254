"""Sphinx configuration of the dm21cli manual (MyST Markdown).

Build it from the repository root, warnings as errors (README, "Tests"):

    sphinx-build -W --keep-going -b html docs docs/_build/html

The command reference is generated from the click commands (sphinx-click), the input
reference from the pydantic models (``docs/_ext/dm21_inputs.py``), so neither can drift
from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))  # the clone's dm21cli, as the tests import it

from dm21cli import __version__  # noqa: E402

project = "dm21cli"
author = "the dm21cli developers"
copyright = "dm21cli developers; the DM21 functionals are DeepMind's (CC BY 4.0)"
version = release = __version__

extensions = ["myst_parser", "sphinx_click", "dm21_inputs"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md"]

# MyST: anchors for headings down to level 4, so that [text](page.md#a-heading) links resolve
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence", "deflist"]

# a fence without a language is shown as it is (command blocks say ```bash)
highlight_language = "none"
# "--distance" stays two hyphens (the commands quote options), and quotes stay straight
smartquotes = False

html_theme = "furo"
html_title = f"dm21cli {release}"
html_static_path: list[str] = []
