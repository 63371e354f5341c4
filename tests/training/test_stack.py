"""Stacks (``training.stack``): a level's networks trained W at a time in one vmapped program. A
network's bits depend on W, never on which networks share its stack or where in it."""

import io
import json
import os

import jax
import numpy as np
import pytest
from rich.console import Console

from lottery import imp
from lottery.errors import LotteryError
from lottery.results import invocations, paths
from lottery.training import trainer as training

QUIET = Console(file=io.StringIO())
# SGD with momentum, a control, LMC copies and a rewind point: every kind of network a level trains.
RUN = [
    "optimizer=sgd",
    "optimizer.lr=0.05",
    "optimizer.momentum=0.9",
    "levels=1",
    "rewind=20it",
    "lmc.levels=[1]",
    "lmc.points=3",
    "training.steps=3ep",
    "checkpoint_every=40it",
]


def arrays(experiment, replicate: int, kinds=("ticket", "random_prune")) -> dict:
    """Replicate ``replicate``'s saved trees and metrics (no times, no provenance), by path."""
    out = {}
    for level in (0, 1):
        for kind in kinds if level else ("ticket",):
            directory = paths.network_dir(experiment.directory, replicate, level, kind)
            for what in ("ticket", "trained") + (("rewind_point",) if level == 0 else ()):
                out[f"{level}/{kind}/{what}"] = [
                    np.asarray(a) for a in jax.tree.leaves(experiment.load(directory, what))
                ]
            metrics = json.load(open(os.path.join(directory, "metrics.json")))
            out[f"{level}/{kind}/metrics"] = {k: metrics[k] for k in ("final", "early_stop", "history", "layers")}
    lmc = paths.lmc_dir(experiment.directory, replicate, 1)
    for what in ("copy_a", "copy_b"):
        out[f"lmc/{what}"] = [np.asarray(a) for a in jax.tree.leaves(experiment.load(lmc, what))]
    out["lmc/path"] = tuple(json.load(open(os.path.join(lmc, "metrics.json")))["test_error"])
    return out


def same(a: dict, b: dict) -> bool:
    assert a.keys() == b.keys()
    return all(
        (all(x.tobytes() == y.tobytes() for x, y in zip(a[k], b[k])) if isinstance(a[k], list) else a[k] == b[k])
        for k in a
    )


def run(small_config, tmp_path, name, *overrides):
    cfg = small_config(*RUN, *overrides, f"output_dir={tmp_path / name}")
    imp.run(cfg, console=QUIET)
    return imp.prepare(cfg)


@pytest.mark.slow
def test_a_network_in_a_stack_does_not_depend_on_its_stack_mates_or_position(small_config, tmp_path):
    # Width 4. Alone: replicate 0's ticket and control fill a block with padding. Crowded: three
    # replicates and two controls, so replicate 0's networks share blocks with others, and its
    # random_prune sits at another position (after random_reinit) than alone.
    alone = run(small_config, tmp_path, "alone", "training.stack=4", "controls=[random_prune]")
    crowded = run(
        small_config, tmp_path, "crowded", "training.stack=4", "replicates=3", "controls=[random_reinit,random_prune]"
    )
    assert alone.directory.rsplit("-", 1)[1] == crowded.directory.rsplit("-", 1)[1]  # one experiment, not hashed
    assert same(arrays(alone, 0), arrays(crowded, 0))
    assert not same(arrays(crowded, 0), arrays(crowded, 1))  # the comparison can tell networks apart
    # The width is part of the program each invocation records; one network at a time is not.
    ((start, *_),) = [[e for e in invocations.read(alone.directory) if e["event"] == "start"]]
    assert start["program"]["stack"] == 4 and start["settings"]["training.stack"] == "4"
    # ... and it changes bits: a width is like a backend (docs/reproducibility.md).
    one = run(small_config, tmp_path, "one", "training.stack=1", "controls=[random_prune]")
    assert "stack" not in invocations.read(one.directory)[0]["program"]
    assert not same(arrays(one, 0), arrays(alone, 0))


def test_auto_is_one_network_at_a_time_on_cpu_and_bad_widths_are_one_line(small_config):
    assert jax.default_backend() == "cpu"
    assert imp.prepare(small_config()).trainer.width == 1
    for bad in ("0", "-2", "wide", "2.5"):
        with pytest.raises(LotteryError, match=rf"training.stack={bad!r} must be a positive number of networks"):
            imp.check(small_config(f"training.stack={bad}"))


@pytest.mark.slow
def test_a_conv_model_stack_on_the_host_loop_is_independent_of_its_mates(small_config):
    # Conv models on CPU dispatch one compiled step at a time (the host loop): its vmapped step too.
    experiment = imp.prepare(small_config("model=conv2", "training.stack=3"))
    trainer = experiment.trainer
    assert trainer.host_loop and trainer.width == 3

    def network(seed):
        weights = experiment.initial_weights(jax.random.key(seed))
        mask = jax.tree.map(
            lambda a: np.random.default_rng(seed).random(a.shape) < 0.6 if a.ndim > 1 else np.ones(a.shape, bool),
            weights["params"],
        )
        return trainer.init_state(weights["params"], weights["batch_stats"], mask)

    def train(seeds):  # network 7 is followed; 4 networks: a block of 3 and a padded one
        keys = [experiment.keys(s) for s in seeds]
        states = training.stack([network(s) for s in seeds])
        out, _ = trainer.train(
            states, jax.numpy.stack([k["data"] for k in keys]), jax.numpy.stack([k["augment"] for k in keys]), 0, 6
        )
        return [np.asarray(a[seeds.index(7)]).tobytes() for a in jax.tree.leaves(out)]

    assert train([1, 7, 2, 3]) == train([7, 8, 9, 10])  # position 1 among 1, 2 vs position 0 among 8, 9
