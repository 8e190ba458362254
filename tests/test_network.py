"""The NumPy DM21 network against the published TensorFlow graph, and its gradient.

Reference: the `default` signature of each published checkpoint, loaded with
``tf.saved_model.load(path, tags=[])`` and run in float32, as published.
Tolerance: float32 rounding of the original (ARCHITECTURE.md measures 1e-7
to 4e-7 Ha on whole molecules; per point we allow 2e-5 relative).
"""

from __future__ import annotations

import numpy as np
import pytest

from dm21cli.functional.network import DM21Network
from dm21cli.functional.weights import VARIANTS


def realistic_features(n: int, seed: int = 0) -> np.ndarray:
    """(n, 11) features spanning densities 1e-4..10 with physical relations."""
    rng = np.random.default_rng(seed)
    ra = 10 ** rng.uniform(-4, 1, n)
    rb = ra * rng.uniform(0.0, 1.0, n)
    ga = ra ** (8 / 3) * rng.uniform(0, 3, n)
    gb = rb ** (8 / 3) * rng.uniform(0, 3, n)
    g = ga + gb + 2 * np.sqrt(ga * gb) * rng.uniform(-1, 1, n)
    ta = ra ** (5 / 3) * rng.uniform(1, 4, n) + ga / (8 * ra)
    tb = rb ** (5 / 3) * rng.uniform(1, 4, n) + gb / (8 * np.maximum(rb, 1e-30))
    hfx = -np.stack([ra ** (4 / 3) * rng.uniform(0.5, 1, n), ra ** (4 / 3) * rng.uniform(0.2, 0.5, n),
                     rb ** (4 / 3) * rng.uniform(0.5, 1, n), rb ** (4 / 3) * rng.uniform(0.2, 0.5, n)], 1)
    return np.column_stack([ra, rb, g, ga, gb, ta, tb, hfx])


@pytest.fixture(scope="module")
def tf_graph(checkpoints_dir):
    tf = pytest.importorskip("tensorflow")

    def run(variant: str, x: np.ndarray) -> np.ndarray:
        fn = tf.saved_model.load(str(checkpoints_dir / variant), tags=[]).signatures["default"]
        n = len(x)

        def col(a):
            return tf.constant(np.asarray(a, np.float32).reshape(n, -1))

        out = fn(**{
            "tensor_dict$rho_a": col(x[:, 0]), "tensor_dict$rho_b": col(x[:, 1]),
            "tensor_dict$norm_grad_rho": col(x[:, 2]),
            "tensor_dict$norm_grad_rho_a": col(x[:, 3]), "tensor_dict$norm_grad_rho_b": col(x[:, 4]),
            "tensor_dict$tau_a": col(x[:, 5]), "tensor_dict$tau_b": col(x[:, 6]),
            "tensor_dict$hfxa": col(x[:, 7:9]), "tensor_dict$hfxb": col(x[:, 9:11]),
            "tensor_dict$grid_coords": col(np.zeros((n, 3))),
            "tensor_dict$grid_weights": col(np.ones(n)),
        })
        return out["grid_contribution"].numpy().astype(np.float64)

    return run


@pytest.mark.parametrize("variant", VARIANTS)
def test_float64_network_matches_published_float32_graph(variant, checkpoints_dir, tf_graph):
    x = realistic_features(2000)
    reference = tf_graph(variant, x)
    net = DM21Network.load(variant, checkpoints_dir)
    e = net(x, with_grad=False)
    rel = np.abs(e - reference) / np.abs(reference)
    assert np.median(rel) < 1e-6, np.median(rel)
    assert rel.max() < 2e-5, rel.max()
    # float32 NumPy evaluation is as close to the graph as float32 allows
    net32 = DM21Network.load(variant, checkpoints_dir, precision="float32")
    rel32 = np.abs(net32(x, with_grad=False) - reference) / np.abs(reference)
    assert rel32.max() < 2e-5, rel32.max()


def test_variants_are_different_functionals(checkpoints_dir):
    x = realistic_features(200)
    energies = [DM21Network.load(v, checkpoints_dir)(x, with_grad=False) for v in VARIANTS]
    for i in range(len(VARIANTS)):
        for j in range(i):
            assert np.max(np.abs(energies[i] - energies[j])) > 1e-4 * np.max(np.abs(energies[i]))


@pytest.mark.parametrize("variant", ["DM21", "DM21mu"])
def test_gradient_matches_central_differences(variant, checkpoints_dir):
    x = realistic_features(300, seed=1)
    x = x[x[:, 1] > 1e-3]  # keep both spins populated so that relative steps are meaningful
    net = DM21Network.load(variant, checkpoints_dir)
    e, de = net(x)
    for j in range(x.shape[1]):
        h = 1e-5 * np.abs(x[:, j])
        xp, xm = x.copy(), x.copy()
        xp[:, j] += h
        xm[:, j] -= h
        fd = (net(xp, with_grad=False) - net(xm, with_grad=False)) / (2 * h)
        # error of the change in e per relative change of x_j, relative to e
        err = np.abs(fd - de[:, j]) * np.abs(x[:, j]) / np.abs(e)
        assert err.max() < 1e-7, (j, err.max())


def test_block_size_does_not_change_result(checkpoints_dir, monkeypatch):
    import dm21cli.functional.network as network

    x = realistic_features(1000, seed=2)
    net = DM21Network.load("DM21", checkpoints_dir)
    e1, d1 = net(x)
    monkeypatch.setattr(network, "BLOCK_POINTS", 97)
    e2, d2 = net(x)
    np.testing.assert_allclose(e1, e2, rtol=1e-13, atol=0)
    # rounding of the backward pass's sums, relative to the size of each input's derivatives
    # (measured at most 2.3e-15 of the column's largest): an element that is a near-cancellation
    # differs by more than 1e-11 of itself with NumPy 2.4's BLAS (measured 2.4e-11 of a value
    # 1e-4 of its column's largest), so relative to itself the check failed by chance
    scale = np.abs(d1).max(axis=0)
    assert np.all(np.abs(d1 - d2) <= 1e-13 * scale), np.max(np.abs(d1 - d2) / scale)
