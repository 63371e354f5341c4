"""The criteria of pruning at initialization (lottery/criteria.py: snip, grasp, synflow) against
independent computations: closed forms on a 2-layer linear network, finite differences, the
SynFlow paper's layer-collapse claim, and exact nested counts. Pure JAX models, no Trainer."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from omegaconf import OmegaConf

from lottery.pruning import criteria
from lottery.pruning import masks as pruning

PRUNING_AT_INIT = ("snip", "grasp", "synflow")


def linear(params, x):
    """f(x) = W2ᵀ W1ᵀ x in the framework's (in, out) kernel layout: no biases, no nonlinearity."""
    return x @ params["l1"]["kernel"] @ params["l2"]["kernel"]


def tanh_net(params, x):
    """A small network with biases (not prunable: they enter g but are not scored)."""
    h = jnp.tanh(x @ params["l1"]["kernel"] + params["l1"]["bias"])
    return h @ params["l2"]["kernel"] + params["l2"]["bias"]


def mlp(params, x):
    """Four ReLU layers of very different widths (16 -> 128 -> 128 -> 4 -> 10), no biases."""
    for i in range(1, 5):
        x = x @ params[f"l{i}"]["kernel"]
        x = jax.nn.relu(x) if i < 4 else x
    return x


def kaiming(rng, sizes, dtype=np.float64):
    return {
        f"l{i + 1}": {"kernel": (rng.normal(size=(a, b)) * np.sqrt(2 / a)).astype(dtype)}
        for i, (a, b) in enumerate(zip(sizes, sizes[1:]))
    }


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_scores_of_a_two_layer_linear_network_match_their_closed_forms():
    rng = np.random.default_rng(0)
    n_in, hidden, classes, batch = 5, 4, 3, 6
    params = kaiming(rng, [n_in, hidden, classes])
    mask = {"l1": {"kernel": rng.random((n_in, hidden)) < 0.8}, "l2": {"kernel": rng.random((hidden, classes)) < 0.8}}
    x, y = rng.normal(size=(batch, n_in)), rng.integers(0, classes, batch)
    names = ["l1/kernel", "l2/kernel"]
    with jax.enable_x64(True):
        context = criteria.Context(params, mask, names, apply=linear, batch=(x, y))
        got = {name: criteria.score(name, context) for name in PRUNING_AT_INIT}

    # By hand, on the masked network θ = W ⊙ m. z = x W1 W2, L = mean_b CE(z_b, y_b).
    m1, m2 = mask["l1"]["kernel"], mask["l2"]["kernel"]
    w1, w2 = params["l1"]["kernel"] * m1, params["l2"]["kernel"] * m2
    p, onehot = softmax(x @ w1 @ w2), np.eye(classes)[y]
    e = (p - onehot) / batch  # ∂L/∂z
    g1, g2 = x.T @ e @ w2.T, (x @ w1).T @ e  # ∂L/∂θ, pruned positions included
    # The masked network's parameters are the surviving weights alone: its gradient is g ⊙ m, and
    # its H g the derivative of that gradient, (g1, g2) ⊙ m, along (v1, v2) = (g1 ⊙ m1, g2 ⊙ m2).
    # dp = (diag p - p pᵀ) dz per example.
    v1, v2 = g1 * m1, g2 * m2
    dz = x @ v1 @ w2 + x @ w1 @ v2
    de = (p * dz - p * (p * dz).sum(axis=1, keepdims=True)) / batch
    hg1 = (x.T @ (de @ w2.T + e @ v2.T)) * m1
    hg2 = ((x @ v1).T @ e + (x @ w1).T @ de) * m2
    # SynFlow: R = 1ᵀ|W1||W2|1 = Σ_ijk |W1|_ij |W2|_jk, so ∂R/∂|W1|_ij = Σ_k |W2|_jk, ∂R/∂|W2|_jk = Σ_i |W1|_ij.
    a1, a2 = np.abs(w1), np.abs(w2)
    expected = {
        "snip": {"l1/kernel": np.abs(w1 * g1), "l2/kernel": np.abs(w2 * g2)},
        "grasp": {"l1/kernel": w1 * hg1, "l2/kernel": w2 * hg2},  # θ ⊙ Hg: the paper's -θ ⊙ Hg negated
        "synflow": {"l1/kernel": a1 * a2.sum(axis=1)[None, :], "l2/kernel": a2 * a1.sum(axis=0)[:, None]},
    }
    for name in PRUNING_AT_INIT:
        assert sorted(got[name]) == names
        for tensor in names:
            np.testing.assert_allclose(
                got[name][tensor], expected[name][tensor], rtol=1e-5, atol=1e-12, err_msg=f"{name} {tensor}"
            )
            pruned = ~pruning.flatten(mask)[tensor]
            assert (got[name][tensor][pruned] == 0).all()  # a pruned weight scores as a zero weight


@pytest.mark.parametrize("density", [1.0, 0.6])
def test_snip_gradient_and_grasp_hessian_gradient_product_match_central_differences(density):
    """Against the masked network as training sees it (training.py zeroes pruned weights' gradients):
    a function of the surviving weights alone, φ, the pruned ones held at zero. Its g and H g come
    from central differences of its loss and gradient in φ, not from the full network's."""
    rng = np.random.default_rng(1)
    params = {
        "l1": {"kernel": rng.normal(size=(3, 4)), "bias": rng.normal(size=4)},
        "l2": {"kernel": rng.normal(size=(4, 3)), "bias": rng.normal(size=3)},
    }
    names = ["l1/kernel", "l2/kernel"]
    mask = pruning.full_mask(params)
    mask["l1"]["kernel"], mask["l2"]["kernel"] = rng.random((3, 4)) < density, rng.random((4, 3)) < density
    alive = {n: pruning.flatten(mask)[n] for n in names}
    assert density == 1 or all(0 < a.sum() < a.size for a in alive.values())
    x, y = rng.normal(size=(5, 3)), rng.integers(0, 3, 5)
    eps = 1e-5
    with jax.enable_x64(True):
        # params keep their values at pruned positions: the criteria must score them as zeros.
        context = criteria.Context(params, mask, names, apply=tanh_net, batch=(x, y))
        snip, grasp = criteria.score("snip", context), criteria.score("grasp", context)
        flat = pruning.flatten(params)
        phi = {n: flat[n][alive[n]] for n in names}  # the surviving weights, one vector per kernel

        def network(phi):  # the parameter dict of surviving weights φ: zeros where pruned, biases held
            kernels = {n: jnp.zeros(flat[n].shape).at[np.nonzero(alive[n])].set(phi[n]) for n in names}
            return pruning.unflatten(params, {**flat, **kernels})

        loss = jax.jit(lambda phi: criteria._loss(tanh_net, network(phi), x, y))
        gradient = jax.jit(jax.grad(loss))
        shifted = lambda direction, step: {n: phi[n] + step * direction.get(n, 0.0) for n in names}

        g = {n: np.zeros_like(phi[n]) for n in names}  # ∂L/∂φ by central differences of the loss
        for n in names:
            for i in range(phi[n].size):
                unit = {n: np.eye(phi[n].size)[i]}
                g[n][i] = (loss(shifted(unit, eps)) - loss(shifted(unit, -eps))) / (2 * eps)
        # H g in φ: central differences of the gradient along g.
        plus, minus = gradient(shifted(g, eps)), gradient(shifted(g, -eps))
        for n in names:
            hg = (np.asarray(plus[n]) - np.asarray(minus[n])) / (2 * eps)
            expected_snip, expected_grasp = np.zeros(flat[n].shape), np.zeros(flat[n].shape)
            expected_snip[alive[n]], expected_grasp[alive[n]] = np.abs(phi[n] * g[n]), phi[n] * hg
            np.testing.assert_allclose(snip[n], expected_snip, rtol=1e-6, atol=1e-10)
            np.testing.assert_allclose(grasp[n], expected_grasp, rtol=1e-6, atol=1e-10)

        # The sign, as GraSP's gradient flow: removing φ_i (φ_i -> (1 - t) φ_i) changes ‖g‖² at the
        # rate -2 φ_i (Hg)_i, so the score kept highest, φ_i (Hg)_i, is -1/2 that rate: the weights
        # pruned first are those whose removal reduces the gradient norm least, or raises it.
        flow = jax.jit(lambda phi: sum(jnp.sum(v**2) for v in gradient(phi).values()))
        for n in names:
            for i in range(phi[n].size):
                removal = {n: -phi[n][i] * np.eye(phi[n].size)[i]}
                rate = (flow(shifted(removal, eps)) - flow(shifted(removal, -eps))) / (2 * eps)
                np.testing.assert_allclose(grasp[n][alive[n]][i], -rate / 2, rtol=1e-6, atol=1e-10)


def test_iterative_synflow_avoids_the_layer_collapse_of_single_shot_pruning():
    """Tanaka et al. 2020 (Sec. 4-6): at extreme compression, single-shot pruning at initialization
    removes whole layers (magnitude: the wide middle layers, whose Kaiming weights are smallest;
    single-shot SynFlow too), while iterative SynFlow keeps every layer, and a path, alive."""
    rng = np.random.default_rng(0)
    params = kaiming(rng, [16, 128, 128, 4, 10], np.float32)
    names = [f"l{i}/kernel" for i in range(1, 5)]
    context = criteria.Context(params, pruning.full_mask(params), names, apply=mlp, input_shape=(16,))
    keep = 40  # of 18,984 weights: density 0.2%
    masks = {
        (name, rounds): criteria.iterate_to_counts(name, context, [names], [keep], rounds)
        for name, rounds in (("magnitude", 1), ("synflow", 1), ("synflow", 100))
    }
    for (name, rounds), mask in masks.items():
        kept = [c["remaining"] for c in pruning.counts(mask, names).values()]
        assert sum(kept) == keep
        flat = pruning.flatten(mask)
        paths = np.ones((1, 16)) @ flat["l1/kernel"] @ flat["l2/kernel"] @ flat["l3/kernel"] @ flat["l4/kernel"]
        if rounds == 1:
            assert min(kept) == 0 and paths.sum() == 0, (name, kept)  # a layer emptied: disconnected
        else:
            assert min(kept) > 0 and paths.sum() > 0, kept


def cfg(strategy, rate=0.5):
    return OmegaConf.create({"strategy": strategy, "rate": rate, "conv_rate": None, "output_rate": None, "ignore": []})


@pytest.mark.parametrize("strategy", ["layerwise", "global"])
def test_every_criterion_gives_exact_nested_counts(strategy):
    rng = np.random.default_rng(2)
    params = {
        "hidden": {"kernel": rng.normal(size=(6, 8)).astype(np.float32), "bias": np.zeros(8, np.float32)},
        "output": {"kernel": rng.normal(size=(8, 3)).astype(np.float32), "bias": np.zeros(3, np.float32)},
    }
    names = ["hidden/kernel", "output/kernel"]

    def apply(p, x):
        return (
            jax.nn.relu(x @ p["hidden"]["kernel"] + p["hidden"]["bias"]) @ p["output"]["kernel"] + p["output"]["bias"]
        )

    x, y = rng.normal(size=(8, 6)).astype(np.float32), rng.integers(0, 3, 8)
    base = criteria.Context(
        params, pruning.full_mask(params), names, rng=np.random.default_rng(3), apply=apply, batch=(x, y)
    )
    groups = pruning.groups(names, strategy)
    for name in ("magnitude", "random", *PRUNING_AT_INIT):
        # Levels of prune_by_scores: each removes round(rate x remaining) of each group, nested.
        masks = [base.mask]
        for _ in range(3):
            scores = criteria.score(name, dataclasses.replace(base, mask=masks[-1]))
            masks.append(pruning.prune_by_scores(scores, masks[-1], cfg(strategy), names))
        for before, after in zip(masks, masks[1:]):
            b, a = pruning.flatten(before), pruning.flatten(after)
            assert not any((a[n] & ~b[n]).any() for n in names), name
            for group in groups:
                rate = 0.25 if group == ["output/kernel"] else 0.5  # layerwise: the output at half the rate
                remaining = sum(int(b[n].sum()) for n in group)
                assert sum(int(a[n].sum()) for n in group) == remaining - pruning.number_to_prune(rate, remaining), name
        # Straight to a density in 5 exponential rounds, from the first level's mask: exact counts,
        # nested in the mask it started from.
        start = dataclasses.replace(base, mask=masks[1])
        final = pruning.flatten(criteria.iterate(name, start, strategy, 0.1, rounds=5))
        assert [sum(int(final[n].sum()) for n in g) for g in groups] == pruning.keep_at_density(base.mask, groups, 0.1)
        assert not any((final[n] & ~pruning.flatten(masks[1])[n]).any() for n in names), name


def test_exponential_counts_are_exact_and_reach_the_target():
    # 100 rounds from 10^6 to 1,000 weights: density d^(r/n) of the start, rounded, the last exact.
    counts = pruning.exponential_counts(10**6, 1000, 100)
    expected = [int(np.floor(10**6 * 10 ** (-3 * r / 100) + 0.5)) for r in range(1, 101)]
    assert counts == expected and counts[-1] == 1000 and counts == sorted(counts, reverse=True)
    # Small cases by hand: 4 -> 1 in 2 rounds passes sqrt(4) = 2; 2 -> 1 passes sqrt(2) = 1.41 -> 1;
    # 10 -> 1 in 3 rounds passes 10^(2/3) = 4.64 -> 5 and 10^(1/3) = 2.15 -> 2.
    assert pruning.exponential_counts(4, 1, 2) == [2, 1] and pruning.exponential_counts(2, 1, 2) == [1, 1]
    assert pruning.exponential_counts(10, 1, 3) == [5, 2, 1]
    assert pruning.exponential_counts(7, 0, 3) == [0, 0, 0] and pruning.exponential_counts(5, 5, 2) == [5, 5]
    with pytest.raises(ValueError, match="needs rounds >= 1"):
        pruning.exponential_counts(4, 5, 2)


def test_data_dependent_criteria_name_what_they_lack():
    params = {"l1": {"kernel": np.ones((2, 2))}}
    context = criteria.Context(params, pruning.full_mask(params), ["l1/kernel"], apply=linear)
    with pytest.raises(ValueError, match=r"the snip criterion needs the model \(Context.apply\) and a batch"):
        criteria.score("snip", context)
    with pytest.raises(ValueError, match="synflow criterion needs the input's shape"):
        criteria.score("synflow", context)


def test_keeping_by_count_is_a_stable_sort_with_already_pruned_weights_never_back():
    """pruning's selection (one partition, for SynFlow's rounds on large networks) equals keeping the
    last ``keep`` surviving weights of a stable ascending sort: ties go by position, NaN ranks highest."""
    rng = np.random.default_rng(4)
    for _ in range(200):
        scores = [rng.choice([-1.0, 0.0, -0.0, 0.5, 2.0, np.inf, np.nan], size=shape) for shape in ((3, 4), (5,))]
        masks = [rng.random(s.shape) < 0.7 for s in scores]
        values = np.concatenate([s.ravel() for s in scores])
        alive = np.flatnonzero(np.concatenate([m.ravel() for m in masks]))
        for keep in range(alive.size + 1):
            expected = np.zeros(values.size, dtype=bool)
            expected[alive[np.argsort(values[alive], kind="stable")[alive.size - keep :]]] = True
            got = np.concatenate([m.ravel() for m in pruning._keep_group(scores, masks, keep)])
            assert (got == expected).all()
