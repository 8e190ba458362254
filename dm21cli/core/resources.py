"""Threads and memory: defaults from the environment, applied to PySCF.

Defaults follow what batch systems and users already set:
threads from ``OMP_NUM_THREADS``, then ``SLURM_CPUS_PER_TASK``, then all cores;
memory (MB) from ``PYSCF_MAX_MEMORY``, then ``SLURM_MEM_PER_NODE``, then
DEFAULT_MEMORY_FRACTION of the machine's physical memory.  A variable that is set
to something it cannot mean is an input error (`check_environment`), found before
PySCF (which reads PYSCF_MAX_MEMORY when it is imported) or OpenMP reads it.
"""

from __future__ import annotations

import functools
import os
import re

from dm21cli.core.errors import InputError

#: Fraction of physical memory used when nothing says otherwise.
DEFAULT_MEMORY_FRACTION = 0.5
#: Fallback when physical memory cannot be read (MB).
FALLBACK_MEMORY_MB = 4000
#: The most threads a job may ask for (``--threads``, ``resources.threads``,
#: ``OMP_NUM_THREADS``, ``SLURM_CPUS_PER_TASK``): OpenMP allocates per thread up
#: front (OMP_NUM_THREADS=100000000 ended in "libgomp: Out of memory allocating
#: 21600001344 bytes"), and no node has more cores.
MAX_THREADS = 1024
#: The largest memory budget (MB) a setting may give: 10^12 MB, an exabyte.
MAX_MEMORY_MB = 10**12
#: the environment variables dm21 reads for threads and memory, and what each must hold
THREAD_VARIABLES = ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK")
MEMORY_VARIABLES = ("PYSCF_MAX_MEMORY", "SLURM_MEM_PER_NODE")


def _positive_int(value: str | None) -> int | None:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def environment_problem(environ=None) -> InputError | None:
    """The first of dm21's environment variables set to a value it cannot mean, as an
    `InputError` naming the variable (exit status 2), or None.

    ``OMP_NUM_THREADS`` (a whole number of threads from 1 to MAX_THREADS, or OpenMP's
    list ``4,2``, whose first entry counts) and ``SLURM_CPUS_PER_TASK`` (1 to
    MAX_THREADS); ``PYSCF_MAX_MEMORY`` and ``SLURM_MEM_PER_NODE`` (whole MB, 1 to
    MAX_MEMORY_MB; PySCF itself fails on anything else when it is imported).  Unset
    variables are fine; set to an empty string, only the thread counts are.
    """
    env = os.environ if environ is None else environ
    for var in THREAD_VARIABLES:
        text = env.get(var)
        if text is None or (not text.strip()):
            continue
        first = text.split(",")[0] if var == "OMP_NUM_THREADS" else text
        if not re.fullmatch(r"\s*[0-9]+\s*", first) or not 1 <= int(first) <= MAX_THREADS:
            return InputError(f"expected a whole number of threads from 1 to {MAX_THREADS}, got "
                              f"{_shown(text)}; set it to the threads the job may use, or unset it",
                              field=var)
    for var in MEMORY_VARIABLES:
        text = env.get(var)
        if text is None:
            continue
        if not re.fullmatch(r"\s*[0-9]+\s*", text) or not 1 <= int(text) <= MAX_MEMORY_MB:
            return InputError(f"expected a whole number of MB from 1 to {MAX_MEMORY_MB:,}, got "
                              f"{_shown(text)} (e.g. {var}=4000); unset it or use --memory",
                              field=var)
    return None


def check_environment() -> None:
    """Raise `environment_problem`'s InputError, if any."""
    problem = environment_problem()
    if problem is not None:
        raise problem


def _shown(text: str) -> str:
    return repr(text) if len(text) <= 40 else repr(text[:37] + "...")


def default_threads() -> tuple[int, str]:
    """(threads, where the number came from)."""
    for var in THREAD_VARIABLES:
        n = _positive_int((os.environ.get(var) or "").split(",")[0])
        if n:
            return n, var
    try:
        return len(os.sched_getaffinity(0)), "available cores"
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1, "available cores"


def physical_memory_mb() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e6)
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return None


def default_memory_mb() -> tuple[int, str]:
    """(memory in MB, where the number came from)."""
    n = _positive_int(os.environ.get("PYSCF_MAX_MEMORY"))
    if n:
        return n, "PYSCF_MAX_MEMORY"
    n = _positive_int(os.environ.get("SLURM_MEM_PER_NODE"))
    if n:
        return int(n * 0.9), "SLURM_MEM_PER_NODE (90%)"
    phys = physical_memory_mb()
    if phys:
        return int(phys * DEFAULT_MEMORY_FRACTION), f"{int(DEFAULT_MEMORY_FRACTION * 100)}% of physical memory"
    return FALLBACK_MEMORY_MB, "fallback"


def current_rss_mb() -> float:
    """This process's resident memory now (MB, 10^6 bytes), from /proc; its peak elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6


def resolve(threads: int | None, memory_mb: int | None) -> dict:
    """The effective resources: {'threads', 'threads_source', 'memory_mb', 'memory_source'}.

    Raises `InputError` for an environment variable it would read that holds
    something it cannot mean (`environment_problem`).
    """
    check_environment()
    if threads:
        t, t_src = threads, "input"
    else:
        t, t_src = default_threads()
    if memory_mb:
        m, m_src = memory_mb, "input"
    else:
        m, m_src = default_memory_mb()
    return {"threads": t, "threads_source": t_src, "memory_mb": m, "memory_source": m_src}


#: OPENBLAS_THREAD_TIMEOUT that `dm21` sets unless the environment already does.
#: OpenBLAS keeps its idle worker threads spinning for 2^28 cycles (about
#: 0.1 s) after each call; the DM21 network's worker threads, started right
#: after a BLAS call, then share the cores with them: measured on 2 cores, a
#: water/def2-TZVP network evaluation takes 0.55 s instead of 0.39 s.  With 4
#: (2^4 cycles) idle threads sleep at once.
OPENBLAS_THREAD_TIMEOUT = "4"


def settle_blas_threads() -> None:
    """Let idle OpenBLAS threads sleep at once (see OPENBLAS_THREAD_TIMEOUT).

    OpenBLAS reads the setting when it loads, so this must run before NumPy
    is imported; `dm21`'s entry point calls it first.
    """
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", OPENBLAS_THREAD_TIMEOUT)


def tune_allocator() -> bool:
    """Keep freed memory in the process (glibc only); returns whether it applied.

    DM21 allocates and frees arrays of megabytes to gigabytes in every SCF
    cycle.  By default glibc hands large blocks back to the kernel and takes
    fresh pages again at the next allocation, and on virtual machines each
    fresh page is expensive: measured here, the first write into 1 GB takes
    2.1 s by default and 0.45 s with these settings in a fresh process, one
    network evaluation on 33,000 grid points goes from 1.37 s to 0.92 s, and
    a whole DM21 water/def2-TZVP job from 11.6-13.0 s to 9.7-12.4 s.  The price
    is that the process keeps its peak memory until `release_freed_memory`
    gives it back, at the start of the next job.  Called by the command line,
    not by the library.
    """
    libc = _glibc()
    if libc is None:
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    ok = libc.mallopt(m_mmap_threshold, 1 << 30)
    ok &= libc.mallopt(m_trim_threshold, (1 << 31) - 1)
    ok &= libc.mallopt(m_top_pad, 256 << 20)
    return bool(ok)


def release_freed_memory() -> bool:
    """Give the memory this process has freed back to the system (a garbage collection,
    then glibc's ``malloc_trim``), so that what it holds is what it uses; returns whether
    the trim ran.

    `tune_allocator` keeps freed memory for the speed of one job; a process that runs job
    after job (the points of a scan or a Hessian, serial or in worker processes) would
    pile it up instead, and count it against its memory budget.  Measured (DM21 (H2O)4
    def2-SVP gradient jobs, six in one process): 2.5, 4.7, 3.2, 4.7, 5.4, 7.0 GB held after
    each, and 0.14 GB after each with this, at the same speed; a benzene Hessian's worker
    process held 5.5 GB after six points, its caches shrank (points from 82 to 175 s) and
    the seventh was refused with exit 6.  `dm21cli.jobs.memory.check` calls it before
    measuring what the process holds, at the start of every job.
    """
    import ctypes
    import gc

    gc.collect()
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(ctypes.c_size_t(0))
    return True


@functools.lru_cache(maxsize=1)
def _glibc():
    """The C library if it is glibc on Linux (whose allocator `tune_allocator` and
    `release_freed_memory` talk to), loaded once; else None."""
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:  # pragma: no cover
        return None


def apply_threads(threads: int) -> None:
    """Set the OpenMP/BLAS thread count used by PySCF and NumPy."""
    from pyscf import lib

    lib.num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:
        pass


def prefaulted_empty(nbytes: int):
    """An uninitialised float64 array of nbytes // 8 elements, its pages mapped up front.

    On Linux the memory comes from an anonymous mmap with MAP_POPULATE, so
    the kernel maps every page in one call instead of taking one fault per
    page at first write: measured on this project's 2-core VM, 0.37 s instead
    of 2.5 s for 1 GB.  Elsewhere it is plain `numpy.empty`.  The mapping is
    released when the last view of the array goes away.
    """
    import mmap

    import numpy as np

    n = max(int(nbytes) // 8, 1)
    populate = getattr(mmap, "MAP_POPULATE", 0)
    if populate and hasattr(mmap, "MAP_ANONYMOUS"):
        try:
            buf = mmap.mmap(-1, n * 8, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | populate)
        except OSError:  # pragma: no cover - e.g. an address-space limit
            return np.empty(n)
        return np.frombuffer(buf, dtype=np.float64)
    return np.empty(n)  # pragma: no cover
