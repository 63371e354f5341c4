"""One-shot pruning of a trained layer from calibration activations: Wanda and SparseGPT (issue 37;
the layer-by-layer math, checked against NumPy: tests/pruning/test_reconstruct.py; capturing each
layer's inputs in a model and the registry entries come next).

Layouts: a kernel here is (inputs, outputs), as a Flax ``Linear``'s (torch's weight transposed);
``inputs`` are a layer's calibration inputs as rows (tokens or examples, inputs).

**Wanda** (Sun et al., ICLR 2024, ``locuslab/wanda``): the score of weight (j, o) is
|W[j, o]| x ||X[:, j]||_2, and each output o keeps its own share: the int(inputs x sparsity) lowest
scores of its column are pruned (ties by position, as its stable sort), or with ``nm=(n, m)`` the n
lowest of every m consecutive inputs (its N:M rule). Nothing else changes: the surviving weights
stay as they are.

**SparseGPT** (Frantar & Alistarh, ICML 2023, ``IST-DASLab/sparsegpt``'s ``fasterprune``): with
H = 2 XᵀX / n (``hessian``), dead inputs (H_jj = 0) zeroed, damping λ = ``damp`` x mean(diag H)
added to the diagonal, and U the upper Cholesky factor of H⁻¹, the inputs are visited in order; the
mask of each block of ``block`` inputs is chosen when the block is reached, from the weights as
earlier blocks' updates left them, by w² / U_jj² (the lowest pruned); each pruned weight's error,
(w - 0) / U_jj, is spread over the inputs not yet visited along row j of U (the OBS update), so the
surviving weights absorb what the pruned ones did on the calibration inputs. The updates inside a
block are applied at once after it (the paper's lazy batching: the same arithmetic, in another
order). N:M (``nm``): the n lowest of every m consecutive inputs, chosen when the group is reached.

Counts: exactly int(outputs x inputs-in-block x sparsity) weights of each block (the reference code's
``tmp <= sorted[k]`` takes one more and every tie), ties by position; N:M exactly n of every m.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from lottery import lazy
from lottery.errors import LotteryError

jax = lazy.module("jax")
jnp = lazy.module("jax.numpy")


def _check(sparsity: float, nm: Optional[Tuple[int, int]], inputs: int) -> None:
    if nm is None:
        if not 0 <= sparsity < 1:
            raise LotteryError(f"sparsity {sparsity} must be in [0, 1)")
        return
    n, m = nm
    if not 0 < n < m or inputs % m:
        raise LotteryError(f"N:M {n}:{m}: needs 0 < N < M and M dividing the layer's {inputs} inputs")


def squared_norms(inputs) -> np.ndarray:
    """Each input feature's squared L2 norm over the calibration rows (Wanda's statistic)."""
    x = np.asarray(inputs, np.float64)
    return np.sum(x * x, axis=0)


def hessian(inputs) -> np.ndarray:
    """2 XᵀX / n of the calibration rows (SparseGPT's H, float32 as its code accumulates it)."""
    x = np.asarray(inputs, np.float32)
    return (2.0 / len(x)) * (x.T @ x)


def wanda_scores(kernel, norms) -> np.ndarray:
    """|W| x ||X_j||: the score of each weight of ``kernel`` (inputs, outputs); ``norms``: squared_norms."""
    return np.abs(np.asarray(kernel, np.float32)) * np.sqrt(np.asarray(norms, np.float32))[:, None]


def _lowest_per_column(scores: np.ndarray, count: int) -> np.ndarray:
    """True at the ``count`` lowest scores of each column, ties by position (a stable sort)."""
    order = np.argsort(scores, axis=0, kind="stable")[:count]
    pruned = np.zeros(scores.shape, bool)
    np.put_along_axis(pruned, order, True, axis=0)
    return pruned


def wanda_mask(kernel, norms, sparsity: float, nm: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """The mask (True: kept) Wanda leaves on ``kernel`` (inputs, outputs): per output, or N:M."""
    scores = wanda_scores(kernel, norms)
    inputs, outputs = scores.shape
    _check(sparsity, nm, inputs)
    if nm is None:
        return ~_lowest_per_column(scores, int(inputs * sparsity))
    n, m = nm
    groups = scores.reshape(inputs // m, m, outputs).transpose(1, 0, 2).reshape(m, -1)  # each group a column
    pruned = _lowest_per_column(groups, n).reshape(m, inputs // m, outputs).transpose(1, 0, 2).reshape(inputs, outputs)
    return ~pruned


def sparsegpt(
    kernel, hessian, sparsity: float, nm: Optional[Tuple[int, int]] = None, block: int = 128, damp: float = 0.01
) -> Tuple[np.ndarray, np.ndarray]:
    """(the updated kernel, its mask) of SparseGPT on ``kernel`` (inputs, outputs) with ``hessian``
    (inputs x inputs, 2XᵀX/n); pruned weights exactly 0."""
    w = jnp.asarray(kernel, jnp.float32).T  # (outputs, inputs): the reference code's rows and columns
    h = jnp.asarray(hessian, jnp.float32)
    columns = w.shape[1]
    if h.shape != (columns, columns):
        raise LotteryError(f"the Hessian's shape {tuple(h.shape)} does not match the kernel's {columns} inputs")
    _check(sparsity, nm, columns)
    if nm is not None and block % nm[1]:
        raise LotteryError(f"SparseGPT's block {block} must be a multiple of M={nm[1]}")
    dead = jnp.diag(h) == 0
    h = h + jnp.diag(dead.astype(jnp.float32))
    w = jnp.where(dead[None, :], 0.0, w)
    h = h + damp * jnp.mean(jnp.diag(h)) * jnp.eye(columns, dtype=jnp.float32)
    lower = jnp.linalg.cholesky(h)
    h_inverse = jax.scipy.linalg.cho_solve((lower, True), jnp.eye(columns, dtype=jnp.float32))
    upper = jnp.linalg.cholesky(h_inverse).T  # H⁻¹ = UᵀU, U upper triangular (exact zeros below)
    if not bool(jnp.all(jnp.isfinite(upper))):
        raise LotteryError("SparseGPT: the damped Hessian is not positive definite; raise the damping")
    kept = []
    for first in range(0, columns, block):
        last = min(first + block, columns)
        w_block, pruned, errors = _block(w[:, first:last], upper[first:last, first:last], sparsity, nm)
        w = w.at[:, first:last].set(w_block)
        w = w.at[:, last:].add(-errors @ upper[first:last, last:])
        kept.append(~pruned)
    mask = np.asarray(jnp.concatenate(kept, axis=1)).T
    return np.asarray(w).T * mask, mask


@lazy.jit
def _lowest_count(scores, count):
    """True at the ``count`` lowest of ``scores`` (flattened order; ties by position)."""
    order = jnp.argsort(scores.ravel(), stable=True)
    ranks = jnp.zeros(scores.size, jnp.int32).at[order].set(jnp.arange(scores.size, dtype=jnp.int32))
    return (ranks < count).reshape(scores.shape)


def _block(w, upper, sparsity, nm):
    """One block of inputs: the mask, the quantities kept (pruned 0) and each column's error."""
    rows, count = w.shape
    diagonal = jnp.diag(upper)
    if nm is None:
        pruned = _lowest_count(w**2 / diagonal[None, :] ** 2, int(w.size * sparsity))
    else:
        pruned = jnp.zeros(w.shape, bool)
    n, m = nm if nm is not None else (0, 1)

    def column(i, carry):
        w, pruned, kept, errors = carry
        if nm is not None:
            start = (i // m) * m
            group = jax.lax.dynamic_slice(w, (0, start), (rows, m)) ** 2
            group = group / jax.lax.dynamic_slice(diagonal, (start,), (m,))[None, :] ** 2
            order = jnp.argsort(group, axis=1, stable=True)[:, :n]
            chosen = jnp.zeros((rows, m), bool).at[jnp.arange(rows)[:, None], order].set(True)
            current = jax.lax.dynamic_slice(pruned, (0, start), (rows, m))
            pruned = jax.lax.dynamic_update_slice(pruned, jnp.where(i % m == 0, chosen, current), (0, start))
        weight = w[:, i]
        quantity = jnp.where(pruned[:, i], 0.0, weight)
        error = (weight - quantity) / upper[i, i]
        w = w - error[:, None] * upper[i][None, :]  # U[i, :i] = 0: only inputs from i on change
        return w, pruned, kept.at[:, i].set(quantity), errors.at[:, i].set(error)

    zeros = jnp.zeros_like(w)
    _, pruned, kept, errors = jax.lax.fori_loop(0, count, column, (w, pruned, zeros, zeros))
    return kept, pruned, errors
