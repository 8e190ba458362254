"""The memory a job needs, checked against its budget before anything is computed.

The budget (``--memory``, ``resources.memory``, ``PYSCF_MAX_MEMORY``, Slurm's
memory, or half the RAM; see `dm21cli.core.resources`) is the whole process's:
its resident memory (Python, NumPy, PySCF, the network), the SCF's matrices
and in-core integrals, and DM21's working arrays and caches all come out of
it.  `estimate` says what a job needs at least and what would let it cache
every exchange integral: the one estimate, a function of the job alone (its
molecule, basis, grid, functional, task and threads), so that ``dm21 validate``,
the first log line of ``dm21 run`` / ``dm21 opt`` and a scan's worker check print
the same numbers (`describe`, `summary`).  `check` refuses a budget below the minimum, or
above the machine's memory, with `ResourceError` (exit status 6) before the
output directory exists; in a process that already holds more than a fresh
``dm21`` process (`PROCESS_MB`: a script, QCEngine, ASE) it counts the
difference too.  Inside the run, PySCF and `DM21XC` size their blocks and
caches from what is left of the budget at the time they allocate.
"""

from __future__ import annotations

import numpy as np

from dm21cli.core.errors import ResourceError
from dm21cli.core.resources import current_rss_mb, physical_memory_mb, release_freed_memory

#: The resident memory of a ``dm21`` process when its job starts (MB): Python, NumPy,
#: SciPy, PySCF, dm21cli, click and, for DM21, the network.  Measured on this
#: project's machine: 132 MB in ``dm21 run`` of a DM21 job, 110-120 MB in other
#: commands and jobs.  The estimate counts this, not the memory of the process that
#: makes it, so that every command gives the same numbers; `check` adds what a
#: process holds beyond it.
PROCESS_MB = 150.0
#: Added to every minimum (MB): allocator slack, PySCF's small temporaries.
SAFETY_MB = 64.0
#: What the process grows by between this check and the first DM21 evaluation
#: besides the arrays counted here (MB): the PySCF modules the SCF imports and the
#: warm start's work.  Measured: 44 MB for water/def2-SVP.
RUN_GROWTH_MB = 64.0
#: SCF matrices kept at once (density, Fock, overlap, core Hamiltonian, orbitals,
#: DIIS history ...), in units of nao x nao float64 matrices per spin.
SCF_MATRICES = 24


def grid_points_estimate(mol, spec) -> int:
    """The number of grid points of the job's grid, from PySCF's atomic grids (an upper
    bound: building the molecular grid drops points of negligible weight)."""
    from dm21cli.jobs.build import build_grids

    grids = build_grids(mol, spec)
    tab = grids.gen_atomic_grids(mol, grids.atom_grid, grids.radi_method, grids.level, grids.prune)
    return int(sum(tab[mol.atom_symbol(ia)][1].size for ia in range(mol.natm)))


def estimate(spec, mol, threads: int = 1) -> dict:
    """What the job of `spec` on the built molecule `mol` needs, in MB.

    Returns {'process_mb' (`PROCESS_MB`, the dm21 process itself), 'minimum_mb'
    (the least budget it runs in: exchange integrals recomputed in every SCF
    cycle), 'cached_mb' (a budget that caches every exchange integral and AO
    value, and for a gradient keeps the SCF's last exchange features: the
    fastest), 'grid_points', 'nao', 'solvent_mb' (an implicit solvent's part of both, 0
    in the gas phase: `dm21cli.jobs.build.solvent_mb`)}.  A function of the job and
    `threads` alone: every command that estimates the same job gets the same numbers.
    """
    nao = mol.nao_nr()
    ngrids = grid_points_estimate(mol, spec)
    process = PROCESS_MB
    nspin = 1 if spec.resolved_restricted() else 2
    matrices = 8.0 * SCF_MATRICES * nspin * nao * nao
    grid_arrays = 8.0 * 6 * ngrids  # coordinates, weights, masks
    from dm21cli.jobs.build import solvent_mb

    solvent = solvent_mb(spec, mol)
    held = process + RUN_GROWTH_MB + (matrices + grid_arrays) / 1e6 + SAFETY_MB + solvent
    if spec.is_dm21:
        from dm21cli.functional import backends, features, xc
        from dm21cli.jobs.build import integral_dtype

        minimum = held + xc.work_bytes(nao, xc.MIN_BLOCK_POINTS, ngrids, threads) / 1e6
        # every integral and AO value cached: the shares DM21XC gives its caches must hold
        # them (and the scratch block that fills it, where the backend needs one); blocks
        # take BLOCK_WORK_SHARE
        itemsize = np.dtype(integral_dtype(spec)).itemsize
        integrals = itemsize * len(features.OMEGAS) * nao * (nao + 1) / 2 * ngrids
        scratch = backends.select(mol).fill_scratch_bytes_per_point * features.SCRATCH_POINTS
        ao_values = 8.0 * 4 * nao * ngrids
        caches = max((integrals + scratch) / xc.INTEGRAL_CACHE_SHARE,
                     ao_values / (1 - xc.INTEGRAL_CACHE_SHARE))
        fixed = xc.work_bytes(nao, 0, ngrids, threads)
        if spec.computes_gradient:  # the features kept for the gradient
            fixed += xc.kept_bytes(nao, ngrids, nspin)
        cached = (held + (fixed + caches) / 1e6) / (1 - xc.BLOCK_WORK_SHARE)
    else:  # PySCF's numerical integration: blocks of at least 128 points
        minimum = cached = held + 8.0 * 128 * nao * 10 / 1e6
    return {"process_mb": round(process), "minimum_mb": round(minimum),
            "cached_mb": round(max(cached, minimum)), "grid_points": ngrids, "nao": nao,
            "solvent_mb": round(solvent)}


def describe(need: dict) -> str:
    """One line: 'needs at least 420 MB (4,210 MB to cache every exchange integral)'; in
    an implicit solvent '...; the solvent's surface matrices take 128 MB of either)'."""
    text = f"needs at least {need['minimum_mb']:,} MB"
    notes = []
    if need["cached_mb"] > need["minimum_mb"]:
        notes.append(f"{need['cached_mb']:,} MB to cache every exchange integral")
    if need.get("solvent_mb"):
        notes.append(f"the solvent's surface matrices take {need['solvent_mb']:,} MB of "
                     f"{'either' if notes else 'this'}")
    return text + (f" ({'; '.join(notes)})" if notes else "")


def source_text(source: str) -> str:
    """Where a budget came from, as the messages name it (`dm21cli.core.resources.resolve`'s
    memory_source; "input" is ``--memory`` or ``resources.memory``)."""
    return "--memory or resources.memory" if source == "input" else source


def summary(need: dict, budget_mb: float, source: str) -> str:
    """The estimate and the budget in one sentence, as ``dm21 validate`` prints it: 'the job
    needs at least 355 MB (620 MB to cache every exchange integral); the budget is 12,638 MB
    (50% of physical memory)' (``dm21 run``'s first log line has the same `describe`)."""
    return (f"the job {describe(need)}; the budget is {budget_mb:,.0f} MB "
            f"({source_text(source)})")


def check(budget_mb: float, need: dict, source: str = "input") -> None:
    """Refuse (ResourceError, exit 6) a budget the job cannot run in, or one the machine lacks.

    source: where the budget came from (`dm21cli.core.resources.resolve`'s memory_source).
    A process that holds more than `PROCESS_MB` already (a script, QCEngine's harness, an
    ASE calculator) needs the difference too.
    """
    source = source_text(source)
    physical = physical_memory_mb()
    if physical is not None and budget_mb > physical:
        raise ResourceError(f"the memory budget of {budget_mb:,.0f} MB ({source}) is more than this "
                            f"machine's {physical:,} MB of memory; the job {describe(need)}")
    release_freed_memory()  # (a process that ran jobs before keeps what they freed)
    held = current_rss_mb()
    extra = max(0.0, held - need["process_mb"])
    if budget_mb < need["minimum_mb"] + extra:
        also = (f", and this process holds {held:,.0f} MB, {extra:,.0f} MB more than the "
                f"{need['process_mb']:,} MB of a fresh dm21 process the estimate counts"
                if extra >= 1 else "")
        raise ResourceError(f"the memory budget of {budget_mb:,.0f} MB ({source}) is too small: the "
                            f"job {describe(need)}{also}; give more with --memory")
