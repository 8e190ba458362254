"""Shared test fixtures.

The DM21 checkpoints are data kept outside the repository.  Tests find them
through ``DM21_CHECKPOINTS`` (set by ``.ci/run``) or, failing that, at
``../shared/dm21-checkpoints`` next to the repository root.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _checkpoints_dir() -> Path:
    env = os.environ.get("DM21_CHECKPOINTS")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "dm21-checkpoints"


@pytest.fixture(scope="session")
def checkpoints_dir() -> Path:
    path = _checkpoints_dir()
    if not (path / "DM21" / "saved_model.pb").is_file():
        pytest.fail(f"DM21 checkpoints not found at {path}; set DM21_CHECKPOINTS")
    return path


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    """Keep every test away from the real user's data/cache folders."""
    home = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.setenv("NO_COLOR", "1")
