"""Pruning criteria behind one registry (lottery/criteria.py): scores in, exact masks out."""

import os

import numpy as np
import pytest
from omegaconf import OmegaConf

from lottery.pruning import criteria
from lottery.pruning import masks as pruning
from lottery.errors import LotteryError


def setup(seed=0):
    rng = np.random.default_rng(seed)
    params = {
        "hidden": {"0": {"kernel": rng.normal(size=(20, 10)), "bias": np.zeros(10)}},
        "output": {"kernel": rng.normal(size=(10, 4)), "bias": np.zeros(4)},
    }
    return params, pruning.full_mask(params), ["hidden/0/kernel", "output/kernel"]


def cfg(strategy="layerwise", rate=0.5):
    return OmegaConf.create({"strategy": strategy, "rate": rate, "conv_rate": None, "output_rate": None, "ignore": []})


def test_imp_is_magnitude_scores_through_the_registry():
    params, mask, names = setup()
    for strategy in ("layerwise", "global"):
        by_magnitude = criteria.prune(params, mask, cfg(strategy), names)
        # An independent ranking: the k largest |w| of each group survive (no ties in normal draws).
        groups = [[n] for n in names] if strategy == "layerwise" else [names]
        flat = pruning.flatten(params)
        for group in groups:
            values = np.concatenate([np.abs(flat[n]).ravel() for n in group])
            kept = np.concatenate([pruning.flatten(by_magnitude)[n].ravel() for n in group])
            rate = 0.25 if group == ["output/kernel"] else 0.5  # the output layer at half the rate
            keep = values.size - pruning.number_to_prune(rate, values.size)
            assert kept.sum() == keep and values[kept].min() > values[~kept].max()


def test_random_scores_give_exact_nested_counts_and_an_unknown_criterion_is_named():
    params, mask, names = setup()
    rng = np.random.default_rng(1)
    masks = [mask]
    for _ in range(3):
        scores = criteria.score("random", criteria.Context(params, masks[-1], names, rng))
        masks.append(pruning.prune_by_scores(scores, masks[-1], cfg(), names))
    for before, after in zip(masks, masks[1:]):
        b, a = pruning.flatten(before), pruning.flatten(after)
        for name in names:
            assert not (a[name] & ~b[name]).any()  # nested
            rate = 0.25 if name == "output/kernel" else 0.5
            assert a[name].sum() == b[name].sum() - pruning.number_to_prune(rate, int(b[name].sum()))
    with pytest.raises(
        LotteryError,
        match="pruning criterion .snap. is not one; choose one of: grasp, magnitude, random, snip, synflow",
    ):
        criteria.score("snap", criteria.Context(params, mask, names))


def test_already_pruned_weights_rank_below_any_score_even_negative_ones():
    params, mask, names = setup()
    flat = pruning.flatten(mask)
    flat["hidden/0/kernel"] = np.arange(200).reshape(20, 10) % 2 == 0  # half already pruned
    mask = pruning.unflatten(mask, flat)
    scores = {n: -np.ones(np.shape(pruning.flatten(params)[n])) for n in names}  # all equal, negative
    new = pruning.flatten(pruning.prune_by_scores(scores, mask, cfg(rate=0.2), names))
    assert not (new["hidden/0/kernel"] & ~flat["hidden/0/kernel"]).any() and new["hidden/0/kernel"].sum() == 80


@pytest.mark.slow
def test_pruning_at_start_reaches_each_levels_imp_counts_from_theta_0_in_one_run(small_config):
    import io

    from rich.console import Console

    from lottery import imp

    cfg = small_config("levels=2", "pruning.prune_at=start", "controls=[invert]")
    out = io.StringIO()
    results = imp.run(cfg, console=Console(file=out, width=200))
    assert "pruning before training (magnitude) results: " in out.getvalue() and "IMP" not in out.getvalue()
    experiment = imp.prepare(cfg)
    theta_0 = pruning.flatten(experiment.load(experiment.level_dir(0, 0), "ticket")["params"])
    full = pruning.full_mask(experiment.trainer.init_params)
    for level in (1, 2):
        ticket = experiment.load(experiment.level_dir(0, level), "ticket")
        mask = pruning.flatten(ticket["mask"])
        expected = pruning.level_counts(full, cfg.pruning, experiment.prunable, level)  # IMP's counts at this level
        assert [int(mask[n].sum()) for n in experiment.prunable] == expected
        for name in experiment.prunable:  # magnitude at initialization: the largest |θ0| of each layer, one shot
            values = np.abs(theta_0[name]).ravel()
            assert values[mask[name].ravel()].min() > values[~mask[name].ravel()].max()
        inverted = pruning.flatten(
            experiment.load(os.path.join(experiment.level_dir(0, level), "invert"), "ticket")["mask"]
        )
        for name in experiment.prunable:  # the control: the smallest |θ0|, the same counts
            values = np.abs(theta_0[name]).ravel()
            assert inverted[name].sum() == mask[name].sum()
            assert values[inverted[name].ravel()].max() < values[~inverted[name].ravel()].min()
    assert [r["start_step"] for r in results if r["kind"] == "ticket"] == [0, 0, 0]  # each level trained once from θ0
    # Magnitude does not depend on the mask: three rounds give the one-shot masks.
    rounds = small_config("levels=2", "pruning.prune_at=start", "pruning.rounds=3")
    experiment3 = imp.prepare(rounds)
    experiment3.directory = experiment.directory  # the same θ0 (its own level 0 would link the same dense run)
    for level in (1, 2):
        one, three = (pruning.flatten(e.method.mask(0, level)) for e in (experiment, experiment3))
        assert all(np.array_equal(one[n], three[n]) for n in experiment.prunable)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["pruning.criterion=snap"], "pruning.criterion='snap' is not a criterion; choose one of: "),
        (["pruning.prune_at=init"], "pruning.prune_at='init' is not an option; choose one of: trained, start"),
        (
            ["pruning.prune_at=start", "retrain=finetune"],
            "retrain=finetune: pruning before training (pruning.prune_at=start) "
            "makes this experiment's tickets and does not use it; leave retrain at rewind",
        ),
        (["pruning.rounds=3"], "pruning.rounds=3 applies to pruning before training"),
    ],
)
def test_criterion_keys_are_checked_before_anything_runs(overrides, message):
    from conftest import compose_config
    from lottery import imp

    with pytest.raises(LotteryError, match=message.replace("(", r"\(").replace(")", r"\)")):
        imp.check(compose_config(overrides))
