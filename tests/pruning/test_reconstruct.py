"""Wanda and SparseGPT on one layer (lottery/pruning/reconstruct.py) against our own NumPy: Wanda's
scores and per-output counts; SparseGPT against the paper's Algorithm 1 written column by column in
float64 (no lazy batching), the same mask and the same updated weights; its reconstruction error on
the calibration inputs below magnitude pruning's at every density; exact counts."""

import numpy as np
import pytest

from lottery.errors import LotteryError
from lottery.pruning import reconstruct


def calibration(rows=256, inputs=64, outputs=24, seed=0):
    """Correlated inputs with a few near-dead features, and a layer's kernel (inputs, outputs)."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(inputs, inputs)) / np.sqrt(inputs) + np.eye(inputs)
    x = (rng.normal(size=(rows, inputs)) @ mixing) * rng.uniform(0.1, 3.0, size=inputs)
    return x.astype(np.float32), rng.normal(size=(inputs, outputs)).astype(np.float32)


def numpy_sparsegpt(kernel, x, sparsity, nm=None, block=16, damp=0.01):
    """Algorithm 1 of Frantar & Alistarh (2023), one column at a time over the whole row, float64."""
    w = np.asarray(kernel, np.float64).T.copy()
    h = 2.0 * x.astype(np.float64).T @ x.astype(np.float64) / len(x)
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damp * np.mean(np.diag(h)) * np.eye(len(h))
    u = np.linalg.cholesky(np.linalg.inv(h)).T  # upper: H^-1 = U^T U
    rows, columns = w.shape
    pruned = np.zeros(w.shape, bool)
    for i in range(columns):
        if nm is None and i % block == 0:
            scores = w[:, i : i + block] ** 2 / np.diag(u)[i : i + block] ** 2
            k = int(scores.size * sparsity)
            order = np.argsort(scores.ravel(), kind="stable")[:k]
            chosen = np.zeros(scores.size, bool)
            chosen[order] = True
            pruned[:, i : i + block] = chosen.reshape(scores.shape)
        if nm is not None and i % nm[1] == 0:
            n, m = nm
            scores = w[:, i : i + m] ** 2 / np.diag(u)[i : i + m] ** 2
            order = np.argsort(scores, axis=1, kind="stable")[:, :n]
            np.put_along_axis(pruned[:, i : i + m], order, True, axis=1)
        error = np.where(pruned[:, i], w[:, i], 0.0) / u[i, i]
        w[:, i:] -= np.outer(error, u[i, i:])
        w[pruned[:, i], i] = 0.0
    return w.T, ~pruned.T


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_sparsegpt_is_the_papers_algorithm(nm):
    x, kernel = calibration()
    ours, mask = reconstruct.sparsegpt(kernel, reconstruct.hessian(x), 0.5, nm=nm, block=16)
    theirs, their_mask = numpy_sparsegpt(kernel, x, 0.5, nm=nm, block=16)
    assert np.array_equal(mask, their_mask)
    assert np.all(ours[~mask] == 0.0)
    assert np.abs(ours - theirs).max() < 2e-3 * np.abs(theirs).max()  # float32 (its Cholesky) against float64
    assert not np.allclose(ours[mask], kernel[mask])  # the survivors were updated
    if nm is None:
        assert (~mask).sum() == 4 * int(24 * 16 * 0.5)  # exactly int(s x block size) in each of 4 blocks
    else:
        groups = (~mask).reshape(16, 4, 24)
        assert np.all(groups.sum(axis=1) == 2)  # exactly 2 of every 4 consecutive inputs, for every output


def test_sparsegpt_reconstructs_better_than_magnitude_at_every_density():
    x, kernel = calibration(seed=1)
    dense = x @ kernel
    for sparsity in (0.3, 0.5, 0.7, 0.9):
        updated, mask = reconstruct.sparsegpt(kernel, reconstruct.hessian(x), sparsity, block=16)
        k = (~mask).sum()
        magnitude = kernel.copy()
        magnitude.ravel()[np.argsort(np.abs(kernel).ravel(), kind="stable")[:k]] = 0.0
        ours = np.sum((x @ updated - dense) ** 2)
        assert ours < 0.8 * np.sum((x @ magnitude - dense) ** 2), sparsity
    wanda = kernel * reconstruct.wanda_mask(kernel, reconstruct.squared_norms(x), 0.5)
    sparse_gpt, _ = reconstruct.sparsegpt(kernel, reconstruct.hessian(x), 0.5, block=16)
    assert np.sum((x @ sparse_gpt - dense) ** 2) < np.sum((x @ wanda - dense) ** 2)  # OBS beats a mask alone


def test_a_dead_input_is_zeroed_and_nothing_is_nan():
    x, kernel = calibration()
    x[:, 5] = 0.0
    updated, mask = reconstruct.sparsegpt(kernel, reconstruct.hessian(x), 0.5, block=16)
    assert np.all(np.isfinite(updated)) and np.all(updated[5] == 0.0)


def test_wanda_scores_and_its_per_output_counts_are_numpys():
    x, kernel = calibration()
    norms = np.sqrt((x.astype(np.float64) ** 2).sum(axis=0))
    scores = reconstruct.wanda_scores(kernel, reconstruct.squared_norms(x))
    assert np.allclose(scores, np.abs(kernel) * norms[:, None], rtol=1e-6)
    mask = reconstruct.wanda_mask(kernel, reconstruct.squared_norms(x), 0.4)
    assert np.all((~mask).sum(axis=0) == int(64 * 0.4))  # each output prunes its own share
    for o in range(kernel.shape[1]):  # the lowest of its column, ties by position
        lowest = np.argsort(scores[:, o], kind="stable")[: int(64 * 0.4)]
        assert set(np.flatnonzero(~mask[:, o])) == set(lowest)
    nm = reconstruct.wanda_mask(kernel, reconstruct.squared_norms(x), 0.0, nm=(2, 4))
    groups = scores.reshape(16, 4, 24)
    assert np.all((~nm).reshape(16, 4, 24).sum(axis=1) == 2)
    lowest = np.argsort(groups, axis=1, kind="stable")[:, :2]
    expected = np.zeros(groups.shape, bool)
    np.put_along_axis(expected, lowest, True, axis=1)
    assert np.array_equal(~nm, expected.reshape(64, 24))


def test_settings_that_cannot_prune_are_one_line():
    x, kernel = calibration()
    with pytest.raises(LotteryError, match="N:M 2:3: needs 0 < N < M and M dividing the layer's 64 inputs"):
        reconstruct.wanda_mask(kernel, reconstruct.squared_norms(x), 0.0, nm=(2, 3))
    with pytest.raises(LotteryError, match=r"the Hessian's shape \(8, 8\) does not match the kernel's 64 inputs"):
        reconstruct.sparsegpt(kernel, np.eye(8), 0.5)
    with pytest.raises(LotteryError, match="sparsity 1.0 must be in"):
        reconstruct.sparsegpt(kernel, reconstruct.hessian(x), 1.0)
