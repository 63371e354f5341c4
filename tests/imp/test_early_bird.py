"""Early-Bird tickets (config ``early_bird``; lottery/imp/early_bird.py, You et al. 2020): the mask
distance against the similarity code, the stopping rule on a hand-made sequence, and each draw
against the masks of the weights at the step it was drawn."""

import json
import os
import re

import jax
import numpy as np
import pytest

from conftest import compose_config
from lottery.analysis import tickets
from lottery.imp import early_bird, levels
from lottery.imp.experiment import prepare
from lottery.pruning import masks
from lottery.training import loop
from lottery.training import trainer as training
from lottery.training.loop import Network


def test_the_mask_distance_is_the_similarity_codes_disagreement_and_the_rule_stops_where_it_should():
    rng = np.random.default_rng(0)
    names = ["a", "b"]
    sequence = [{"a": rng.random((40, 30)) < 0.5, "b": rng.random((30, 10)) < 0.5}]
    for changed in (0.10, 0.02, 0.01, 0.2):  # the fraction of weights flipped at each check
        flip = {n: rng.random(m.shape) < changed for n, m in sequence[-1].items()}
        sequence.append({n: m ^ flip[n] for n, m in sequence[-1].items()})
    distances = []
    weights = {n: rng.standard_normal(m.shape) for n, m in sequence[0].items()}
    for x, y in zip(sequence, sequence[1:]):
        (row,) = [r for r in tickets.compare(x, y, weights, weights, names) if r["layer"] == tickets.ALL]
        differ = row["kept_a"] + row["kept_b"] - 2 * row["kept_both"]  # in one mask, not the other
        distances.append(early_bird.distance(x, y, names))
        assert distances[-1] == pytest.approx(differ / row["size"])
    # consecutive distances ~0.10, 0.02, 0.01, 0.2: with epsilon 0.05 and a window of 2, the masks
    # have settled at check 3 (distances 2 and 3 below it); with a window of 3, never
    assert early_bird.settled(distances, 0.05, 2) == 3
    assert early_bird.settled(distances, 0.05, 3) is None
    assert early_bird.settled(distances, 0.15, 1) == 1


@pytest.mark.slow
def test_each_level_is_pruned_from_the_weights_at_its_early_bird_step(tmp_path):
    cfg = compose_config(
        [
            "model.hidden=[64,32]",
            "training.steps=10ep",
            "training.eval_every=20it",
            "levels=2",
            "progress=false",
            "early_bird.enabled=true",
            "early_bird.every=20it",
            "early_bird.window=2",
            "early_bird.epsilon=0.05",
            f"output_dir={tmp_path}",
        ]
    )
    levels.run(cfg)
    experiment = prepare(cfg)
    keys = experiment.keys(0)
    for level in (0, 1):
        directory = experiment.level_dir(0, level)
        with open(os.path.join(directory, "early_bird", "metrics.json")) as f:
            record = json.load(f)
        assert (
            record["reached"]
            and record["step"] < experiment.end
            and record["saved_steps"] == experiment.end - record["step"]
        )
        assert all(d < 0.05 for d in record["distances"][-2:])
        # independently: the level's network trained from its start to the drawn step, then pruned by magnitude
        start = (
            experiment.dense_start(0)
            if level == 0
            else experiment.trainer.init_state(
                **{k: experiment.load(directory, "ticket")[k] for k in ("params", "batch_stats", "mask")}
            )
        )
        network = Network(0, "ticket", directory, start, keys["data"], keys["augment"])
        state, _, _, _ = loop.train(
            experiment.trainer,
            training.stack([start]),
            [network],
            level,
            0,
            record["step"],
            lambda n: None,
            eval_every=10**6,
            checkpoint_every=10**6,
            evaluate=False,
        )
        weights = jax.device_get(training.unstack(state, 0))
        expected = masks.prune_by_scores(
            {n: np.abs(a) for n, a in masks.flatten(weights["params"]).items()},
            start["mask"],
            cfg.pruning,
            experiment.prunable,
        )
        drawn = experiment.load(experiment.level_dir(0, level + 1), "ticket")["mask"]  # what the next level used
        for a, b in zip(masks.flatten(expected).values(), masks.flatten(drawn).values()):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the last level draws too: asking for more levels later continues from its draw
    assert os.path.isfile(os.path.join(experiment.level_dir(0, 2), "early_bird", "metrics.json"))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["early_bird.enabled=true", "controls=[invert]"],
            "controls: invert reverses the ranking that made a ticket, which "
            "Early-Bird IMP (early_bird.enabled=true) has none of",
        ),
        (
            ["early_bird.enabled=true", "pruning.structure=neurons"],
            "pruning.structure=neurons: Early-Bird IMP "
            "(early_bird.enabled=true) makes this experiment's tickets and does not use it; leave pruning.structure "
            "at weights",
        ),
        (["early_bird.enabled=true", "pruning.criterion=snip"], "pruning.criterion=snip: Early-Bird IMP"),
        (
            ["early_bird.enabled=true", "swamp.particles=2"],
            "swamp.particles=2: SWAMP changes how the tickets of IMP or "
            "ticket transfer train; Early-Bird IMP (early_bird.enabled=true)",
        ),
        (
            ["early_bird.enabled=true", "sparsity=rigl"],
            "early_bird.enabled=true and sparsity.method=rigl: each makes the levels' tickets",
        ),
        (
            ["swamp.average_from=0.5"],
            "swamp.average_from=0.5 is set, but swamp.particles is 1 (plain IMP, no weight "
            "averaging): set swamp.particles >= 2",
        ),
        (["sparsity.levels=[2]"], "sparsity.levels=[2] is set, but sparsity.method is imp"),
        (["sparsity=static", "sparsity.levels=[2]", "lmc.levels=[1]"], "lmc.levels=[1]: level 1 is not trained"),
        # issue 35: keys of an unchosen method, and combinations the code cannot honour, each named
        (["sparsity.distribution=erk"], "sparsity.distribution=erk is set, but sparsity.method is imp"),
        (["sparsity.drop_fraction=0.5"], "sparsity.drop_fraction=0.5 is set, but sparsity.method is imp"),
        (
            ["early_bird.epsilon=0.2"],
            "early_bird.epsilon=0.2 is set, but early_bird.enabled is false: set "
            "early_bird.enabled=true, or leave early_bird's other keys alone",
        ),
        (["early_bird.window=3"], "early_bird.window=3 is set, but early_bird.enabled is false"),
        (["early_bird.every=2ep"], "early_bird.every=2ep is set, but early_bird.enabled is false"),
        (["transfer.weights=init"], "transfer.weights=init is set, but transfer.source is not set"),
        (
            ["diet.score=random", "diet.networks=3", "rewind=1ep"],
            "diet.networks=3 does nothing with these diet settings",
        ),
        (
            ["sparsity=rigl", "rewind_optimizer=true"],
            "rewind_optimizer=true: sparse training from scratch "
            "(sparsity.method=rigl) makes this experiment's tickets and does not use it",
        ),
        (
            ["transfer.source=x", "pruning.criterion=snip"],
            "pruning.criterion=snip: ticket transfer (transfer.source is set)",
        ),
        (["early_bird.enabled=true", "early_bird.epsilon=0"], "early_bird.epsilon=0.0 must be in (0, 1]"),
        (["early_bird.enabled=true", "early_bird.window=0"], "early_bird.window=0 must be 1 or more"),
    ],
)
def test_settings_that_would_mean_nothing_are_one_line(overrides, message):
    """Each refused with its own message naming the key (the compatibility rules: config.check_unused
    for every group's leftover keys, the methods' checks for what they cannot honour)."""
    from lottery.errors import LotteryError
    from lottery.imp.experiment import check

    with pytest.raises(LotteryError, match=re.escape(message)):
        check(compose_config(overrides))


def test_a_check_interval_past_the_end_of_training_is_refused_before_anything_runs(tmp_path):
    """As sparsity.update_every is (issue 35): an interval with no check before the end draws nothing early."""
    from lottery import imp
    from lottery.errors import LotteryError

    cfg = compose_config(["early_bird.enabled=true", "early_bird.every=30ep", f"output_dir={tmp_path}"])
    with pytest.raises(
        LotteryError,
        match=r"early_bird.every=30ep \(\d+ iterations\) leaves no check before the end of "
        r"training \(training.steps=30ep",
    ):
        imp.prepare(cfg)
    assert not any(tmp_path.iterdir())  # nothing written
