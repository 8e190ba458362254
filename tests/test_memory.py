"""The memory budget is the whole process's: refused before computing when too small, kept.

Through the command line in subprocesses; peaks are the child's maximum
resident set (getrusage), compared with the budget in MB (10^6 bytes) with
the 10% slack the manual promises (docs/tutorials/cluster.md).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest
from test_cli_run import _env, _show, write_job

from dm21cli.io.outputs.qcschema import fields

WATER = ("O 0.0 0.0 0.1173", "H 0.0 0.7572 -0.4692", "H 0.0 -0.7572 -0.4692")


def minimum_and_cached_mb(tmp_path, env, name: str) -> tuple[int, int]:
    """The job's estimate as `dm21 validate` prints it."""
    proc = subprocess.run([sys.executable, "-m", "dm21cli", "validate", f"{name}.yaml"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, _show(proc)
    match = re.search(r"needs at least ([0-9,]+) MB \(([0-9,]+) MB to cache", proc.stdout)
    assert match, proc.stdout
    return tuple(int(g.replace(",", "")) for g in match.groups())


def run_with_peak(tmp_path, env, args: list[str]) -> tuple[int, float, str]:
    """(exit status, peak resident MB, stderr) of ``dm21 ARGS``."""
    code = textwrap.dedent(f"""\
        import resource, subprocess, sys
        proc = subprocess.run([sys.executable, "-m", "dm21cli", *{args!r}], capture_output=True,
                              text=True)
        sys.stderr.write(proc.stderr)
        print("EXIT", proc.returncode, "PEAK_MB",
              resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e6)
        """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    fields = proc.stdout.split()
    assert fields[:1] == ["EXIT"], _show(proc)
    return int(fields[1]), float(fields[3]), proc.stderr


@pytest.mark.parametrize("memory, says", [
    ("1MB", "is too small: the job needs at least"),
    ("100MB", "is too small: the job needs at least"),
    ("5000TB", "is more than this machine's"),
])
def test_a_budget_the_job_cannot_use_is_refused_before_computing(tmp_path, checkpoints_dir,
                                                                   memory, says):
    """`--memory 1MB` ran for two minutes at 173 MB; 5000TB was accepted on a 23 GB machine."""
    write_job(tmp_path, "water", atoms=WATER)
    proc = subprocess.run([sys.executable, "-m", "dm21cli", "run", "water.yaml", "--memory", memory],
                          cwd=tmp_path, env=_env(checkpoints_dir), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 6, _show(proc)
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("dm21: error: the memory budget of ") and says in line, line
    assert not (tmp_path / "outputs").exists()


def test_validate_shows_the_estimate_and_checks_the_budget(tmp_path, checkpoints_dir):
    write_job(tmp_path, "water", atoms=WATER)
    env = _env(checkpoints_dir)
    minimum, cached = minimum_and_cached_mb(tmp_path, env, "water")
    assert 150 < minimum < cached
    proc = subprocess.run([sys.executable, "-m", "dm21cli", "validate", "water.yaml",
                           "--memory", str(minimum // 2)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 6, _show(proc)
    assert "is too small" in proc.stderr


@pytest.mark.parametrize("task", ["energy", "gradient"])
@pytest.mark.parametrize("budget", ["tight", "cached"])
def test_the_peak_stays_within_the_budget(tmp_path, checkpoints_dir, budget, task):
    """water/def2-TZVP (0.5 GB of exchange integrals in float32): at the minimum budget
    plus 10% most integrals are recomputed, at the cached estimate all are kept;
    either way the whole process peaks within its budget (10% slack), also when a
    gradient follows the SCF (its pieces, and the features the SCF keeps for it)."""
    path = write_job(tmp_path, "water", atoms=WATER, basis="def2-tzvp",
                     extra="outputs: {molden: false}\n")
    path.write_text(path.read_text().replace("job:\n", f"job:\n  task: {task}\n"))
    env = _env(checkpoints_dir)
    minimum, cached = minimum_and_cached_mb(tmp_path, env, "water")
    memory = int(minimum * 1.1) if budget == "tight" else cached
    code, peak, stderr = run_with_peak(tmp_path, env, ["run", "water.yaml", "--memory", str(memory)])
    assert code == 0, stderr
    assert peak <= 1.1 * memory, f"peak {peak:.0f} MB over the budget {memory} MB"
    document = json.loads((tmp_path / "outputs" / "water" / "result.json").read_text())
    result = fields(document)
    assert result["converged"]
    assert document["driver"] == task
    held = result["properties"]["dm21_exchange_integrals"]
    if budget == "cached":
        assert held["points_cached"] == held["points_evaluated"], held
    else:
        assert held["points_cached"] < held["points_evaluated"], held


def test_scan_workers_share_the_budget(tmp_path, checkpoints_dir):
    """Two workers with a budget that cannot hold two processes: refused before any starts."""
    write_job(tmp_path, "h2", basis="sto-3g", extra="scan: {distances: '0.7,0.8,0.9'}\n")
    env = _env(checkpoints_dir)
    minimum, _ = minimum_and_cached_mb(tmp_path, env, "h2")
    proc = subprocess.run([sys.executable, "-m", "dm21cli", "scan", "h2.yaml", "--workers", "2",
                           "--memory", str(int(minimum * 1.5))], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 6, _show(proc)
    assert "2 worker processes would get" in proc.stderr.strip().splitlines()[-1]
    assert not list((tmp_path / "outputs").glob("h2/*/point-*"))


_ESTIMATE = re.compile(r"needs at least ([0-9,]+) MB \(([0-9,]+) MB to cache")


def test_validate_and_run_print_the_same_estimate(tmp_path, checkpoints_dir):
    """Issue 22: `dm21 validate` and `dm21 run` printed different memory estimates for the
    same job (the estimate counted the resident memory of the process that made it, and
    run had loaded the network).  One function, `dm21cli.jobs.memory.estimate`, of the job
    alone: the same minimum, cache size and budget in both (DM21 H2/STO-3G, grid level 0)."""
    write_job(tmp_path, "h2", basis="sto-3g", extra="scf: {grid_level: 0}\noutputs: {molden: false}\n")
    env = _env(checkpoints_dir)
    env["PYSCF_MAX_MEMORY"] = "3000"
    validate = subprocess.run([sys.executable, "-m", "dm21cli", "validate", "h2.yaml"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)
    assert validate.returncode == 0, _show(validate)
    run = subprocess.run([sys.executable, "-m", "dm21cli", "run", "h2.yaml"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, _show(run)
    said = _ESTIMATE.search(validate.stdout).groups()
    logged = _ESTIMATE.search(run.stderr).groups()
    assert said == logged, (validate.stdout, run.stderr.splitlines()[0])
    assert "the budget is 3,000 MB (PYSCF_MAX_MEMORY)" in validate.stdout
    assert "3000 MB (PYSCF_MAX_MEMORY); the job needs at least" in run.stderr


def test_the_estimate_is_the_jobs_and_the_check_counts_what_a_process_holds(monkeypatch):
    """The estimate does not change with the memory of the process that makes it (a script,
    QCEngine or ASE holding gigabytes gets the numbers `dm21 validate` prints); the check
    adds what such a process holds beyond a fresh dm21 process (`PROCESS_MB`)."""
    from dm21cli.core.errors import ResourceError
    from dm21cli.io.inputs.load import load_atomic_input
    from dm21cli.jobs import memory
    from dm21cli.jobs.build import build_molecule

    spec = load_atomic_input({"molecule": {"symbols": ["H", "H"], "geometry": [0, 0, 0, 0, 0, 1.4]},
                              "driver": "energy", "model": {"method": "DM21", "basis": "sto-3g"}})
    mol = build_molecule(spec)
    monkeypatch.setattr(memory, "current_rss_mb", lambda: 100.0)
    need = memory.estimate(spec, mol, 2)
    assert need["process_mb"] == memory.PROCESS_MB
    memory.check(need["minimum_mb"], need)  # a fresh process: the minimum is enough
    monkeypatch.setattr(memory, "current_rss_mb", lambda: 5000.0)
    assert memory.estimate(spec, mol, 2) == need
    with pytest.raises(ResourceError, match=r"and this process holds 5,000 MB, 4,850 MB more than the "
                                            r"150 MB of a fresh dm21 process"):
        memory.check(need["minimum_mb"] + 4000, need)
    memory.check(need["minimum_mb"] + 4850, need)


def test_memory_a_job_freed_is_given_back_before_the_next_counts_what_it_holds():
    """With `tune_allocator`'s settings glibc keeps what a job frees (for speed within the
    job); `release_freed_memory`, which `memory.check` calls at every job's start, gives it
    back, so a process that runs point after point (a scan's, a Hessian's worker) counts what
    it uses, not what it once used (a benzene Hessian's worker was refused at 5.5 GB).  In a
    fresh process: its allocator settings are process-wide."""
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's allocator only")
    code = textwrap.dedent("""
        import numpy as np
        from dm21cli.core.resources import current_rss_mb, release_freed_memory, tune_allocator
        assert tune_allocator()
        base = current_rss_mb()
        blocks = [np.ones(25_000_000) for _ in range(3)]  # 3 x 200 MB from the heap
        del blocks
        kept = current_rss_mb() - base
        assert release_freed_memory()
        print(round(kept), round(current_rss_mb() - base))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    kept, left = map(int, proc.stdout.split())
    assert kept > 500 and left < 50, (kept, left)
