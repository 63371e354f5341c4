"""A pruned weight is exactly 0.0 after every step, and its optimizer state stays 0, for every optimizer."""

import jax
import numpy as np
import optax
import pytest

from lottery import imp
from lottery.pruning import masks as pruning
from lottery.training import trainer as training
from lottery.training.trainer import stack, unstack

OPTIMIZERS = {
    "sgd-momentum-wd": ["optimizer=sgd", "optimizer.lr=0.05", "optimizer.momentum=0.9", "optimizer.weight_decay=1e-3"],
    "sgd-nesterov": ["optimizer=sgd", "optimizer.lr=0.05", "optimizer.nesterov=true"],
    "adam": ["optimizer=adam", "optimizer.weight_decay=1e-4"],
    "resnet-bn-sgd": [
        "model=resnet",
        "model.depth=8",
        "model.width=4",
        "optimizer=sgd",
        "optimizer.lr=0.05",
        "dataset.augment=true",
    ],
}


def member_keys(experiment, replicates=(0,)):
    """Stacked data and augmentation keys of one member per replicate."""
    keys = [experiment.keys(r) for r in replicates]
    return jax.numpy.stack([k["data"] for k in keys]), jax.numpy.stack([k["augment"] for k in keys])


def dense_warmup(cfg, steps=20):
    """The experiment and its dense state after a few steps: every weight has non-zero moments."""
    experiment = imp.prepare(cfg)
    trainer = experiment.trainer
    dense = trainer.init_state(trainer.init_params, trainer.init_batch_stats, pruning.full_mask(trainer.init_params))
    return experiment, unstack(trainer.train(stack([dense]), *member_keys(experiment), 0, steps)[0], 0)


def random_mask(params, names, density, seed):
    rng = np.random.default_rng(seed)
    flat = {k: np.ones(np.shape(v), bool) for k, v in pruning.flatten(params).items()}
    for name in names:
        flat[name] = rng.random(flat[name].shape) < density
    return pruning.unflatten(params, flat)


def bits(x):
    return np.asarray(x).view(np.uint32)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_pruned_weights_and_their_moments_stay_zero_at_every_step(small_config, name):
    experiment, dense = dense_warmup(small_config(*OPTIMIZERS[name]))
    trainer, keys = experiment.trainer, member_keys(experiment)
    # Then half the weights pruned, keeping (masked) moments: the rewound-optimizer case.
    mask = random_mask(dense["params"], experiment.prunable, 0.5, seed=0)
    opt_state = training.mask_optimizer_state(trainer.tx, dense["opt_state"], mask)
    state = stack([trainer.init_state(dense["params"], dense["batch_stats"], mask, opt_state)])
    flat_mask = pruning.flatten(mask)
    for step in range(20, 80):  # one compiled step per call, so every step is checked
        state, loss = trainer.train(state, *keys, step, step + 1)
        params = pruning.flatten(unstack(state["params"], 0))
        for path in experiment.prunable:
            assert np.all(bits(params[path][~flat_mask[path]]) == 0), f"{path} not +0.0 after step {step}"
    assert np.isfinite(float(loss[0]))

    # Optimizer state of pruned weights is exactly 0; of surviving weights it is not.
    opt_state = unstack(state["opt_state"], 0)
    pruned_zero = optax.tree_map_params(
        trainer.tx,
        lambda v, m: bool(np.all(np.asarray(v)[~m] == 0)),
        opt_state,
        mask,
        transform_non_params=lambda _: True,
    )
    assert all(jax.tree.leaves(pruned_zero))
    moment_leaves = optax.tree_map_params(
        trainer.tx,
        lambda v, m: float(np.abs(np.asarray(v)[m]).sum()),
        opt_state,
        mask,
        transform_non_params=lambda _: None,
    )
    assert sum(jax.tree.leaves(moment_leaves)) > 0

    # Surviving weights did train.
    start = pruning.flatten(dense["params"])
    assert any(not np.array_equal(params[p][flat_mask[p]], start[p][flat_mask[p]]) for p in experiment.prunable)


@pytest.mark.parametrize("name", ["sgd-momentum-wd", "adam"])
def test_the_step_itself_zeroes_pruned_weights_even_with_dense_moments(small_config, name):
    # Nothing outside the compiled step has to remember the mask: even a dense (unmasked) optimizer
    # state, whose moments would move pruned weights, leaves them exactly 0.0.
    experiment, dense = dense_warmup(small_config(*OPTIMIZERS[name]))
    trainer, keys = experiment.trainer, member_keys(experiment)
    mask = random_mask(dense["params"], experiment.prunable, 0.3, seed=1)
    state = stack([trainer.init_state(dense["params"], dense["batch_stats"], mask, dense["opt_state"])])
    flat_mask = pruning.flatten(mask)
    for step in range(20, 30):
        state, _ = trainer.train(state, *keys, step, step + 1)
        params = pruning.flatten(unstack(state["params"], 0))
        for path in experiment.prunable:
            assert np.all(bits(params[path][~flat_mask[path]]) == 0), f"{path} not +0.0 after step {step}"


def test_schedule_is_indexed_by_global_step_with_warmup_and_milestones(small_config):
    cfg = small_config(
        "optimizer=sgd",
        "optimizer.lr=0.1",
        "training.milestones=[100it,1ep]",
        "training.gamma=0.5",
        "training.warmup=10it",
    )
    schedule = training.make_schedule(cfg.optimizer, cfg.training, iterations_per_epoch=150)
    np.testing.assert_allclose(
        [float(schedule(s)) for s in (0, 5, 10, 99, 100, 149, 150, 10_000)],
        [0.0, 0.05, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025],
        rtol=1e-6,
    )
