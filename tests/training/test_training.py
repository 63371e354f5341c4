"""The two loop placements (compiled loop of steps, or one compiled step per dispatch) agree."""

import jax
import numpy as np
import pytest

from lottery import imp
from lottery.pruning import masks as pruning
from lottery.training import trainer as training
from lottery.errors import LotteryError
from lottery.training.trainer import stack, unstack
from test_masking import member_keys


def train_with(small_config, loop, *overrides):
    experiment = imp.prepare(small_config(f"training.loop={loop}", *overrides))
    trainer = experiment.trainer
    mask = pruning.full_mask(trainer.init_params)
    state = stack([trainer.init_state(trainer.init_params, trainer.init_batch_stats, mask)])
    losses = []
    for start, stop in ((0, 15), (15, 50)):  # crosses epoch boundaries (20 iterations per epoch)
        state, loss = trainer.train(state, *member_keys(experiment), start, stop)
        losses.append(float(loss[0]))
    return trainer, state, losses


@pytest.mark.slow
@pytest.mark.parametrize("model", [[], ["model=resnet", "model.depth=8", "model.width=4", "dataset.augment=true"]])
def test_host_and_device_loops_train_the_same(small_config, model):
    device_trainer, device, device_losses = train_with(small_config, "device", *model)
    host_trainer, host, host_losses = train_with(small_config, "host", *model)
    assert host_trainer.host_loop and not device_trainer.host_loop
    np.testing.assert_allclose(host_losses, device_losses, rtol=1e-4)
    for a, b in zip(jax.tree.leaves(unstack(host["params"], 0)), jax.tree.leaves(unstack(device["params"], 0))):
        # Adam turns rounding-level gradient differences into sign-like updates of size ~lr for
        # near-zero gradients; a different data order would move weights by ~lr * steps = 0.06.
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=5e-4)
    for split in ("val", "test"):
        np.testing.assert_allclose(
            host_trainer.evaluate(host, split), device_trainer.evaluate(device, split), rtol=1e-4
        )


def test_auto_uses_the_host_loop_only_for_conv_models_on_cpu(small_config):
    assert jax.default_backend() == "cpu"
    assert not imp.prepare(small_config()).trainer.host_loop
    assert imp.prepare(small_config("model=conv2")).trainer.host_loop


def test_unknown_loop_placement_is_named(small_config):
    with pytest.raises(
        LotteryError, match=r"training\.loop='gpu' is not a loop placement; choose one of: auto, device, host"
    ):
        imp.prepare(small_config("training.loop=gpu"))
    assert training.LOOPS == ("auto", "device", "host")
