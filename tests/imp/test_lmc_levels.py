"""Level-to-level linear mode connectivity (config ``lmc.between_levels``; lottery/imp/lmc.py,
Paul et al. 2023): the path from level L-1's trained weights pruned to level L's mask to level L's
trained weights, checked against an independent evaluation of the interpolated networks."""

import json
import os

import numpy as np
import pytest

from conftest import compose_config
from lottery.analysis import load_runs, summarize
from lottery.errors import LotteryError
from lottery.imp import levels
from lottery.imp.experiment import check, prepare
from lottery.pruning import masks

SMALL = [
    "model.hidden=[64,32]",
    "training.steps=3ep",
    "training.eval_every=20it",
    "levels=2",
    "progress=false",
    "lmc.between_levels=true",
    "lmc.points=5",
]


def _error(experiment, weights):
    """Test error of one network, by the model's forward pass over the whole test set, here."""
    images, labels, weight = experiment.trainer.eval_host["test"]
    wrong = total = 0.0
    for x, y, w in zip(images, labels, weight):
        logits, _ = experiment.trainer.apply(
            weights["params"], weights["batch_stats"], experiment.trainer.inputs(x), train=False
        )
        wrong += float(np.sum((np.argmax(np.asarray(logits), -1) != y) * w))
        total += float(np.sum(w))
    return wrong / total, total


@pytest.mark.slow
def test_the_path_between_consecutive_levels_against_an_independent_evaluation(tmp_path):
    cfg = compose_config([*SMALL, f"output_dir={tmp_path}"])
    levels.run(cfg)
    experiment = prepare(cfg)
    for level in (1, 2):
        with open(os.path.join(experiment.level_dir(0, level), "lmc_levels", "metrics.json")) as f:
            path = json.load(f)
        previous = experiment.load(experiment.level_dir(0, level - 1), "trained")
        current = experiment.load(experiment.level_dir(0, level), "trained")
        mask = masks.flatten(experiment.load(experiment.level_dir(0, level), "ticket")["mask"])
        pruned = {
            "params": masks.unflatten(
                previous["params"], {n: np.where(mask[n], a, 0) for n, a in masks.flatten(previous["params"]).items()}
            ),
            "batch_stats": previous["batch_stats"],
        }
        assert path["alphas"] == [0.0, 0.25, 0.5, 0.75, 1.0]
        for alpha, error in zip(path["alphas"], path["test_error"]):
            mix = {
                "params": masks.unflatten(
                    current["params"],
                    {
                        n: (1 - np.float32(alpha)) * a + np.float32(alpha) * b
                        for (n, a), b in zip(
                            masks.flatten(pruned["params"]).items(), masks.flatten(current["params"]).values()
                        )
                    },
                ),
                "batch_stats": current["batch_stats"],
            }
            independent, examples = _error(experiment, mix)
            assert abs(error - independent) <= 1 / examples + 1e-9  # at most one example apart (rounding at a tie)
        with open(os.path.join(experiment.level_dir(0, level), "metrics.json")) as f:
            final = json.load(f)["final"]["test_accuracy"]
        assert path["test_error"][-1] == pytest.approx(1 - final, abs=1e-6)  # α = 1 is level L's network
        assert path["barrier"] == pytest.approx(
            max(path["test_error"]) - (path["test_error"][0] + path["test_error"][-1]) / 2
        )
    table = summarize(load_runs(str(tmp_path)))
    assert table[(table.level == 2) & (table.kind == "ticket")]["lmc_levels_barrier"].notna().all()
    assert table[table.level == 0]["lmc_levels_barrier"].isna().all()


def test_between_levels_is_refused_where_levels_are_trained_independently():
    with pytest.raises(LotteryError, match="lmc.between_levels=true: connectivity between consecutive levels is IMP's"):
        check(compose_config(["lmc.between_levels=true", "pruning.prune_at=start", "pruning.criterion=snip"]))
