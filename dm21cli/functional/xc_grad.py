"""Nuclear gradient of the DM21 exchange-correlation energy at a fixed density matrix.

E_xc = sum_g w_g e(x_g), x the eleven network inputs (see `dm21cli.network`),
evaluated on the grid points the energy used (`DM21XC.blocks`).  At a fixed
density matrix D^s (the orbital response is PySCF's energy-weighted density
term, see `dm21cli.scf.grad`), moving atom A moves the atomic orbitals chi_u
centred on it: d chi_u / dR_A = -nabla chi_u for u on A.  With
c = w de/dx per grid point, the force on A is sum_{u on A} T_u, where per AO u
(nabla acting on the electron coordinate, atomic units throughout):

* meta-GGA inputs (rho_s, grad rho_s, tau_s; v_rho, v_grad = de/d(grad rho_s),
  v_tau the weighted derivatives, (D chi)_u = sum_v D^s_uv chi_v):
      T_u = sum_g nabla chi_u A_u + sum_i nabla d_i chi_u B_iu,
      A_u = -2 v_rho (D chi)_u - 2 sum_i v_grad,i (D d_i chi)_u,
      B_iu = -2 v_grad,i (D chi)_u - v_tau (D d_i chi)_u;
* local exact exchange hfx_s^w = -1/2 sum_bd E_b E_d nu_bd (E_b = (D chi)_b,
  nu_bd(r) = <chi_b | v_w(|r - r'|) | chi_d>, see `dm21cli.features`):
      d hfx / dR_A = sum_{u on A} [nabla chi_u (D F)_u + E_u G_u],
      F_b = sum_d nu_bd E_d,  G_b(r) = sum_d <nabla chi_b | v_w(|r - r'|) | chi_d> E_d,
  the first term through E (A_u gains c_hfx (D F)_u), the second through the
  integrals (both AOs of nu_bd move; nu is symmetric, hence no 1/2).  Summed
  over the points, the second is -sum_g sum_bd W_bd d nu_bd / dR_A with
  W_bd = c_hfx E_b E_d: the exchange backend's `integral_force`
  (`dm21cli.functional.backends`; the compiled kernel sums the derivative
  integrals with W shell pair by shell pair as it computes them, libcint's
  path forms G through PySCF's seminumerical-exchange gradient driver).

Grid response (optional).  The grid points move with their atoms and the
Becke weights change: dE/dR_A gains sum_g (dw_g/dR_A) e_g, and for the points
g of atom A the derivative of x_g with respect to the point itself.  Every
input is invariant when the point and all atoms move together (also hfx: nu
depends only on differences r - R), so nabla_r x_g = -sum_B dx_g/dR_B: the
points of A subtract the sum of their contributions over all AOs.
"""

from __future__ import annotations

import time

import numpy as np

from dm21cli.functional import backends
from dm21cli.functional.backends import OMEGAS

#: Grid points per piece of an energy block in the gradient (bounds the AO
#: second derivatives, the derivative-integral contractions and temporaries).
MIN_PIECE_POINTS = 64
MAX_PIECE_POINTS = 4096
#: Fraction of the memory budget those arrays may use.
PIECE_MEMORY_FRACTION = 0.25
#: Index of d_i d_j chi in PySCF's AO derivative layout (deriv=2).
_D2 = ((4, 5, 6), (5, 7, 8), (6, 8, 9))


def becke_adjust_table(mol, grids) -> np.ndarray:
    """(natm, natm) the atomic-size adjustment a_BC of the grid's Becke partitioning
    (nu_BC = mu_BC + a_BC (1 - mu_BC^2)), zeros without one."""
    natm = mol.natm
    if callable(grids.radii_adjust) and grids.atomic_radii is not None:
        f_adjust = grids.radii_adjust(mol, grids.atomic_radii)
        return np.asarray([[float(np.squeeze(f_adjust(i, j, 0))) for j in range(natm)]
                           for i in range(natm)])
    return np.zeros((natm, natm))


def weight_derivatives(mol, grids, points: np.ndarray,
                       adjust: np.ndarray | None = None) -> np.ndarray:
    """dw_g/dR_A (natm, 3, n) of the Becke weights at grid points `points` (indices).

    Uses the atom each point belongs to and its quadrature weight
    (`grids.atm_idx`, `grids.quadrature_weights`, kept through PySCF's
    sorting and density pruning).  Original Becke partitioning (PySCF's
    default: the compiled kernel, else PySCF's own routine, which forms natm
    times more switching functions) and Laqua-Kussmann-Ochsenfeld are supported.
    adjust: `becke_adjust_table(mol, grids)`, if the caller holds it already.
    """
    from pyscf.dft import gen_grid

    from dm21cli.functional import kernels

    if grids.atm_idx is None or grids.quadrature_weights is None:
        raise NotImplementedError("grid response needs grids.atm_idx (PySCF >= 2.5 grids)")
    atm_idx = np.ascontiguousarray(grids.atm_idx[points], dtype=np.int32)
    coords = np.ascontiguousarray(grids.coords[points], dtype=np.float64)
    if grids.becke_scheme is gen_grid.becke_lko:
        from pyscf.grad.rks import get_dw_partition_sorted

        own = np.where(atm_idx < 0, 0, atm_idx)  # padding points: weight 0 (masked below)
        weights = np.ascontiguousarray(grids.weights[points])
        dw = get_dw_partition_sorted(mol, own, coords, weights, grids.radii_adjust,
                                     grids.atomic_radii).transpose(1, 0, 2)
        dw = np.ascontiguousarray(dw)
    elif grids.becke_scheme is gen_grid.original_becke:
        table = becke_adjust_table(mol, grids) if adjust is None else adjust
        qw = np.ascontiguousarray(grids.quadrature_weights[points], dtype=np.float64)
        atm_coords = np.asarray(mol.atom_coords(), order="C")
        if kernels.available() and not np.diag(table).any():  # (PySCF's adjustments: a_BB = 0)
            return kernels.becke_weight_derivatives(coords, qw, atm_idx, atm_coords, table)
        dw = _pyscf_becke_derivatives(coords, qw, atm_idx, atm_coords, table)
    else:
        raise NotImplementedError(
            f"grid response for the Becke scheme {grids.becke_scheme.__name__} is not implemented")
    dw[:, :, atm_idx < 0] = 0.0
    return dw


def _pyscf_becke_derivatives(coords, qw, atm_idx, atm_coords, table) -> np.ndarray:
    """`weight_derivatives` of the original Becke scheme by PySCF's C routine (natm^3
    switching functions per point; the compiled kernels' is natm^2)."""
    import ctypes

    from pyscf.dft.numint import libdft

    if not hasattr(libdft, "VXCbecke_weight_derivative"):  # pragma: no cover - old PySCF
        raise NotImplementedError("grid response needs PySCF's VXCbecke_weight_derivative")
    n, natm = len(atm_idx), len(atm_coords)
    own = np.where(atm_idx < 0, 0, atm_idx).astype(np.int32)
    qw = qw.copy()
    qw[atm_idx < 0] = 0.0
    dw = np.zeros((natm, 3, n))
    libdft.VXCbecke_weight_derivative(
        dw.ctypes.data_as(ctypes.c_void_p), coords.ctypes.data_as(ctypes.c_void_p),
        qw.ctypes.data_as(ctypes.c_void_p), atm_coords.ctypes.data_as(ctypes.c_void_p),
        np.ascontiguousarray(table).ctypes.data_as(ctypes.c_void_p),
        own.ctypes.data_as(ctypes.c_void_p), ctypes.c_int(n), ctypes.c_int(natm))
    # the weights do not change when everything moves together: the own
    # atom's derivative is minus the sum of the others'
    dw[own, :, np.arange(n)] = -dw.sum(axis=0).T
    return dw


def piece_points(nao: int, natm: int, nspin: int, max_memory_mb: float, grid_response: bool,
                 held_mb: float = 0.0, with_g: bool = True) -> int:
    """Grid points per piece so that the gradient's per-point arrays fit
    PIECE_MEMORY_FRACTION of the memory budget and half of what the process,
    holding held_mb, has left of it.  with_g: G is formed (the backend's `forms_g`)."""
    per_point = 8 * ((13 + 16 * nspin + (6 * nspin * len(OMEGAS) if with_g else 0)) * nao + 64
                     + (3 * natm if grid_response else 0))
    room_mb = min(PIECE_MEMORY_FRACTION * max_memory_mb, 0.5 * max(max_memory_mb - held_mb, 0.0))
    blk = int(room_mb * 1e6 // per_point)
    return max(MIN_PIECE_POINTS, min(MAX_PIECE_POINTS, blk))


def xc_nuc_grad(xc, mol, grids, dm_spin: np.ndarray, restricted: bool, *,
                grid_response: bool = False, kernel=None, max_memory_mb: float | None = None,
                timings_s: dict | None = None) -> tuple[float, np.ndarray]:
    """E_xc and dE_xc/dR (natm, 3) in Ha and Ha/bohr at a fixed density matrix.

    xc: the `DM21XC` whose energy this is (its grid points and exchange
    integrals are used); grids: the built grid it evaluated; dm_spin: (2, nao,
    nao) alpha and beta density matrices (restricted: D/2 each);
    kernel: callable x (n, 11) -> (e (n,), de/dx (n, 11)) in float64; default
    the float64 copy of xc.network (the precision of the final energy).
    grid_response: include the motion of the grid points and Becke weights.
    timings_s: a dict that receives wall seconds per phase.
    Returns (E_xc with that kernel, gradient).
    """
    if kernel is None:
        kernel = xc.network
        if np.dtype(kernel.dtype) != np.float64:
            kernel = kernel.astype(np.float64)
    if grid_response and grids.atm_idx is None:
        raise NotImplementedError("grid response needs grids.atm_idx (PySCF >= 2.5 grids)")
    run = _GradientRun(xc, mol, grids, np.asarray(dm_spin, dtype=np.float64), restricted,
                       grid_response, xc.max_memory_mb if max_memory_mb is None else max_memory_mb)
    clock = time.perf_counter
    t_mark = clock()
    for at, _, _, rho, x, f_mat, e_mat in xc.blocks(mol, grids, run.dm_spin, restricted):
        t0 = clock()
        run.timings["features"] += t0 - t_mark
        e, de = kernel(x)
        run.timings["network"] += clock() - t0
        run.block(at, rho, e, de, f_mat, e_mat)
        t_mark = clock()
    force = run.finish()
    if timings_s is not None:
        for key, val in run.timings.items():
            timings_s[key] = timings_s.get(key, 0.0) + val
    return run.exc, force


def _weighted_derivatives(de: np.ndarray, w: np.ndarray, rho: np.ndarray, restricted: bool) -> list:
    """Per effective spin t (one if restricted: both spins add), (v_rho (n,), v_grad (3, n),
    v_tau (n,), c_hfx [(n,) per omega]): the network's derivatives de (n, 11) by its inputs
    times the weights w (n,), as the terms of the module's docstring use them; rho (2, 5, n)."""
    grad_tot = rho[0, 1:4] + rho[1, 1:4]
    coef = []
    for t in range(1 if restricted else 2):
        ss = [0, 1] if restricted else [t]
        v_rho = sum(de[:, s] for s in ss) * w
        v_grad = sum(2.0 * (de[:, 2] * grad_tot + de[:, 3 + s] * rho[s, 1:4]) for s in ss) * w
        v_tau = sum(de[:, 5 + s] for s in ss) * w
        c_hfx = [sum(de[:, 7 + 2 * s + k] for s in ss) * w for k in range(len(OMEGAS))]
        coef.append((v_rho, v_grad, v_tau, c_hfx))
    return coef


def _meta_gga_ab(ao: np.ndarray, dm: np.ndarray, v_rho, v_grad, v_tau):
    """A (m, nao) and B [(m, nao) per direction] of the module's docstring for one spin:
    ao (10, m, nao) with second derivatives, dm (nao, nao), the weighted derivatives at
    the m points."""
    d_chi = ao[0] @ dm  # (m, nao): (D chi)_u
    d_dchi = [ao[i] @ dm for i in (1, 2, 3)]
    a = d_chi * (-2.0 * v_rho)[:, None]
    b = []
    for i in range(3):
        a -= d_dchi[i] * (2.0 * v_grad[i])[:, None]
        b.append(d_chi * (-2.0 * v_grad[i])[:, None] - d_dchi[i] * v_tau[:, None])
    return a, b


def _add_ao_terms(p_mat: np.ndarray, ao: np.ndarray, a: np.ndarray, b: list) -> None:
    """p_mat[x] (m, nao) += nabla_x chi A + sum_i nabla_x nabla_i chi B_i."""
    for xdir in range(3):
        p_mat[xdir] += ao[1 + xdir] * a
        for i in range(3):
            p_mat[xdir] += ao[_D2[xdir][i]] * b[i]


class _GradientRun:
    """The sums of one `xc_nuc_grad` call, block by block of the energy's grid points."""

    def __init__(self, xc, mol, grids, dm_spin, restricted, grid_response, max_memory_mb):
        self.xc, self.mol, self.grids, self.dm_spin = xc, mol, grids, dm_spin
        self.nspin = 1 if restricted else 2
        self.restricted, self.grid_response = restricted, grid_response
        self.max_memory_mb = max_memory_mb
        self.atm_idx = grids.atm_idx if grid_response else None
        self.timings = {"features": 0.0, "network": 0.0, "ao_second_derivatives": 0.0,
                        "meta_gga": 0.0, "derivative_integrals": 0.0, "exchange_terms": 0.0,
                        "grid_weights": 0.0}
        self.t_ao = np.zeros((3, dm_spin.shape[-1]))  # sum over points of every AO's contribution
        self.force = np.zeros((mol.natm, 3))  # the integral term and the grid response
        self.exc = 0.0
        self.backend = None  # chosen at the first block that needs the integral term
        self.piece = None  # sized at the first block, when its arrays and the caches are held
        self.becke_adjust = None  # the grid's a_BC, at the first block with the grid response

    def block(self, at, rho, e, de, f_mat, e_mat) -> None:
        """One block of `DM21XC.blocks`: its energy density e (n,) and derivatives de (n, 11)."""
        w = self.grids.weights[at]
        self.exc += float(np.dot(w, e))
        points = np.arange(at.start, at.stop) if isinstance(at, slice) else at
        coef = _weighted_derivatives(de, w, rho, self.restricted)
        with_hfx = any(np.any(c) for cf in coef for c in cf[3])
        if with_hfx and self.backend is None:  # the energy's, with its plans and counts
            self.backend = self.xc.backend or backends.select(self.mol)
        if self.piece is None:
            from dm21cli.core.resources import current_rss_mb

            nao = self.dm_spin.shape[-1]
            self.piece = piece_points(nao, self.mol.natm, self.nspin, self.max_memory_mb,
                                      self.grid_response, held_mb=current_rss_mb(),
                                      with_g=self.backend is None or self.backend.forms_g)
        for q0 in range(0, len(points), self.piece):
            q1 = min(q0 + self.piece, len(points))
            self._piece(points[q0:q1], slice(q0, q1), coef, with_hfx, e, f_mat, e_mat)

    def _piece(self, pts, sel: slice, coef, with_hfx: bool, e, f_mat, e_mat) -> None:
        """The points pts (indices into the grid; sel: their places in the block)."""
        from pyscf.dft import numint

        clock, timings = time.perf_counter, self.timings
        ta = clock()
        ao = numint.eval_ao(self.mol, self.grids.coords[pts], deriv=2)  # (10, m, nao)
        tb = clock()
        timings["ao_second_derivatives"] += tb - ta
        p_mat = np.zeros((3, len(pts), ao.shape[-1]))  # per point and AO, summed over spins
        for t in range(self.nspin):
            v_rho, v_grad, v_tau, c_hfx = coef[t]
            a, b = _meta_gga_ab(ao, self.dm_spin[t], v_rho[sel], v_grad[:, sel], v_tau[sel])
            tc = clock()
            timings["meta_gga"] += tc - tb
            if with_hfx:
                for k in range(len(OMEGAS)):
                    # A_u += c_hfx (D F)_u: F^T D, D symmetric
                    a += (f_mat[k, t][:, sel].T @ self.dm_spin[t]) * c_hfx[k][sel][:, None]
            td = clock()
            timings["exchange_terms"] += td - tc
            _add_ao_terms(p_mat, ao, a, b)
            tb = clock()
            timings["meta_gga"] += tb - td
        own = self.atm_idx[pts] if self.grid_response else None
        if with_hfx:
            tc = clock()
            c = np.array([[coef[t][3][k][sel] for t in range(self.nspin)]
                          for k in range(len(OMEGAS))])  # (n_omega, nspin, m)
            self.force += self.backend.integral_force(self.grids.coords[pts], e_mat[:, :, sel], c,
                                                      self.mol.natm, own, self.max_memory_mb)
            timings["derivative_integrals"] += clock() - tc
        tc = clock()
        self.t_ao += p_mat.sum(axis=1)
        if self.grid_response:
            t_pt = p_mat.sum(axis=2)  # (3, m): each point's own term
            for xdir in range(3):
                np.subtract.at(self.force[:, xdir], own[own >= 0], t_pt[xdir][own >= 0])
            timings["meta_gga"] += clock() - tc
            tc = clock()
            if self.becke_adjust is None:
                self.becke_adjust = becke_adjust_table(self.mol, self.grids)
            dw = weight_derivatives(self.mol, self.grids, pts, self.becke_adjust)
            self.force += dw @ e[sel]  # (natm, 3)
            timings["grid_weights"] += clock() - tc
        else:
            timings["meta_gga"] += clock() - tc

    def finish(self) -> np.ndarray:
        """The gradient (natm, 3): the AOs' sums moved onto their atoms."""
        for ia, (p0, p1) in enumerate(self.mol.aoslice_by_atom()[:, 2:]):
            self.force[ia] += self.t_ao[:, p0:p1].sum(axis=1)
        return self.force
