"""``dm21 info``: versions, weights status, resources; fast and without PySCF or TensorFlow."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from dm21cli import __version__
from dm21cli.functional.weights import ENV_VAR, VARIANTS

REPO_ROOT = Path(__file__).resolve().parent.parent
#: environment variables that change what `dm21 info` reports; cleared for each run.
REPORTED_ENV = ("DM21_CHECKPOINTS", "OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK",
                "PYSCF_MAX_MEMORY", "SLURM_MEM_PER_NODE", "OPENBLAS_THREAD_TIMEOUT", "DM21_NO_KERNELS")


def dm21(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in REPORTED_ENV}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "dm21cli", *args], capture_output=True, text=True,
                          env=env, cwd=REPO_ROOT, timeout=60)


def test_info_shows_version_and_verified_weights(checkpoints_dir):
    result = dm21("info", env_extra={ENV_VAR: str(checkpoints_dir)})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(rf"^\s*dm21cli\s+{re.escape(__version__)}$", out, re.M), out
    assert re.search(r"^\s*python\s+\d+\.\d+\.\d+", out, re.M), out
    for package in ("pyscf", "numpy", "scipy", "click", "pydantic", "pyyaml", "rich",
                    "pyscf-dispersion", "tensorflow"):
        assert re.search(rf"^\s*{re.escape(package)}\s+\S", out, re.M), package
    for variant in VARIANTS:
        assert re.search(rf"^\s*{variant}\s+verified yes: ", out, re.M), (variant, out)
    assert f"env {ENV_VAR}" in out
    assert "\x1b[" not in out  # plain text when stdout is not a terminal


def test_info_reports_missing_weights_and_exits_0(tmp_path):
    missing = tmp_path / "no-weights"
    result = dm21("info", env_extra={ENV_VAR: str(missing)})
    assert result.returncode == 0, result.stderr
    for variant in VARIANTS:
        assert re.search(rf"^\s*{variant}\s+verified no: ", result.stdout, re.M), result.stdout
    assert "dm21 weights download" in result.stdout  # how to fix it


def test_info_json(checkpoints_dir, tmp_path):
    result = dm21("info", "--json", "--checkpoints", str(checkpoints_dir),
                  env_extra={ENV_VAR: str(tmp_path / "elsewhere"), "OMP_NUM_THREADS": "3",
                             "PYSCF_MAX_MEMORY": "1234"})
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["dm21cli"] == __version__
    assert info["packages"]["pyscf"]
    assert info["weights"]["source"] == "option"  # --checkpoints wins over the environment
    assert [v["variant"] for v in info["weights"]["variants"]] == list(VARIANTS)
    assert all(v["verified"] for v in info["weights"]["variants"])
    assert info["weights"]["hint"] is None
    assert info["resources"] == {"threads": 3, "threads_source": "OMP_NUM_THREADS",
                                 "memory_mb": 1234, "memory_source": "PYSCF_MAX_MEMORY"}
    assert info["environment"]["OMP_NUM_THREADS"] == "3"
    # set by the entry point before NumPy loads (idle OpenBLAS threads must not spin)
    assert info["environment"]["OPENBLAS_THREAD_TIMEOUT"] == "4"
    assert info["kernels"] is True
    assert "SLURM_CPUS_PER_TASK" not in info["environment"]
    assert info["user_data_dir"].endswith(os.path.join("dm21cli", "checkpoints"))


def test_info_imports_neither_pyscf_nor_tensorflow(checkpoints_dir):
    code = (
        "import json, sys, time\n"
        "from dm21cli.cli.main import main\n"
        "t0 = time.perf_counter()\n"
        "try:\n"
        "    main(['info'])\n"
        "except SystemExit as exc:\n"
        "    status = exc.code\n"
        "elapsed = time.perf_counter() - t0\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('pyscf', 'tensorflow'))\n"
        "sys.stderr.write(json.dumps({'status': status, 'heavy': heavy, 'elapsed': elapsed}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in REPORTED_ENV}
    env[ENV_VAR] = str(checkpoints_dir)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, cwd=REPO_ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stderr)
    assert report["status"] == 0
    assert report["heavy"] == []
    assert report["elapsed"] < 1.0, report  # the weights are hashed: about 7 MB


def test_blas_thread_timeout_is_a_default_not_an_override(monkeypatch):
    from dm21cli.core.resources import OPENBLAS_THREAD_TIMEOUT, settle_blas_threads

    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT", raising=False)
    settle_blas_threads()
    assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == OPENBLAS_THREAD_TIMEOUT
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "12")
    settle_blas_threads()
    assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == "12"
