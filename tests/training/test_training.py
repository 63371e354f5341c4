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


class SavedSteps:
    """A group's checkpoints as the loop sees them: the steps saved, and the clock when each was."""

    def __init__(self, clock):
        self.clock, self.saved = clock, []

    def latest(self, like):
        return None

    def save(self, step, arrays, meta):
        self.saved.append((step, self.clock.time))

    def close(self):
        pass


def test_a_duration_writes_a_checkpoint_at_the_first_epoch_end_after_it(small_config, monkeypatch):
    """checkpoint_every=100s on a clock that moves 30 s at each look: checkpoints only at epoch ends,
    at least 100 s apart, the first at the first epoch end 100 s after the start; a level shorter than
    the duration writes none."""
    from lottery.step import Every
    from lottery.training import loop

    experiment = imp.prepare(small_config())
    trainer = experiment.trainer
    per_epoch = trainer.iterations_per_epoch

    class Clock:
        time = 0.0

        def __call__(self):
            self.time += 30.0
            return self.time

    state = trainer.init_state(trainer.init_params, trainer.init_batch_stats, pruning.full_mask(trainer.init_params))
    data, augment = member_keys(experiment)
    network = loop.Network(0, "ticket", "", state, data[0], augment[0])
    for seconds, end in ((100.0, 12 * per_epoch), (10**6, 4 * per_epoch)):
        clock = Clock()
        monkeypatch.setattr(loop, "now", clock)
        checkpoints = SavedSteps(clock)
        loop.train(
            trainer, stack([state]), [network], 1, 0, end, lambda n: None,
            eval_every=end, checkpoint_every=Every(seconds=seconds), evaluate=False, checkpoints=checkpoints,
        )  # fmt: skip
        steps = [step for step, _ in checkpoints.saved]
        if seconds > 10**5:
            assert steps == []
            continue
        assert steps and all(step % per_epoch == 0 and 0 < step < end for step in steps)
        times = [30.0] + [t for _, t in checkpoints.saved]  # the start looked at the clock first
        assert all(b - a >= seconds for a, b in zip(times, times[1:]))
        assert steps[0] == 4 * per_epoch  # looks at 60, 90, 120 (s) at epochs 1-3: 90 s; at epoch 4 120 s
