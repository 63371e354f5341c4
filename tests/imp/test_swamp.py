"""SWAMP (config ``swamp``; lottery/imp/swamp.py, Choi et al. 2024): a level's ticket trained as
several particles, each averaged over its last epochs, the mean of the averages saved, evaluated
and pruned by the next level."""

import pytest
import json
import os

import numpy as np

from conftest import compose_config
from lottery.imp import levels
from lottery.imp.experiment import prepare
from lottery.pruning import masks
from lottery.results.identity import experiment_hash
from lottery.results.store import load_tree
from lottery.training import trainer as training


@pytest.mark.slow
def test_the_ticket_is_the_masked_mean_of_its_particles_averages(tmp_path):
    cfg = compose_config(
        [
            "model.hidden=[64,32]",
            "training.steps=5ep",
            "training.eval_every=20it",
            "levels=2",
            "progress=false",
            "swamp.particles=3",
            "swamp.average_from=0.5",
            f"output_dir={tmp_path}",
        ]
    )
    levels.run(cfg)
    experiment = prepare(cfg)
    for level in (1, 2):
        directory = experiment.level_dir(0, level)
        trained = experiment.load(directory, "trained")
        particles = [
            load_tree(os.path.join(directory, "swamp", f"particle_{p}"), experiment.template("trained"))
            for p in range(3)
        ]
        for name, leaf in masks.flatten(trained["params"]).items():
            stack = np.stack([masks.flatten(p["params"])[name] for p in particles])
            np.testing.assert_allclose(leaf, stack.mean(axis=0), rtol=1e-6, atol=1e-7)
            assert not np.array_equal(stack[0], stack[1])  # different data orders: different particles
        mask = masks.flatten(experiment.load(directory, "ticket")["mask"])
        for name in experiment.prunable:
            assert np.all(masks.flatten(trained["params"])[name][~mask[name]] == 0.0)
        with open(os.path.join(directory, "metrics.json")) as f:
            metrics = json.load(f)
        assert metrics["swamp"]["particles"] == 3 and metrics["swamp"]["snapshots"] == 3  # epochs 3, 4 and the end
        _, accuracy = experiment.trainer.evaluate(training.stack([trained]), "test")
        assert metrics["final"]["test_accuracy"] == float(accuracy[0])  # the average, evaluated
    # the next level prunes the average: level 2's mask is magnitude pruning of level 1's saved (averaged) weights
    level_1 = experiment.load(experiment.level_dir(0, 1), "trained")
    mask_1 = experiment.load(experiment.level_dir(0, 1), "ticket")["mask"]
    scores = {n: np.abs(a) for n, a in masks.flatten(level_1["params"]).items()}
    expected = masks.prune_by_scores(scores, mask_1, cfg.pruning, experiment.prunable)
    got = experiment.load(experiment.level_dir(0, 2), "ticket")["mask"]
    for a, b in zip(masks.flatten(expected).values(), masks.flatten(got).values()):
        np.testing.assert_array_equal(a, b)


def test_one_particle_without_averaging_is_imp_under_the_same_hash():
    data = "sha256:x"
    assert experiment_hash(compose_config(["swamp.particles=1"]), data) == experiment_hash(compose_config([]), data)
    assert experiment_hash(compose_config(["swamp.particles=2"]), data) != experiment_hash(compose_config([]), data)
    experiment = prepare(compose_config(["swamp.particles=3", "rewind=20it"]))
    T, k = experiment.end, experiment.rewind
    assert experiment.cost(2) == T + 2 * 3 * (T - k)  # every particle of every level trains
