"""Shared test fixtures, and the checks a test session makes before it starts.

The DM21 checkpoints are data kept outside the repository.  The tests find them
the way ``dm21`` does (``dm21cli.functional.weights.resolve_root``): ``--checkpoints DIR``
(an option of this test suite), then ``DM21_CHECKPOINTS``, then the user data
folder where ``dm21 weights install`` and ``dm21 weights download`` put them.
Only when none of these is set and the user data folder holds no weights do
they fall back to ``../shared/dm21-checkpoints`` next to the repository root
(this repository's CI machine).  The root is resolved once, when the session
starts, because ``_isolated_user_dirs`` points ``XDG_DATA_HOME`` elsewhere in
every test.

A session refuses to start when the imported dm21cli has no compiled kernels
although a C compiler exists: the tests would run the slower NumPy path
without saying so (README, "Tests": install with ``pip install -e '.[test]'``).

Jobs that tests run in this process (``tests/dm21lib.py``) run as in a ``dm21``
process: OpenBLAS's idle threads sleep at once (``OPENBLAS_THREAD_TIMEOUT``, which
``dm21``'s entry point sets before NumPy loads, and so does this file; on 2 cores
their spinning slowed a relaxed scan by a fifth).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sysconfig
from pathlib import Path

import pytest

from dm21cli.core.resources import settle_blas_threads

settle_blas_threads()  # before anything imports NumPy, as the dm21 command does

REPO_ROOT = Path(__file__).resolve().parent.parent
#: the last place looked at, for this repository's CI (README, "Tests")
FALLBACK_CHECKPOINTS = REPO_ROOT.parent / "shared" / "dm21-checkpoints"
SOURCE_FALLBACK = "fallback ../shared/dm21-checkpoints"

_session: dict = {}


def pytest_addoption(parser):
    parser.addoption("--checkpoints", metavar="DIR", default=None,
                     help="DM21 checkpoint root for the tests (default: $DM21_CHECKPOINTS, then the "
                          "user data folder, as dm21 searches; then ../shared/dm21-checkpoints)")


def find_checkpoints(option: str | os.PathLike | None = None) -> tuple[Path, str]:
    """(checkpoint root, source) for the tests: dm21's own search, then the fallback.

    source is "option", "env DM21_CHECKPOINTS", "user data dir" or
    SOURCE_FALLBACK.  A set option or variable is used even if it is wrong
    (as in dm21: an error, never skipped); the fallback replaces only a user
    data folder without a verified DM21.
    """
    from dm21cli.functional import weights

    root, source = weights.resolve_root(option)
    if source == weights.SOURCE_USER and weights.status(root)[0].problem is not None \
            and (FALLBACK_CHECKPOINTS / "DM21").is_dir():
        return FALLBACK_CHECKPOINTS, SOURCE_FALLBACK
    return root, source


def c_compiler() -> str | None:
    """The C compiler an install would build the kernels with (CC, else Python's), or None."""
    command = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    words = shlex.split(command)
    return shutil.which(words[0]) if words else None


def pytest_configure(config):
    # before any test changes the environment (XDG_DATA_HOME, DM21_CHECKPOINTS)
    _session["checkpoints"] = find_checkpoints(config.getoption("--checkpoints"))


def pytest_sessionstart(session):
    import dm21cli
    from dm21cli.functional import kernels

    if kernels.available() or os.environ.get("DM21_NO_KERNELS", "") not in ("", "0"):
        return
    compiler = c_compiler()
    if compiler is None:
        return
    pytest.exit(
        f"the dm21cli being tested ({Path(dm21cli.__file__).parent}) has no compiled kernels "
        f"(dm21cli/functional/_kernels*.so), although a C compiler exists ({compiler}): the "
        "tests would run the slower NumPy path. Tests run from the repository import this "
        "folder, so build the kernels into it: pip install -e '.[test]' (README.md, Tests). To "
        "test the NumPy path on purpose, set DM21_NO_KERNELS=1.",
        returncode=pytest.ExitCode.USAGE_ERROR)


def pytest_report_header(config):
    root, source = _session["checkpoints"]
    return f"dm21 checkpoints: {root} ({source})"


@pytest.fixture(scope="session")
def checkpoints_dir() -> Path:
    from dm21cli.functional import weights

    root, source = _session["checkpoints"]
    bad = [s.problem for s in weights.status(root) if not s.verified]
    if bad:
        pytest.fail(f"DM21 checkpoints for the tests: {bad[0]} (root {root}, from {source}); "
                    "run `dm21 weights install --from DIR` or `dm21 weights download`, set "
                    "DM21_CHECKPOINTS, or run `python -m pytest --checkpoints DIR`", pytrace=False)
    return root


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    """Keep every test away from the real user's data/cache folders."""
    home = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.setenv("NO_COLOR", "1")


#: result.json files already validated: path -> modification time
_validated: dict[Path, int] = {}


def invalid_result_json(base: Path) -> list[str]:
    """Every result.json under `base` written (or changed) since the last call that is not
    valid QCSchema (an AtomicResult, or a FailedOperation with an AtomicInput), as
    qcelemental validates it by default (issue 13).  Files a test wrote by hand (no
    ``success`` or ``schema_name`` key) are left out."""
    import json

    problems = []
    for path in sorted(base.rglob("result.json")):
        try:
            stamp = path.stat().st_mtime_ns
            if _validated.get(path) == stamp:
                continue
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # removed meanwhile, or a test's deliberately broken file
        _validated[path] = stamp
        if not isinstance(document, dict) or not ({"success", "schema_name"} & set(document)):
            continue
        try:
            from dm21cli.io.outputs.qcschema import validate
        except ImportError as exc:  # pragma: no cover
            return [f"cannot validate result.json: {exc}"]
        try:
            validate(document)
        except ImportError:
            return ["qcelemental is needed to validate result.json: pip install -e '.[test]'"]
        except Exception as exc:  # noqa: BLE001 - any validation error is the finding
            problems.append(f"{path}: {exc}")
    return problems


@pytest.fixture(autouse=True)
def _result_json_is_qcschema(tmp_path_factory):
    """After every test: each result.json the suite wrote is valid QCSchema."""
    yield
    problems = invalid_result_json(tmp_path_factory.getbasetemp())
    if problems:
        pytest.fail("result.json is not valid QCSchema:\n" + "\n".join(problems), pytrace=False)
