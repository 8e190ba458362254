"""The compiled kernels of dm21cli/functional/_kernels.c, called through ctypes.

They are built when the package is installed (an optional extension: without
a C compiler the install still succeeds and NumPy does the same work).
`available()` says whether they are in use; DM21_NO_KERNELS=1 turns them off,
which the tests use to check both paths against each other.

Each kernel releases the GIL (ctypes does), so threads run them in parallel.
"""

from __future__ import annotations

import ctypes
import os

import numpy as np

_LIB: ctypes.CDLL | None | bool = False  # False: not looked for yet


def _load() -> ctypes.CDLL | None:
    import importlib.machinery
    from pathlib import Path

    if os.environ.get("DM21_NO_KERNELS", "") not in ("", "0"):
        return None
    here = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_kernels{suffix}"
        if not path.is_file():
            continue
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:  # pragma: no cover - a broken build
            return None
        p, n = ctypes.c_void_p, ctypes.c_ssize_t
        signatures = {
            "dm21_block_forward": [p, p, p, p, ctypes.c_float, n, n, p, p, p],
            "dm21_block_backward": [p, p, p, p, n, n],
            "dm21_contract_packed_f32": [p, p, p, n, n, n, n, n, n],
            "dm21_contract_packed_f64": [p, p, p, n, n, n, n, n, n],
            "dm21_pack_lower_f32": [p, p, n, n, n, n, n],
            "dm21_pack_lower_f64": [p, p, n, n, n, n, n],
        }
        i = ctypes.c_int
        fill = [p, p, p, i, p, i, p, p, p, n, n, n, n]
        for name, argtypes in signatures.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = argtypes, None
        for name in ("dm21_fill_packed_f32", "dm21_fill_packed_f64"):
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = fill, ctypes.c_int
        return lib
    return None


def lib() -> ctypes.CDLL | None:
    """The loaded library, or None (looked for once per process)."""
    global _LIB
    if _LIB is False:
        _LIB = _load()
    return _LIB


def available() -> bool:
    return lib() is not None


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


def fill_packed(mol, coords, packed: np.ndarray, chunk: int = CHUNK) -> None:
    """nu at coords (n, 3) bohr for the range-separation parameter mol holds, written
    straight into packed ((npair * n,) float32 or float64, the chunked layout).

    libcint's int1e_grids is called shell pair by shell pair for one chunk of
    points at a time (see _kernels.c); the chunks are split among the threads
    PySCF is allowed.  MemoryError if a thread cannot allocate its buffers.
    """
    from pyscf.gto import moleintor

    fn = {np.dtype(np.float32): lib().dm21_fill_packed_f32,
          np.dtype(np.float64): lib().dm21_fill_packed_f64}[packed.dtype]
    ng = len(coords)
    nao = mol.nao_nr()
    if not packed.flags.c_contiguous or packed.size != nao * (nao + 1) // 2 * ng:
        raise ValueError("fill_packed: the packed array does not match the points")
    if mol.cart:
        raise ValueError("fill_packed: spherical basis functions only")
    atm = np.asarray(mol._atm, dtype=np.int32, order="C")
    bas = np.asarray(mol._bas, dtype=np.int32, order="C")
    env = np.append(np.asarray(mol._env, dtype=np.float64), np.asarray(coords, dtype=np.float64).ravel())
    env[11] = ng  # NGRIDS, PTR_GRIDS of libcint's cint.h
    env[12] = mol._env.size
    ao_loc = np.asarray(mol.ao_loc_nr(), dtype=np.int32)
    intor = ctypes.cast(getattr(moleintor.libcgto, "int1e_grids_sph"), ctypes.c_void_p).value
    opt = moleintor.make_cintopt(atm, bas, env, "int1e_grids_sph")
    status = _over_chunks(ng, chunk, lambda g0, g1: fn(
        intor, opt, ptr(atm), len(atm), ptr(bas), len(bas), ptr(env), ptr(ao_loc), ptr(packed),
        ng, chunk, g0, g1))
    if any(status):
        raise MemoryError("fill_packed: could not allocate the integral buffers")
