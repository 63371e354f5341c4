"""Sparse training from scratch (config ``sparsity``; lottery/pruning/sparse.py): every count and
update checked against an independent computation (closed forms, NumPy references), the compiled
updates inside the training step, and the pipeline's curves at IMP's densities."""

import copy
import json
import math
import os
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import compose_config
from rich.console import Console

from lottery.analysis import experiment_dirs, load_runs, summarize, tables
from lottery.imp import levels
from lottery.imp.experiment import prepare
from lottery.pruning import masks, sparse
from lottery.results.identity import read_identity
from lottery.results.store import read_flat
from lottery.training import trainer as training

SMALL = ["model.hidden=[64,32]", "training.steps=5ep", "training.eval_every=20it", "progress=false"]


def test_gmp_follows_the_cubic_schedule_and_ends_at_imps_counts():
    cfg = compose_config(["sparsity=gmp", "sparsity.begin=0.1", "sparsity.end=0.75"])
    schedule = sparse.Schedule.of(cfg, end=1000, every=60)
    # t0 = 100, t0 + nΔt <= 750: n = 10 pruning steps at 160, 220, ..., 700
    assert schedule.events.tolist() == [100 + 60 * j for j in range(1, 11)]
    sizes, targets = [4096, 2048, 320], [1678, 839, 259]
    table = schedule.counts(sizes, targets)
    for j in range(1, 11):  # Zhu & Gupta 2017, Eq. 1 with s_i = 0: s_j = s_f (1 - (1 - j/n)^3)
        for g, (n_g, k_g) in enumerate(zip(sizes, targets)):
            s_f = Fraction(n_g - k_g, n_g)
            pruned = s_f * (1 - (1 - Fraction(j, 10)) ** 3) * n_g
            assert table[j - 1, g] == n_g - math.floor(pruned + Fraction(1, 2))
    assert table[-1].tolist() == targets  # exactly the level's counts at the end
    assert (np.diff(table, axis=0) <= 0).all()  # nested: never grows back


def test_rigl_drop_fraction_decays_by_cosine_and_stops_at_three_quarters():
    cfg = compose_config(["sparsity=rigl", "sparsity.drop_fraction=0.3"])
    schedule = sparse.Schedule.of(cfg, end=1000, every=100)
    # update iterations t = 0, ΔT, ... <= t_end = 750 (rigl's is_mask_update_iter: from begin_step 0)
    assert schedule.events.tolist() == [0, 100, 200, 300, 400, 500, 600, 700]
    for t, fraction in zip(schedule.events, schedule.fractions):
        assert fraction == pytest.approx(0.15 * (1 + math.cos(math.pi * t / 750)), abs=1e-15)
    table = schedule.counts([300, 80], [300, 80])
    assert table.tolist() == [[math.floor(f * 300), math.floor(f * 80)] for f in schedule.fractions]
    constant = sparse.Schedule.of(compose_config(["sparsity=set", "sparsity.decay=constant"]), end=1000, every=100)
    assert np.all(constant.fractions == 0.3)


def test_erk_and_uniform_counts_against_a_clamped_water_filling():
    shapes = {"a": (64, 300), "b": (300, 100), "c": (100, 10), "d": (3, 3, 16, 32)}
    sizes = np.array([math.prod(s) for s in shapes.values()])
    raw = np.array([sum(s) / math.prod(s) for s in shapes.values()])
    for total in (int(0.2 * sizes.sum()), int(0.05 * sizes.sum()), 5000):
        counts = sparse.distribution_counts("erk", shapes, total)
        assert sum(counts) == total and all(0 <= c <= n for c, n in zip(counts, sizes))
        # independently: the ε for which sum(min(1, ε raw) n) = total, by bisection
        low, high = 0.0, 1.0 / raw.min()
        for _ in range(200):
            mid = (low + high) / 2
            low, high = (mid, high) if np.minimum(1, mid * raw) @ sizes < total else (low, mid)
        expected = np.minimum(1, low * raw) * sizes
        assert np.all(np.abs(np.array(counts) - expected) < 1)
        uniform = sparse.distribution_counts("uniform", shapes, total)
        assert sum(uniform) == total and np.all(np.abs(np.array(uniform) - total * sizes / sizes.sum()) < 1)
    dense = sparse.erk_densities(list(shapes.values()), int(0.5 * sizes.sum()))
    assert dense[2] == 1  # the small output layer would exceed density 1: kept dense


def _numpy_drop_and_grow(w, m, scores, k):
    """The reference: of the active, the k smallest |w| (ties: earlier first) go; of the inactive
    after that, the k highest scores (ties: earlier first) come."""
    active = np.flatnonzero(m)
    drop = active[np.lexsort((active, np.abs(w[active])))[:k]]
    kept = m.copy()
    kept[drop] = False
    candidates = np.flatnonzero(~kept)
    grow = candidates[np.lexsort((candidates, -scores[candidates]))[:k]]
    new = kept.copy()
    new[grow] = True
    return new


def test_drop_and_grow_and_gmp_pruning_against_numpy_with_ties():
    rng = np.random.default_rng(0)
    update = jax.jit(sparse.drop_and_grow)
    n = 120  # one shape: one compilation, k is traced
    for trial in range(20):
        w = rng.integers(-3, 4, n).astype(np.float32)  # many ties
        m = rng.random(n) < 0.4
        scores = np.abs(rng.integers(-2, 3, n)).astype(np.float32)
        k = int(rng.integers(0, m.sum() + 1))
        new, grown = update(jnp.asarray(w), jnp.asarray(m), jnp.asarray(scores), k)
        expected = _numpy_drop_and_grow(w, m, scores, k)
        np.testing.assert_array_equal(np.asarray(new), expected)
        assert np.asarray(new).sum() == m.sum()  # exactly k dropped, k grown
        np.testing.assert_array_equal(np.asarray(grown), expected & ~m)
        keep = int(rng.integers(0, m.sum() + 1))
        pruned = np.asarray(jax.jit(sparse.prune_to)(jnp.asarray(w), jnp.asarray(m), keep))
        reference = masks.prune_to_counts({"w": np.abs(w)}, {"w": m}, [["w"]], [keep])["w"]  # masks.py's rule
        np.testing.assert_array_equal(pruned, reference)


def test_lowest_is_the_stable_order_of_numpy():
    """``lowest`` (two histogram passes over the floats' 32-bit keys, ties by position) against
    NumPy's stable sort, on what makes each pass and the tie rule matter: values spread over many
    binades, values sharing their top 16 bits (the second pass decides), signed zeros and infinities,
    big tie blocks (found by position), k = 0 and k = all; and under vmap, as a stack of networks runs it."""
    rng = np.random.default_rng(1)
    n = 3001
    close = (1.0 + np.arange(n) * 2.0**-22).astype(np.float32)  # all within one top-16-bit bucket
    cases = {
        "binades": (np.exp(rng.normal(size=n) * 8) * rng.choice([-1, 1], n)).astype(np.float32),
        "one bucket": rng.permutation(close),
        "zeros and infinities": rng.choice(np.float32([0.0, -0.0, np.inf, -np.inf, 1.5, -2.5]), n),
        "tie blocks": rng.integers(0, 4, n).astype(np.float32),
    }
    select = jax.jit(sparse.lowest)
    for name, scores in cases.items():
        order = np.lexsort((np.arange(n), scores))
        for k in (0, 1, 2, 1000, 1500, n - 1, n, int(rng.integers(0, n))):
            expected = np.zeros(n, bool)
            expected[order[:k]] = True
            np.testing.assert_array_equal(np.asarray(select(jnp.asarray(scores), k)), expected, err_msg=f"{name} k={k}")
    stacked = np.stack([cases["tie blocks"], cases["one bucket"]])
    together = np.asarray(jax.jit(jax.vmap(sparse.lowest))(jnp.asarray(stacked), jnp.asarray([1700, 9])))
    for row, k in ((0, 1700), (1, 9)):
        np.testing.assert_array_equal(together[row], np.asarray(select(jnp.asarray(stacked[row]), k)))


@pytest.fixture(scope="module")
def rigl(tmp_path_factory):
    """A RigL experiment's trainer and a network's start, with an update every 7 steps."""
    cfg = compose_config(
        [
            *SMALL,
            "sparsity=rigl",
            "sparsity.update_every=7it",
            "sparsity.end=1.0",
            f"output_dir={tmp_path_factory.mktemp('rigl')}",
        ]
    )
    experiment = prepare(cfg)
    theta_0 = experiment.initial_weights(experiment.keys(0)["init"])
    full = masks.full_mask(theta_0["params"])
    targets = sparse.level_targets(cfg, full, experiment.prunable, 3)
    mask = sparse.start_mask(cfg, full, experiment.prunable, targets, np.random.default_rng(1))
    make = lambda: experiment.method.updating.init_state(
        theta_0["params"],
        theta_0["batch_stats"],
        mask,
        sparse=experiment.method.updates.state(targets, targets, jax.random.key(5)),
    )
    return experiment, make, targets


@pytest.mark.slow
def test_rigl_inside_the_step_regrows_at_zero_keeps_counts_and_compiles_once(rigl):
    experiment, make, targets = rigl
    trainer, keys = experiment.method.updating, experiment.keys(0)
    data_key, augment_key = keys["data"][None], keys["augment"][None]
    state, _ = trainer.train(training.stack([make()]), data_key, augment_key, 0, 7)  # an update at step 0
    before = jax.device_get(state)
    state, _ = trainer.train(state, data_key, augment_key, 7, 8)  # step 7 is the next update iteration
    after = jax.device_get(state)
    changed = 0
    for name, target in zip(experiment.prunable, targets):
        old, new = masks.flatten(before["mask"])[name][0], masks.flatten(after["mask"])[name][0]
        w = masks.flatten(after["params"])[name][0]
        assert new.sum() == old.sum() == target
        assert np.all(w[~new] == 0.0)  # dropped or never active: exactly 0
        assert np.all(w[new & ~old] == 0.0)  # new connections start at 0
        changed += int((new & ~old).sum())
        for moment in ("mu", "nu"):  # Adam's moments of new and pruned weights: 0
            leaf = masks.flatten(after["opt_state"][0]._asdict()[moment])[name][0]
            assert np.all(leaf[~new] == 0.0) and np.all(leaf[new & ~old] == 0.0)
    assert changed > 0
    # growth is by the dense gradient of the update step's batch (checked against NumPy above);
    # across more updates, chunk boundaries change no bit, and the step compiled once
    whole, _ = trainer.train(training.stack([make()]), data_key, augment_key, 0, 30)
    split, _ = trainer.train(training.stack([make()]), data_key, augment_key, 0, 13)
    split, _ = trainer.train(split, data_key, augment_key, 13, 30)
    for a, b in zip(jax.tree.leaves(jax.device_get(whole)), jax.tree.leaves(jax.device_get(split))):
        np.testing.assert_array_equal(a, b)
    assert trainer._train._cache_size() == 1
    # the compiled loop runs the masked steps between updates as one inner loop and each update's
    # step after it; one step at a time (the host loop) picks the update by lax.cond: the same bits
    stepwise = copy.copy(trainer)
    stepwise.host_loop = True
    alone, _ = stepwise.train(training.stack([make()]), data_key, augment_key, 0, 30)
    for a, b in zip(jax.tree.leaves(jax.device_get(whole)), jax.tree.leaves(jax.device_get(alone))):
        np.testing.assert_array_equal(a, b)


def _start(cfg):
    """A sparse-training experiment and a network's start at level 3's counts (one member stacked)."""
    experiment = prepare(cfg)
    theta_0 = experiment.initial_weights(experiment.keys(0)["init"])
    full = masks.full_mask(theta_0["params"])
    targets = sparse.level_targets(cfg, full, experiment.prunable, 3)
    mask = sparse.start_mask(cfg, full, experiment.prunable, targets, np.random.default_rng(1))
    state = experiment.method.updating.init_state(
        theta_0["params"],
        theta_0["batch_stats"],
        mask,
        sparse=experiment.method.updates.state(targets, targets, jax.random.key(5)),
    )
    return experiment, training.stack([state]), targets


def _reference_update(experiment, trainer, state, t, data_key, augment_key, alpha, t_end):
    """Evci et al. 2020's Algorithm 1 at update iteration ``t`` (rigl's SparseRigLOptimizerBase.
    apply_gradients), in NumPy on member 0's state before it: no optimizer step; of each layer's
    active weights the k = floor(α_t x active) smallest |θ_t| go, then of the inactive the k with the
    largest |∇L(θ_t)| of batch t (RigL) or the largest uniform score (SET) come; dropped and new
    weights are 0, their optimizer moments 0; every other weight and moment, and Adam's count, as
    before. Only the gradient (jax, the trainer's model and batch) and SET's scores (its documented
    key) are taken from the library."""
    before = jax.device_get(training.member(state, 0))
    ((_, _, epoch, subset),) = trainer.epochs(t, t + 1)
    order = trainer.data_order(data_key, epoch, subset)
    x, y = trainer._batch(trainer.train_data, order, augment_key, jnp.int32(t))

    def loss(params):
        logits, _ = trainer.apply(params, before["batch_stats"], x, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grads = masks.flatten(jax.device_get(jax.jit(jax.grad(loss))(before["params"])))
    method = experiment.cfg.sparsity.method
    alpha_t = alpha / 2 * (1 + math.cos(math.pi * t / t_end))
    key = jax.random.fold_in(jax.random.wrap_key_data(before["sparse"]["key"]), t)
    weights, mask = masks.flatten(before["params"]), masks.flatten(before["mask"])
    new_weights, new_mask = dict(weights), dict(mask)
    for g, name in enumerate(experiment.prunable):
        w, m = np.asarray(weights[name]).ravel(), np.asarray(mask[name]).ravel()
        k = math.floor(alpha_t * int(m.sum()))
        scores = (
            np.abs(grads[name].ravel())
            if method == "rigl"
            else np.asarray(jax.random.uniform(jax.random.fold_in(key, g), w.shape))
        )
        new = _numpy_drop_and_grow(w, m, scores, k)
        new_weights[name] = np.where(new & m, w, 0.0).astype(w.dtype).reshape(weights[name].shape)
        new_mask[name] = new.reshape(mask[name].shape)
    expected = {
        **before,
        "params": masks.unflatten(before["params"], new_weights),
        "mask": masks.unflatten(before["mask"], new_mask),
    }
    adam = before["opt_state"][0]
    moments = {}
    for moment in ("mu", "nu"):
        flat = dict(masks.flatten(adam._asdict()[moment]))
        for name in experiment.prunable:
            flat[name] = np.where(new_mask[name], flat[name], 0.0).astype(flat[name].dtype)
        moments[moment] = masks.unflatten(adam._asdict()[moment], flat)
    expected["opt_state"] = (adam._replace(**moments), *before["opt_state"][1:])
    return expected


@pytest.mark.slow
@pytest.mark.parametrize("method", ["rigl", "set"])
def test_an_update_iteration_replaces_the_optimizer_step_as_evcis_algorithm_1(method, tmp_path):
    """On an update iteration (rigl's is_mask_update_iter: from step 0, every ΔT) the trainer's
    step equals the NumPy reference bit for bit: weights ranked as they were before the step, no
    optimizer step, and the mask changes; a step between updates is an optimizer step."""
    cfg = compose_config(
        [*SMALL, f"sparsity={method}", "sparsity.update_every=7it", "sparsity.end=1.0", f"output_dir={tmp_path}"]
    )
    experiment, state, targets = _start(cfg)
    trainer, keys = experiment.method.updating, experiment.keys(0)
    data_key, augment_key = keys["data"][None], keys["augment"][None]
    assert experiment.method.updates.schedule.events.tolist()[:3] == [0, 7, 14]  # rigl's first update: step 0
    reference = lambda state, t: _reference_update(
        experiment, trainer, state, t, keys["data"], keys["augment"], cfg.sparsity.drop_fraction, experiment.end
    )
    for t in (0, 7):
        if t:  # steps 1..t-1 lie between updates: optimizer steps, the mask as it was
            stepped, _ = trainer.train(state, data_key, augment_key, 1, t)
            moved, still = (masks.flatten(jax.device_get(s)["params"]) for s in (stepped, state))
            assert all(np.any(moved[n] != still[n]) for n in experiment.prunable)
            for a, b in zip(*(jax.tree.leaves(jax.device_get(s)["mask"]) for s in (stepped, state))):
                np.testing.assert_array_equal(a, b)
            state = stepped
        expected = reference(state, t)
        before = masks.flatten(jax.device_get(training.member(state, 0))["mask"])
        state, _ = trainer.train(state, data_key, augment_key, t, t + 1)
        after = jax.device_get(training.member(state, 0))
        for name, target in zip(experiment.prunable, targets):
            assert masks.flatten(after["mask"])[name].sum() == target
        assert any(np.any(masks.flatten(after["mask"])[n] != before[n]) for n in experiment.prunable)
        assert jax.tree.structure(expected) == jax.tree.structure(after)
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(after), jax.tree.leaves(expected)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """RigL and GMP experiments of two levels, RigL with the random_reinit control."""
    out = tmp_path_factory.mktemp("dst")
    run = lambda *o: levels.run(compose_config([*SMALL, "levels=2", f"output_dir={out}", *o]))
    run("sparsity=rigl", "sparsity.update_every=20it", "controls=[random_reinit]", "sparsity.levels=[2]")
    run("sparsity=gmp", "sparsity.update_every=10it")
    # a control added to the finished RigL levels trains alone, on the final mask, without updates
    run("sparsity=rigl", "sparsity.update_every=20it", "controls=[random_reinit,random_prune]", "sparsity.levels=[2]")
    return out


def _read(directory, level, what, keys=("mask", "params")):
    return read_flat(os.path.join(directory, "replicate_0", f"level_{level}", what), keys, exact=False, separator="/")


def _ticket(directory, level):
    with open(os.path.join(directory, "replicate_0", f"level_{level}", "metrics.json")) as f:
        return _read(directory, level, "ticket"), json.load(f)


@pytest.mark.slow
def test_each_level_trains_from_scratch_to_imps_counts_and_reports_its_cost(pipeline):
    found = {read_identity(d).get("sparsity", {}).get("method", "imp"): d for d in experiment_dirs(str(pipeline))}
    rigl_dir, gmp_dir = found["rigl"], found["gmp"]
    assert not os.path.exists(os.path.join(rigl_dir, "replicate_0", "level_1"))  # sparsity.levels=[2]
    imp = prepare(compose_config([*SMALL, "levels=2"]))  # IMP's counts by its rule, and its cost, untrained
    full = masks.full_mask(imp.trainer.init_params)
    for level in (1, 2):
        gmp_ticket, gmp_metrics = _ticket(gmp_dir, level)
        # GMP with distribution=imp ends at IMP's counts layer by layer, from a dense start
        assert [gmp_metrics["layers"][n]["remaining"] for n in imp.prunable] == masks.level_counts(
            full, imp.cfg.pruning, imp.prunable, level
        )
        assert gmp_metrics["sparse_training"]["start_remaining"] == gmp_metrics["total"]
        assert gmp_metrics["cost_steps"] == 100 and imp.cost(level) == 100 * (level + 1)
    rigl_ticket, rigl_metrics = _ticket(rigl_dir, 2)
    assert rigl_metrics["remaining"] == sum(
        masks.level_counts(full, imp.cfg.pruning, imp.prunable, 2)
    )  # ERK: IMP's total
    record = rigl_metrics["sparse_training"]
    assert record["updates"] == 4 and record["update_steps"] == [0, 20, 40, 60]  # update iterations from step 0
    assert record["start_remaining"] == record["final_remaining"] == rigl_metrics["remaining"]
    trained = _read(rigl_dir, 2, "trained", ("params",))["params"]
    reinit = _read(rigl_dir, 2, os.path.join("random_reinit", "ticket"), ("mask",))["mask"]
    for name, m in rigl_ticket["mask"].items():
        assert np.all(np.asarray(trained[name])[~m.astype(bool)] == 0.0)  # the final mask holds the trained weights
        assert np.all(np.asarray(rigl_ticket["params"][name])[~m.astype(bool)] == 0.0)
        np.testing.assert_array_equal(reinit[name], m)  # Evci's retrain-from-scratch on RigL's final mask
    pruned = _read(rigl_dir, 2, os.path.join("random_prune", "ticket"), ("mask",))["mask"]
    assert {n: int(m.sum()) for n, m in pruned.items()} == {n: int(m.sum()) for n, m in rigl_ticket["mask"].items()}
    df = load_runs(str(pipeline))
    table = summarize(df)
    dst = table[(table.hash == os.path.basename(rigl_dir).rsplit("-", 1)[1]) & (table.level == 2)]
    assert dst["cost_steps"].tolist() == [100.0, 100.0, 100.0]  # the network and its two controls: one training each
    console = Console(record=True, width=250)
    console.print(tables.results(table))
    assert "training cost (steps)" in console.export_text()
    assert os.path.exists(os.path.join(rigl_dir, "accuracy_vs_cost.png"))


@pytest.mark.slow
def test_a_rigl_level_stopped_between_updates_resumes_bitwise(pipeline, tmp_path, monkeypatch, capfd):
    """Stopped (as by SIGTERM) at step 30 of level 2, between the update iterations 20 and 40,
    with a checkpoint; the same command resumes it and ends bitwise where the uninterrupted run did."""
    from lottery.errors import Preempted
    from lottery.training import loop

    overrides = [
        *SMALL,
        "levels=2",
        "sparsity=rigl",
        "sparsity.update_every=20it",
        "controls=[random_reinit]",
        "sparsity.levels=[2]",
        "checkpoint_every=30it",
        f"output_dir={tmp_path}",
    ]
    train = training.Trainer.train

    def stop_once_past_30(self, state, data_key, augment_key, start, stop, *rest, **options):
        if self.updates is not None and stop >= 30 and not getattr(loop.PREEMPTION, "_tested", False):
            loop.PREEMPTION.requested, loop.PREEMPTION._tested = "SIGTERM", True
        return train(self, state, data_key, augment_key, start, stop, *rest, **options)

    monkeypatch.setattr(training.Trainer, "train", stop_once_past_30)
    with pytest.raises(Preempted, match="checkpoint written at level 2, step 30"):
        levels.run(compose_config(overrides))
    monkeypatch.setattr(loop.PREEMPTION, "_tested", True, raising=False)
    capfd.readouterr()
    levels.run(compose_config(overrides))
    assert "level 2: resuming 1 networks from the checkpoint at step 30" in capfd.readouterr().out
    (resumed,) = experiment_dirs(str(tmp_path))
    reference = next(
        d for d in experiment_dirs(str(pipeline)) if read_identity(d).get("sparsity", {}).get("method") == "rigl"
    )
    for what in (
        "ticket",
        "trained",
        os.path.join("random_reinit", "ticket"),
        os.path.join("random_reinit", "trained"),
    ):
        keys = ("params",) if what.endswith("trained") else ("mask", "params")
        a, b = _read(resumed, 2, what, keys), _read(reference, 2, what, keys)
        for key in keys:
            for name in a[key]:
                np.testing.assert_array_equal(a[key][name], b[key][name], err_msg=f"{what} {key} {name}")
