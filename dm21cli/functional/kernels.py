"""The compiled kernels of dm21cli/functional/_kernels.c, _gridcoulomb.c and _beckegrid.c
(one library), called through ctypes.

They are built when the package is installed (an optional extension: without
a C compiler the install still succeeds and NumPy does the same work).
`available()` says whether they are in use; DM21_NO_KERNELS=1 turns them off,
which the tests use to check both paths against each other.

Each kernel releases the GIL (ctypes does), so threads run them in parallel.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The ABI stamp this module calls the library with (``dm21_kernels_abi`` in _kernels.c): a
#: library with another stamp, or none, was built from other sources and is refused.
KERNELS_ABI = 4
#: What running without the kernels costs, for the warning (measured with benchmarks/speed.py,
#: whole processes on 2 cores; issue 24).
COST_WITHOUT = ("DM21 runs its exchange features and network in libcint and NumPy instead, "
                "measured 2.5 times slower (benzene/def2-SVP: 11.4x B3LYP's time instead of "
                "about 4.5x)")

_LIB: ctypes.CDLL | None | bool = False  # False: not looked for yet
_STATUS: Status | None = None


@dataclass(frozen=True)
class Status:
    """Whether the compiled kernels are in use, and if not why.

    state: "loaded", "off" (DM21_NO_KERNELS), "missing" (no library next to this
    module), "stale" (built from other sources: no or another ABI stamp) or
    "broken" (the file does not load).  path: the library file, if one was found.
    """

    state: str
    reason: str
    path: str | None = None

    @property
    def loaded(self) -> bool:
        return self.state == "loaded"


def _signatures(lib: ctypes.CDLL) -> None:
    """Declare every function's argument and return types (AttributeError: one is missing)."""
    p, n, i, d = ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int, ctypes.c_double
    signatures = {
        "dm21_block_forward": ([p, p, p, p, ctypes.c_float, n, n, p, p, p], None),
        "dm21_block_backward": ([p, p, p, p, n, n], None),
        "dm21_contract_packed_f32": ([p, p, p, n, n, n, n, n, n], None),
        "dm21_contract_packed_f64": ([p, p, p, n, n, n, n, n, n], None),
        "dm21_pack_lower_f32": ([p, p, n, n, n, n, n], None),
        "dm21_pack_lower_f64": ([p, p, n, n, n, n, n], None),
        "dm21_gc_fill_f32": ([p, n, p, p, p, i, p, n, n, p, n, n, n], i),
        "dm21_gc_fill_f64": ([p, n, p, p, p, i, p, n, n, p, n, n, n], i),
        "dm21_gc_features": ([p, n, p, p, p, i, p, n, n, n, p, p, n, n, p, d, p], i),
        "dm21_gc_ip_force": ([p, n, p, p, p, p, p, i, p, n, n, n, p, p, p, p, n, n, p, d, p], i),
        "dm21_gc_init": ([], None),
        "dm21_gc_herm_index": ([i, i, i], i),
        "dm21_gc_lmax": ([], i),
        "dm21_becke_dw": ([p, p, p, p, n, n, n, p, p, i], i),
    }
    for name, (argtypes, restype) in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, restype


def _library_file():
    """The built library next to this module, or None."""
    import importlib.machinery

    here = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_kernels{suffix}"
        if path.is_file():
            return path
    return None


def _load() -> ctypes.CDLL | None:
    """The library if it is there, loads and carries this module's ABI stamp; else None.
    Either way `status()` says what was found."""
    global _STATUS
    if os.environ.get("DM21_NO_KERNELS", "") not in ("", "0"):
        _STATUS = Status("off", "turned off by DM21_NO_KERNELS")
        return None
    path = _library_file()
    if path is None:
        _STATUS = Status("missing", "not built: no _kernels library in "
                         f"{Path(__file__).resolve().parent}")
        return None
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        _STATUS = Status("broken", f"{path.name} does not load: {exc}", str(path))
        return None
    stamp = getattr(lib, "dm21_kernels_abi", None)
    if stamp is None:
        _STATUS = Status("stale", f"{path} has no ABI stamp: it was built from older sources",
                         str(path))
        return None
    stamp.argtypes, stamp.restype = [], ctypes.c_int
    abi = stamp()
    if abi != KERNELS_ABI:
        _STATUS = Status("stale", f"{path} was built from other sources (ABI {abi}; this "
                         f"dm21cli calls ABI {KERNELS_ABI})", str(path))
        return None
    try:
        _signatures(lib)
    except AttributeError as exc:  # pragma: no cover - a stamp without its functions
        _STATUS = Status("broken", f"{path} lacks a function: {exc}", str(path))
        return None
    lib.dm21_gc_init()  # the Boys-function table, once, before any thread uses it
    _STATUS = Status("loaded", "in use", str(path))
    return lib


def lib() -> ctypes.CDLL | None:
    """The loaded library, or None (looked for once per process)."""
    global _LIB
    if _LIB is False:
        _LIB = _load()
    return _LIB


def available() -> bool:
    return lib() is not None


def status() -> Status:
    """What `lib()` found (looking for the library first if it has not)."""
    if lib() is not None:
        return _STATUS if _STATUS is not None and _STATUS.loaded else Status("loaded", "in use")
    if _STATUS is None or _STATUS.loaded:  # turned off in process (the tests do)
        return Status("off", "turned off in this process")
    return _STATUS


def rebuild_command() -> str:
    """The command that builds the kernels for this installation."""
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "dm21cli" / "functional" / "_kernels.c").is_file():
        return f"pip install -e {root}"  # a checkout: the editable install builds them in place
    return "pip install --force-reinstall --no-deps dm21cli"


def warning() -> str | None:
    """The warning a DM21 run starts with when the kernels are not in use (None: they are)."""
    st = status()
    if st.loaded:
        return None
    if st.state == "off":
        return f"WARNING compiled kernels {st.reason}: {COST_WITHOUT}"
    return (f"WARNING compiled kernels not in use, {st.reason}: {COST_WITHOUT}. Rebuild them "
            f"with: {rebuild_command()} (needs a C compiler)")


def ptr(a: np.ndarray) -> int:
    return a.ctypes.data


def _threads() -> int:
    try:
        from pyscf import lib as pyscf_lib

        return max(1, pyscf_lib.num_threads())
    except ImportError:  # pragma: no cover
        return 1


def _over_chunks(ng: int, chunk: int, run) -> list:
    """run(g0, g1) on the chunks of ng grid points, split among the threads PySCF is
    allowed (each call releases the GIL); returns their results in order."""
    nchunks = -(-ng // chunk)
    threads = max(1, min(_threads(), nchunks))
    bounds = [min(ng, chunk * (nchunks * k // threads)) for k in range(threads + 1)]
    if threads == 1:
        return [run(0, ng)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda k: run(bounds[k], bounds[k + 1]), range(threads)))


#: Grid points per chunk of the packed exchange integrals (see _kernels.c):
#: one chunk of nu for benzene/def2-SVP is 6.7 MB read as one stream.
CHUNK = 256


def contract_packed(packed: np.ndarray, e_mat: np.ndarray, out: np.ndarray, chunk: int = CHUNK) -> None:
    """out[s, b, g] = sum_d nu_bd(g) E[s, d, g] from the chunked lower triangle.

    packed: (npair * ng,) float32 or float64 in the chunked layout of
    _kernels.c; e_mat: (nspin, nao, ng) float64; out: same shape, overwritten.
    The grid is split among the threads PySCF is allowed.
    """
    fn = {np.dtype(np.float32): lib().dm21_contract_packed_f32,
          np.dtype(np.float64): lib().dm21_contract_packed_f64}[packed.dtype]
    nspin, nao, ng = e_mat.shape
    if not (packed.flags.c_contiguous and e_mat.flags.c_contiguous and out.flags.c_contiguous
            and e_mat.dtype == np.float64 and out.dtype == np.float64):
        raise ValueError("contract_packed needs C-contiguous arrays, E and F in float64")
    if packed.size != nao * (nao + 1) // 2 * ng or out.shape != e_mat.shape:
        raise ValueError("contract_packed: shapes do not match")
    _over_chunks(ng, chunk, lambda g0, g1: fn(ptr(packed), ptr(e_mat), ptr(out), nspin, nao, ng,
                                              chunk, g0, g1))


def pack_lower(full: np.ndarray, packed: np.ndarray, ng: int, col0: int, chunk: int = CHUNK) -> None:
    """Lower triangle of full (nao, nao, n) float64, points col0:col0+n of packed.

    packed: (npair * ng,) float32 or float64 in the chunked layout; col0 a
    multiple of chunk, and n too unless col0 + n == ng.
    """
    fn = {np.dtype(np.float32): lib().dm21_pack_lower_f32,
          np.dtype(np.float64): lib().dm21_pack_lower_f64}[packed.dtype]
    nao, _, n = full.shape
    if not (full.dtype == np.float64 and full.flags.c_contiguous and packed.flags.c_contiguous):
        raise ValueError("pack_lower needs C-contiguous arrays and float64 integrals")
    if packed.size != nao * (nao + 1) // 2 * ng or col0 % chunk or (n % chunk and col0 + n != ng):
        raise ValueError("pack_lower: shapes or offsets do not match the chunked layout")
    fn(ptr(full), ptr(packed), nao, n, ng, chunk, col0)


def _check_plan(plan, derivative: bool = False) -> None:
    if plan.derivative != derivative:
        raise ValueError("the grid Coulomb kernel: the force plan where nu's is needed, or "
                         "the reverse")
    if plan.lmax > lib().dm21_gc_lmax():
        raise ValueError(f"the grid Coulomb kernel: angular momentum {plan.lmax} of a shell pair "
                         f"is over its {lib().dm21_gc_lmax()}")


def fill_coulomb(plan, coords, omegas, packed: np.ndarray, chunk: int = CHUNK) -> None:
    """nu at coords (n, 3) bohr for every omega (1/bohr; 0: 1/r) at once, by the
    McMurchie-Davidson kernel (_gridcoulomb.c) from plan (`hermite.build_plan`),
    written into packed ((n_omega, npair * n) float32 or float64, the chunked
    layout).  The chunks are split among the threads PySCF is allowed.
    """
    fn = {np.dtype(np.float32): lib().dm21_gc_fill_f32,
          np.dtype(np.float64): lib().dm21_gc_fill_f64}[packed.dtype]
    ng = len(coords)
    npair = plan.nao * (plan.nao + 1) // 2
    if not packed.flags.c_contiguous or packed.shape != (len(omegas), npair * ng):
        raise ValueError("fill_coulomb: the packed array does not match the points")
    _check_plan(plan)
    coords = np.ascontiguousarray(coords, dtype=np.float64)
    omega_arr = np.asarray(omegas, dtype=np.float64)
    status = _over_chunks(ng, chunk, lambda g0, g1: fn(
        ptr(plan.pairs), len(plan.pairs), ptr(plan.prim), ptr(plan.mmat), ptr(omega_arr),
        len(omega_arr), ptr(coords), ng, plan.nao, ptr(packed), chunk, g0, g1))
    if any(status):
        raise MemoryError("fill_coulomb: could not allocate the kernel's scratch")


def coulomb_features(plan, coords, omegas, e_mat: np.ndarray, out: np.ndarray,
                     screen: float = 0.0) -> np.ndarray:
    """out[w, s, b, g] = sum_d nu_bd(g) E[s, d, g] for every omega (1/bohr; 0: 1/r)
    without storing nu: the McMurchie-Davidson kernel contracts each shell pair's
    integrals while they are in cache (_gridcoulomb.c).

    plan: `hermite.build_plan(mol)`; coords: (n, 3) bohr; e_mat: (nspin, nao, n)
    float64; out: (n_omega, nspin, nao, n) float64, overwritten.  screen > 0: a shell
    pair is left out of a block of 64 points where plan.bound times its largest |E|
    there is below screen (no term of F it would add exceeds screen).  The points are
    split among PySCF's threads.  Returns the shell-pair blocks (computed, left out).
    """
    nspin, nao, ng = e_mat.shape
    if not (e_mat.flags.c_contiguous and out.flags.c_contiguous and e_mat.dtype == np.float64
            and out.dtype == np.float64 and out.shape == (len(omegas), nspin, nao, ng)
            and nao == plan.nao and len(coords) == ng):
        raise ValueError("the grid Coulomb kernel: arrays do not match")
    _check_plan(plan)
    coords = np.ascontiguousarray(coords, dtype=np.float64)
    omega_arr = np.asarray(omegas, dtype=np.float64)

    def run(g0, g1):
        stats = np.zeros(2, dtype=np.int64)
        status = lib().dm21_gc_features(
            ptr(plan.pairs), len(plan.pairs), ptr(plan.prim), ptr(plan.mmat), ptr(omega_arr),
            len(omega_arr), ptr(coords), ng, nao, nspin, ptr(e_mat), ptr(out), g0, g1,
            ptr(plan.bound), float(screen), ptr(stats))
        return status, stats

    return _finished(_over_chunks(ng, 64, run), "the grid Coulomb kernel could not allocate its scratch")


def coulomb_ip_force(plan, coords, omegas, e_mat: np.ndarray, c: np.ndarray, natm: int,
                     own: np.ndarray | None = None, screen: float = 0.0,
                     stats: np.ndarray | None = None) -> np.ndarray:
    """The exchange features' integral term of the nuclear gradient (natm, 3) Ha/bohr:
    -sum_g sum_bd W_bd(g) d nu_bd(g)/dR_A, moving the AOs on atom A, with
    W_bd(g) = sum_s c[w, s, g] E[s, b, g] E[s, d, g] for each omega w (1/bohr; 0: 1/r).
    The derivative integrals are summed with W as they are computed (_gridcoulomb.c).

    plan: `hermite.build_plan(mol, derivative=True)`; coords: (n, 3) bohr; e_mat:
    (nspin, nao, n) float64; c: (n_omega, nspin, n) float64.  own: (n,) the atom each
    point belongs to (negative: none) or None; if given, the grid response's term of
    the point itself is included: its atom receives minus the sum over all atoms at
    the point.  Points in order of own are fastest.  screen > 0: a shell pair is left
    out of a block of 64 points where it could move no force component by screen
    (plan.bound times sum |W|).  stats: (2,) int64 or None, receives the shell-pair
    blocks (computed, left out).  The points are split among PySCF's threads.
    """
    nspin, nao, ng = e_mat.shape
    if not (e_mat.flags.c_contiguous and c.flags.c_contiguous and e_mat.dtype == np.float64
            and c.dtype == np.float64 and c.shape == (len(omegas), nspin, ng)
            and nao == plan.nao and len(coords) == ng and (own is None or len(own) == ng)):
        raise ValueError("the grid Coulomb force kernel: arrays do not match")
    _check_plan(plan, derivative=True)
    if own is not None:
        own = np.ascontiguousarray(own, dtype=np.int64)
    if max(plan.atoms.max(initial=-1), -1 if own is None else own.max(initial=-1)) >= natm:
        raise ValueError("the grid Coulomb force kernel: an atom index is not below natm")
    coords = np.ascontiguousarray(coords, dtype=np.float64)
    omega_arr = np.asarray(omegas, dtype=np.float64)

    def run(g0, g1):
        force, counts = np.zeros((natm, 3)), np.zeros(2, dtype=np.int64)
        status = lib().dm21_gc_ip_force(
            ptr(plan.pairs), len(plan.pairs), ptr(plan.prim), ptr(plan.mmat), ptr(plan.ratio),
            ptr(plan.atoms), ptr(omega_arr), len(omega_arr), ptr(coords), ng, nao, nspin,
            ptr(e_mat), ptr(c), None if own is None else ptr(own), ptr(force), g0, g1,
            ptr(plan.bound), float(screen), ptr(counts))
        return status, (force, counts)

    results = _over_chunks(ng, 64, run)
    _finished([(status, None) for status, _ in results],
              "the grid Coulomb force kernel could not allocate its scratch")
    if stats is not None:
        stats += sum(counts for _, (_, counts) in results)
    return sum(force for _, (force, _) in results)


def becke_weight_derivatives(coords: np.ndarray, qw: np.ndarray, own: np.ndarray,
                             atom_coords: np.ndarray, adjust: np.ndarray) -> np.ndarray:
    """dw_g/dR_A (natm, 3, n) of Becke's partition weights w_g = qw_g P_own(r_g) / Z(r_g)
    (_beckegrid.c; the same numbers as PySCF's VXCbecke_weight_derivative, natm times
    fewer switching functions).

    coords: (n, 3) bohr; qw: (n,) quadrature weights; own: (n,) the atom each point
    belongs to (negative: a padding point, derivative 0); atom_coords: (natm, 3) bohr;
    adjust: (natm, natm) the atomic-size adjustment a_BC (zeros without one; a_BB = 0, as
    PySCF's adjustments have it, see _beckegrid.c).  The own atom's derivative is minus the
    sum of the others'.  Split among PySCF's threads.
    """
    n, natm = len(coords), len(atom_coords)
    coords = np.ascontiguousarray(coords, dtype=np.float64)
    qw = np.ascontiguousarray(qw, dtype=np.float64)
    own = np.ascontiguousarray(own, dtype=np.int32)
    atom_coords = np.ascontiguousarray(atom_coords, dtype=np.float64)
    adjust = np.ascontiguousarray(adjust, dtype=np.float64)
    if (coords.shape != (n, 3) or qw.shape != (n,) or own.shape != (n,)
            or atom_coords.shape != (natm, 3) or adjust.shape != (natm, natm)
            or own.max(initial=-1) >= natm or np.any(np.diag(adjust))):
        raise ValueError("becke_weight_derivatives: arrays do not match (or a_BB is not 0)")
    dw = np.empty((natm, 3, n))
    results = _over_chunks(n, 64, lambda g0, g1: (lib().dm21_becke_dw(
        ptr(dw), ptr(coords), ptr(qw), ptr(own), n, g0, g1, ptr(atom_coords), ptr(adjust),
        natm), None))
    _finished(results, "the Becke weight kernel could not allocate its work space")
    return dw


def _finished(results: list, message: str) -> np.ndarray:
    """The summed (computed, left out) counts of the threads' (status, counts) results;
    MemoryError(message) if a thread failed."""
    if any(status for status, _ in results):
        raise MemoryError(message)
    return sum((counts for _, counts in results if counts is not None), np.zeros(2, dtype=np.int64))
