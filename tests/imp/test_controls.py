"""Controls, retraining variants, replicates, group independence, and linear mode connectivity."""

import io
import json
import os

import jax
import numpy as np
import pytest
from omegaconf import OmegaConf
from rich.console import Console

from lottery import imp
from lottery.imp import lmc
from lottery.pruning import masks as pruning
from lottery.config import PruningConfig
from lottery.training.trainer import stack, unstack
from lottery.pruning import criteria
from lottery.imp import levels
from test_masking import member_keys

QUIET = Console(file=io.StringIO())


def load(experiment, replicate, level, what, kind="ticket"):
    directory = experiment.level_dir(replicate, level)
    return experiment.load(directory if kind == "ticket" else os.path.join(directory, kind), what)


def tobytes(tree):
    return [np.asarray(leaf).tobytes() for leaf in jax.tree.leaves(tree)]


@pytest.mark.slow
def test_controls_have_the_tickets_counts_and_their_own_weights_or_masks(small_config):
    cfg = small_config("controls=[random_reinit,random_prune]", "rewind=20it")
    results = imp.run(cfg, console=QUIET)
    experiment = imp.prepare(cfg)
    assert [(r["level"], r["kind"]) for r in results] == [
        (0, "ticket"),
        (1, "ticket"),
        (1, "random_reinit"),
        (1, "random_prune"),
        (2, "ticket"),
        (2, "random_reinit"),
        (2, "random_prune"),
    ]
    theta_k = load(experiment, 0, 0, "rewind_point")
    theta_0 = load(experiment, 0, 0, "ticket")["params"]
    for level in (1, 2):
        ticket = load(experiment, 0, level, "ticket")
        reinit = load(experiment, 0, level, "ticket", "random_reinit")
        prune = load(experiment, 0, level, "ticket", "random_prune")
        ticket_counts = pruning.counts(ticket["mask"], experiment.prunable)
        # random reinit: the ticket's mask exactly, on weights that are not θk.
        assert tobytes(reinit["mask"]) == tobytes(ticket["mask"])
        for name in experiment.prunable:
            r, t = pruning.flatten(reinit["params"])[name], pruning.flatten(ticket["params"])[name]
            m = pruning.flatten(ticket["mask"])[name]
            assert np.all(r[~m] == 0) and not np.array_equal(r[m], t[m])
            assert not np.array_equal(r[m], pruning.flatten(theta_0)[name][m])  # freshly drawn, not θ0
        # random prune: exactly the ticket's per-layer counts, another mask, and θk's weights.
        assert pruning.counts(prune["mask"], experiment.prunable) == ticket_counts
        assert tobytes(prune["mask"]) != tobytes(ticket["mask"])
        expected = jax.tree.map(lambda w, m: np.where(m, w, np.float32(0)), theta_k["params"], prune["mask"])
        assert tobytes(prune["params"]) == tobytes(expected)
    # Controls train on the same segment as the ticket and are reported beside it.
    by_kind = {r["kind"]: r for r in results if r["level"] == 2}
    assert by_kind["random_prune"]["start_step"] == by_kind["ticket"]["start_step"] == 20
    assert by_kind["random_prune"]["remaining"] == by_kind["ticket"]["remaining"]


def test_global_random_prune_keeps_the_overall_count_spread_at_random():
    rng = np.random.default_rng(0)
    params = {"a": {"kernel": rng.normal(size=(30, 40))}, "b": {"kernel": rng.normal(size=(40, 50))}}
    cfg = OmegaConf.structured(PruningConfig(strategy="global", rate=0.6))
    names = pruning.prunable(params)
    mask = criteria.prune(params, pruning.full_mask(params), cfg, names)
    random = pruning.random_mask(mask, names, "global", np.random.default_rng(1))
    ticket_counts, random_counts = pruning.counts(mask, names), pruning.counts(random, names)
    assert sum(c["remaining"] for c in random_counts.values()) == sum(c["remaining"] for c in ticket_counts.values())
    assert random_counts != ticket_counts  # spread over all layers, not per layer
    layerwise = pruning.random_mask(mask, names, "layerwise", np.random.default_rng(1))
    assert pruning.counts(layerwise, names) == ticket_counts


@pytest.mark.slow
def test_replicates_are_independent_trajectories(small_config):
    cfg = small_config("replicates=2", "levels=1")
    imp.run(cfg, console=QUIET)
    experiment = imp.prepare(cfg)
    starts = [load(experiment, r, 0, "ticket") for r in (0, 1)]
    assert tobytes(starts[0]["params"]) != tobytes(starts[1]["params"])  # own initialization
    masks = [load(experiment, r, 1, "ticket")["mask"] for r in (0, 1)]
    assert tobytes(masks[0]) != tobytes(masks[1])  # own masks
    keys = [experiment.keys(r) for r in (0, 1)]
    assert not np.array_equal(jax.random.key_data(keys[0]["data"]), jax.random.key_data(keys[1]["data"]))


def saved(experiment, directory):
    """A network's results as bytes and values: its metrics (without time, provenance and the size
    of the group it was trained in) and arrays."""
    metrics = json.load(open(os.path.join(directory, "metrics.json")))
    for key in ("wall_time_s", "provenance", "group_size"):
        metrics.pop(key)
    arrays = {what: tobytes(experiment.load(directory, what)) for what in ("ticket", "trained")}
    return metrics, arrays


@pytest.mark.slow
def test_a_networks_bits_do_not_depend_on_what_it_was_trained_beside(small_config, tmp_path):
    # Alone: one replicate, no controls; controls and a second replicate added by later runs.
    alone = small_config("levels=1", f"output_dir={tmp_path / 'alone'}")
    imp.run(alone, console=QUIET)
    imp.run(
        small_config("levels=1", "controls=[random_reinit,random_prune]", f"output_dir={tmp_path / 'alone'}"),
        console=QUIET,
    )
    imp.run(small_config("levels=1", "replicates=2", f"output_dir={tmp_path / 'alone'}"), console=QUIET)
    # Together: both replicates, both controls and LMC copies in the same groups from the start.
    together = small_config(
        "levels=1",
        "replicates=2",
        "controls=[random_reinit,random_prune]",
        "lmc.levels=[0,1]",
        f"output_dir={tmp_path / 'together'}",
    )
    imp.run(together, console=QUIET)
    a, b = imp.prepare(alone), imp.prepare(together)
    assert os.path.basename(a.directory) == os.path.basename(b.directory)  # one experiment
    compared = 0
    for replicate in (0, 1):
        for level in (0, 1):
            for kind in ("ticket", "random_reinit", "random_prune"):
                if level == 0 and kind != "ticket" or replicate == 1 and kind != "ticket":
                    continue
                relative = os.path.relpath(a.level_dir(replicate, level), a.directory)
                if kind != "ticket":
                    relative = os.path.join(relative, kind)
                assert saved(a, os.path.join(a.directory, relative)) == saved(b, os.path.join(b.directory, relative)), (
                    relative
                )
                compared += 1
    assert compared == 6


@pytest.mark.slow
@pytest.mark.parametrize("retrain", ["lr_rewind", "finetune"])
def test_lr_rewind_and_finetune_start_from_the_trained_weights(small_config, retrain):
    cfg = small_config(f"retrain={retrain}", "rewind=40it", "finetune_steps=2ep")
    results = imp.run(cfg, console=QUIET)
    experiment = imp.prepare(cfg)
    for level in (1, 2):
        ticket = load(experiment, 0, level, "ticket")
        trained = load(experiment, 0, level - 1, "trained")
        expected = jax.tree.map(lambda w, m: np.where(m, w, np.float32(0)), trained["params"], ticket["mask"])
        assert tobytes(ticket["params"]) == tobytes(expected)
        assert tobytes(ticket["batch_stats"]) == tobytes(trained["batch_stats"])
    start = {"lr_rewind": 40, "finetune": 100}[retrain]
    end = {"lr_rewind": 100, "finetune": 140}[retrain]  # finetune: 2 more epochs at the final rate
    for metrics in results[1:]:
        assert metrics["start_step"] == start and metrics["history"][-1]["step"] == end


@pytest.mark.slow
def test_adding_controls_later_keeps_the_finished_tickets(small_config):
    imp.run(small_config("levels=1"), console=QUIET)
    experiment = imp.prepare(small_config("levels=1"))
    metrics_file = os.path.join(experiment.level_dir(0, 1), "metrics.json")
    before = os.stat(metrics_file).st_mtime_ns
    results = imp.run(small_config("levels=1", "controls=[random_prune]"), console=QUIET)
    assert os.stat(metrics_file).st_mtime_ns == before
    assert [r["kind"] for r in results] == ["ticket", "ticket", "random_prune"]


@pytest.mark.slow
def test_lmc_barrier_is_zero_for_copies_with_the_same_data_order(small_config):
    experiment = imp.prepare(small_config())
    trainer = experiment.trainer
    theta_0 = experiment.initial_weights(experiment.keys(0)["init"])
    start = trainer.init_state(theta_0["params"], theta_0["batch_stats"], pruning.full_mask(theta_0["params"]))
    keys = member_keys(experiment, replicates=(0, 0))  # the same data order twice
    copies = trainer.train(stack([start, start]), *keys, 0, 60)[0]
    a, b = ({k: unstack(copies, i)[k] for k in ("params", "batch_stats")} for i in (0, 1))
    path = lmc.error_along_path(trainer, a, b, points=7)
    assert len(path["test_error"]) == 7 and path["alphas"][0] == 0.0 and path["alphas"][-1] == 1.0
    assert path["barrier"] == pytest.approx(0.0, abs=1e-9)
    _, accuracy_a = trainer.evaluate(stack([a]), "test")
    assert path["test_error"][0] == pytest.approx(1 - accuracy_a[0])


@pytest.mark.slow
def test_lmc_endpoints_are_the_copies_and_the_barrier_is_measured(small_config):
    cfg = small_config("lmc.levels=[0,2]", "lmc.points=5", "rewind=20it", "levels=2")
    results = imp.run(cfg, console=QUIET)
    experiment = imp.prepare(cfg)
    trainer = experiment.trainer
    for level in (0, 2):
        path = results[level]["lmc"]
        assert len(path["test_error"]) == 5 and path["start_step"] == 20
        assert path["barrier"] == pytest.approx(
            max(path["test_error"]) - (path["test_error"][0] + path["test_error"][-1]) / 2
        )
        assert os.path.isfile(os.path.join(experiment.level_dir(0, level), "lmc", "path.png"))
    assert "lmc" not in results[1]
    # Two copies from different data orders end in different places; the path's endpoints are
    # exactly those copies (α = 0 and 1), evaluated like any network.
    a = {"params": load(experiment, 0, 2, "trained")["params"], "batch_stats": {}}
    b = jax.tree.map(lambda x: x * np.float32(0.5), a)
    path = lmc.error_along_path(trainer, a, b, points=3)
    _, accuracy = trainer.evaluate(stack([a, b]), "test")
    assert path["test_error"][0] == pytest.approx(1 - accuracy[0]) and path["test_error"][-1] == pytest.approx(
        1 - accuracy[1]
    )


@pytest.mark.slow
def test_rewind_optimizer_reaches_every_network_that_starts_from_theta_k(small_config):
    # Momentum SGD: θk's optimizer state (the momentum trace) is not zero, so a fresh one differs.
    cfg = small_config(
        "optimizer=sgd",
        "optimizer.lr=0.05",
        "optimizer.momentum=0.9",
        "rewind=20it",
        "rewind_optimizer=true",
        "levels=1",
        "controls=[random_reinit,random_prune]",
        "lmc.levels=[0,1]",
        "lmc.points=3",
    )
    imp.run(cfg, console=QUIET)
    experiment = imp.prepare(cfg)
    theta_k = load(experiment, 0, 0, "rewind_point")
    assert any(np.any(leaf != 0) for leaf in jax.tree.leaves(theta_k["opt_state"]))

    def momentum(opt_state):  # the momentum trace inside optax.chain(add_decayed_weights, trace)
        (trace,) = [part.trace for part in opt_state if hasattr(part, "trace")]
        return trace

    def expected(mask):  # θk's trace, zero where pruned
        return jax.tree.leaves(
            jax.tree.map(lambda v, m: np.where(m, v, np.float32(0)), momentum(theta_k["opt_state"]), mask)
        )

    def trace(state):
        return [np.asarray(leaf) for leaf in jax.tree.leaves(momentum(state["opt_state"]))]

    ticket = levels.ticket_start(experiment, 0, 1)
    prune = levels.control_start(experiment, 0, 1, "random_prune", ticket)
    assert tobytes(prune["mask"]) != tobytes(ticket["mask"])
    for state in (ticket, prune, levels.lmc_start(experiment, 0, 1)):
        assert tobytes(trace(state)) == tobytes(expected(state["mask"]))
    assert tobytes(trace(levels.lmc_start(experiment, 0, 0))) == tobytes(
        jax.tree.leaves(momentum(theta_k["opt_state"]))
    )
    # Random reinitialization has no state at k of its own: it starts fresh (zero momentum).
    reinit = levels.control_start(experiment, 0, 1, "random_reinit", ticket)
    assert all(np.all(leaf == 0) for leaf in trace(reinit))


@pytest.mark.slow
def test_the_ablation_controls_keep_the_tickets_counts_and_change_only_what_they_ablate(small_config):
    cfg = small_config(
        "levels=1", "controls=[shuffle_layer,invert,sign_preserving_reinit]", "pruning=global", "rewind=20it"
    )
    imp.run(cfg, console=QUIET)
    experiment = imp.prepare(cfg)
    ticket = load(experiment, 0, 1, "ticket")
    theta_k = load(experiment, 0, 0, "rewind_point")
    counts = pruning.counts(ticket["mask"], experiment.prunable)
    start = {
        kind: load(experiment, 0, 1, "ticket", kind) for kind in ("shuffle_layer", "invert", "sign_preserving_reinit")
    }
    for kind, state in start.items():  # every ablation has the ticket's per-layer counts, even under global pruning
        assert pruning.counts(state["mask"], experiment.prunable) == counts, kind
    # invert: exactly the complement ranking -- in each layer, of the previous level's trained
    # magnitudes, the lowest (as many as the ticket kept there) survive; the ticket kept the highest overall.
    trained = pruning.flatten(load(experiment, 0, 0, "trained")["params"])
    for name in experiment.prunable:
        values = np.abs(trained[name]).ravel()
        kept = pruning.flatten(start["invert"]["mask"])[name].ravel()
        assert kept.sum() == counts[name]["remaining"] and values[kept].max() < values[~kept].min()
    values = np.concatenate([np.abs(trained[n]).ravel() for n in experiment.prunable])
    ticket_kept = np.concatenate([pruning.flatten(ticket["mask"])[n].ravel() for n in experiment.prunable])
    assert values[ticket_kept].min() > values[~ticket_kept].max()
    # shuffle_layer and invert start from θk under their masks, as the ticket does.
    for kind in ("shuffle_layer", "invert"):
        expected = jax.tree.map(lambda w, m: np.where(m, w, np.float32(0)), theta_k["params"], start[kind]["mask"])
        assert tobytes(start[kind]["params"]) == tobytes(expected)
        assert tobytes(start[kind]["mask"]) != tobytes(ticket["mask"])
    # sign-preserving reinit: the ticket's mask and signs, other magnitudes.
    signed = start["sign_preserving_reinit"]
    assert tobytes(signed["mask"]) == tobytes(ticket["mask"])
    for name in experiment.prunable:
        s, t = pruning.flatten(signed["params"])[name], pruning.flatten(ticket["params"])[name]
        m = pruning.flatten(ticket["mask"])[name]
        assert np.array_equal(np.sign(s[m]), np.sign(t[m])) and not np.allclose(np.abs(s[m]), np.abs(t[m]))
