"""The DM21 network in NumPy: energy density and its gradient in one pass.

A re-implementation of the published graph (see the checkpoints'
ARCHITECTURE.md), in float64 or float32 (`dm21 run` uses float32 for the SCF
cycles and float64 for the final energy, see `dm21cli.functional.xc`).  Forward and backward are
written out by hand, so one backward pass gives the derivative with respect
to all eleven inputs (the published code redoes the backward pass for each of
its four gradient calls), and all work is done in BLAS matrix products over
blocks of grid points.  In float32 the element-wise steps of each residual
block (bias, layer norm, ELU and their derivatives) run in the compiled
kernels of `dm21cli.functional.kernels` when they are built, NumPy otherwise.

Inputs per grid point, alpha first (atomic units throughout):

    x[:, 0:2]  rho_a, rho_b                      (e / bohr^3)
    x[:, 2:5]  |grad rho|^2, |grad rho_a|^2, |grad rho_b|^2
    x[:, 5:7]  tau_a, tau_b   (1/2 sum_i |grad phi_i|^2 per spin)
    x[:, 7:11] hfx_a(0), hfx_a(0.4), hfx_b(0), hfx_b(0.4)   (Ha / bohr^3)

Output: the XC energy density e(r) in Ha / bohr^3 (unweighted), and de/dx.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dm21cli.functional import kernels as _kernels
from dm21cli.functional.kernels import ptr

#: Number of input features per grid point.
N_FEATURES = 11
#: Number of residual blocks and their width.
N_BLOCKS = 6
WIDTH = 256
#: Grid points per network block: bounds memory (about 15 arrays of
#: BLOCK_POINTS x WIDTH floats live at once during the backward pass).
BLOCK_POINTS = 1024

# Constants exactly as stored (float32) in the published graph; using the
# textbook values instead shifts water's E_xc by ~2e-7 Ha.
_F32 = np.float32
LOG_EPS_1 = float(_F32(1e-9))
LOG_EPS_2 = float(_F32(1e-4))
LAYER_NORM_EPS = float(_F32(1e-5))
FOUR_THIRDS = float(_F32(4.0 / 3.0))
#: -(3/2)(3/(4 pi))^(1/3): LDA exchange prefactor per spin channel, float32.
LDA_X_FACTOR = float(_F32(-0.9305257))

_PREFIX = "hub_wrapper/local_functional_v2/"


def _run_parallel(work, starts, workers: int) -> None:
    """Run work(p0) for every block start on `workers` threads.

    NumPy releases the GIL in BLAS calls and element-wise loops, and about
    half of the network's time is element-wise (single-threaded in NumPy), so
    blocks on separate threads with one BLAS thread each use the cores better
    than one block at a time with threaded BLAS.
    """
    from concurrent.futures import ThreadPoolExecutor

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        limits = None
    else:
        limits = threadpool_limits(limits=1, user_api="blas")
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(work, starts):
                pass
    finally:
        if limits is not None:
            limits.restore_original_limits()


@dataclass(frozen=True)
class NetworkWeights:
    """The trained parameters of one DM21 variant.

    w_in: (11, 256), b_in: (256,), w_blocks: (6, 256, 256), b_blocks: (6, 256),
    ln_scale, ln_offset: (6, 256), w_out: (256, 3), b_out: (3,).
    """

    w_in: np.ndarray
    b_in: np.ndarray
    w_blocks: np.ndarray
    b_blocks: np.ndarray
    ln_scale: np.ndarray
    ln_offset: np.ndarray
    w_out: np.ndarray
    b_out: np.ndarray

    @classmethod
    def from_tf_variables(cls, variables: dict[str, np.ndarray], dtype=np.float64) -> "NetworkWeights":
        """Build from the checkpoint's variables, keyed by their TF names."""

        def get(name: str) -> np.ndarray:
            return np.asarray(variables[_PREFIX + name], dtype=dtype)

        def block(k: int) -> str:
            return "MLP/ResidualBlock" + ("" if k == 0 else f"_{k}")

        return cls(
            w_in=get("SquashUnprocessedData/linear/w"),
            b_in=get("SquashUnprocessedData/linear/b"),
            w_blocks=np.stack([get(f"{block(k)}/linear/w") for k in range(N_BLOCKS)]),
            b_blocks=np.stack([get(f"{block(k)}/linear/b") for k in range(N_BLOCKS)]),
            ln_scale=np.stack([get(f"{block(k)}/layer_norm/gamma") for k in range(N_BLOCKS)]),
            ln_offset=np.stack([get(f"{block(k)}/layer_norm/beta") for k in range(N_BLOCKS)]),
            w_out=get("OutputLayer/linear/w"),
            b_out=get("OutputLayer/linear/b"),
        )

    @property
    def dtype(self):
        return self.w_in.dtype


class DM21Network:
    """Evaluate one DM21 variant on blocks of grid points.

    precision: "float64" (default) or "float32".  The weights are stored in
    float32; float64 evaluates those same numbers without rounding noise.
    """

    def __init__(self, weights: NetworkWeights, name: str = "DM21"):
        self.weights = weights
        self.name = name
        self.dtype = weights.dtype
        # Each residual block's a = h W + b + h, mean-centred for the layer
        # norm, is one product with W' = (W + 1) C, C = 1 - 11^T / WIDTH (the
        # centring matrix), and b' = b C: two element-wise passes over the
        # block fewer, and W'^T also centres the gradient on the way back.
        # Folded in float64, then rounded to the working precision.
        centre = np.eye(WIDTH) - 1.0 / WIDTH
        eye = np.eye(WIDTH)
        self._w_folded = np.stack([
            ((weights.w_blocks[k].astype(np.float64) + eye) @ centre).astype(self.dtype)
            for k in range(N_BLOCKS)])
        self._b_folded = np.stack([
            (weights.b_blocks[k].astype(np.float64) @ centre).astype(self.dtype)
            for k in range(N_BLOCKS)])
        #: number of grid points evaluated so far (proves the network ran).
        self.points_evaluated = 0
        #: folder the weights were read from (None when built in code).
        self.source = None
        #: threads that evaluate blocks concurrently (each with single-threaded BLAS).
        self.workers = 1

    @classmethod
    def load(cls, variant: str, checkpoints=None, precision: str = "float64") -> "DM21Network":
        """Locate, verify and load a variant's checkpoint (no TensorFlow needed)."""
        from dm21cli.functional import weights as _weights

        dtype = {"float64": np.float64, "float32": np.float32}[precision]
        variant = _weights.canonical_variant(variant)
        variables = _weights.load_parameters(variant, checkpoints)
        network = cls(NetworkWeights.from_tf_variables(variables, dtype=dtype), name=variant)
        network.source = _weights.locate(variant, checkpoints)
        return network

    def astype(self, dtype) -> "DM21Network":
        """The same variant evaluated in another precision (shares nothing mutable)."""
        w = self.weights
        weights = NetworkWeights(*(np.asarray(getattr(w, f), dtype=dtype) for f in (
            "w_in", "b_in", "w_blocks", "b_blocks", "ln_scale", "ln_offset", "w_out", "b_out")))
        other = DM21Network(weights, name=self.name)
        other.source, other.workers = self.source, self.workers
        return other

    # ------------------------------------------------------------------
    def __call__(self, x: np.ndarray, with_grad: bool = True):
        """Energy density e (n,) and, if with_grad, de/dx (n, 11), in float64.

        x: (n, 11) features in atomic units, alpha first (see module doc).
        """
        x = np.asarray(x)
        n = x.shape[0]
        e = np.empty(n)
        de = np.empty((n, N_FEATURES)) if with_grad else None

        def work(p0: int) -> None:
            p1 = min(p0 + BLOCK_POINTS, n)
            eb, db = self._block(np.asarray(x[p0:p1], dtype=self.dtype), with_grad)
            e[p0:p1] = eb
            if with_grad:
                de[p0:p1] = db

        starts = range(0, n, BLOCK_POINTS)
        if self.workers > 1 and len(starts) > 1:
            _run_parallel(work, starts, self.workers)
        else:
            for p0 in starts:
                work(p0)
        self.points_evaluated += n
        return (e, de) if with_grad else e

    def _block(self, x: np.ndarray, with_grad: bool):
        w = self.weights
        dt = self.dtype
        lib = _kernels.lib() if dt == np.float32 else None
        # 1. squash the inputs: l = log(|x| + eps1 + eps2)
        shifted = np.abs(x)
        shifted += dt.type(LOG_EPS_1)
        shifted += dt.type(LOG_EPS_2)
        h = np.tanh(np.log(shifted) @ w.w_in + w.b_in)
        h0 = h
        # 2. residual blocks: h = ELU(LayerNorm(h W + b + h)), in place where possible;
        #    the residual and the mean removal are folded into W' and b' (see __init__)
        saved = []
        inv_width = dt.type(1.0 / WIDTH)
        n = len(x)
        for k in range(N_BLOCKS):
            if lib is not None:  # the same steps, fused in C (see _kernels.c)
                a = np.ascontiguousarray(h @ self._w_folded[k], dtype=np.float32)
                y = np.empty_like(a)
                d = np.empty_like(a) if with_grad else None
                rstd = np.empty(n, dtype=dt)
                lib.dm21_block_forward(ptr(a), ptr(self._b_folded[k]), ptr(w.ln_scale[k]),
                                       ptr(w.ln_offset[k]), LAYER_NORM_EPS, n, WIDTH, ptr(y),
                                       None if d is None else ptr(d), ptr(rstd))
                if with_grad:
                    saved.append((a, rstd, d))
                h = y
                continue
            a = h @ self._w_folded[k]
            a += self._b_folded[k]  # a is now the centred pre-norm activation
            var = np.einsum("ij,ij->i", a, a) * inv_width
            rstd = (1.0 / np.sqrt(var + dt.type(LAYER_NORM_EPS)))[:, None]
            a *= rstd  # a is now the normalised activation a_hat
            y = a * w.ln_scale[k]
            y += w.ln_offset[k]
            # ELU(y) = max(y, expm1(min(y, 0))): y where y > 0, expm1(y) <= 0 elsewhere
            m = np.minimum(y, 0)
            np.expm1(m, out=m)
            if with_grad:  # ELU'(y) = exp(min(y, 0)) = m + 1, times the layer-norm scale
                d = m + 1.0
                d *= w.ln_scale[k]
                saved.append((a, rstd, d))
            np.maximum(y, m, out=y)
            h = y
        # 3. three enhancement factors f = 2 sigmoid(z / 2)
        z = h @ w.w_out + w.b_out
        sig = 1.0 / (1.0 + np.exp(-0.5 * z))
        f = 2.0 * sig

        rho_a = np.maximum(x[:, 0], 0)
        rho_b = np.maximum(x[:, 1], 0)
        lda = dt.type(LDA_X_FACTOR) * (rho_a ** dt.type(FOUR_THIRDS) + rho_b ** dt.type(FOUR_THIRDS))
        hf0 = x[:, 7] + x[:, 9]
        hf4 = x[:, 8] + x[:, 10]
        e = f[:, 0] * lda + f[:, 1] * hf0 + f[:, 2] * hf4
        if not with_grad:
            return e.astype(np.float64), None

        # backward pass: d e / d x
        gz = np.stack([lda, hf0, hf4], axis=1) * (sig * (1.0 - sig))  # df/dz = sig (1 - sig)
        gh = gz @ w.w_out.T
        for k in reversed(range(N_BLOCKS)):
            a_hat, rstd, d = saved[k]
            if lib is not None:
                gh = np.ascontiguousarray(gh, dtype=np.float32)
                lib.dm21_block_backward(ptr(gh), ptr(a_hat), ptr(d), ptr(rstd), n, WIDTH)
                gh = gh @ self._w_folded[k].T
                continue
            gh *= d  # gradient w.r.t. a_hat
            m2 = (np.einsum("ij,ij->i", gh, a_hat) * inv_width)[:, None]
            d = np.multiply(a_hat, m2, out=d)
            gh -= d
            gh *= rstd  # gradient w.r.t. the centred activation (W' centres it)
            gh = gh @ self._w_folded[k].T  # includes the residual connection
        gh *= 1.0 - h0 * h0  # tanh'
        gx = (gh @ w.w_in.T) * np.sign(x) / shifted

        # direct dependence of e on rho and hfx
        c = dt.type(LDA_X_FACTOR * FOUR_THIRDS)
        gx[:, 0] += f[:, 0] * c * rho_a ** dt.type(FOUR_THIRDS - 1)
        gx[:, 1] += f[:, 0] * c * rho_b ** dt.type(FOUR_THIRDS - 1)
        gx[:, 7] += f[:, 1]
        gx[:, 9] += f[:, 1]
        gx[:, 8] += f[:, 2]
        gx[:, 10] += f[:, 2]
        return e.astype(np.float64), gx.astype(np.float64)
