"""Pruning criteria behind one registry (lottery/criteria.py): scores in, exact masks out."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from lottery import criteria, pruning
from lottery.errors import LotteryError


def setup(seed=0):
    rng = np.random.default_rng(seed)
    params = {"hidden": {"0": {"kernel": rng.normal(size=(20, 10)), "bias": np.zeros(10)}},
              "output": {"kernel": rng.normal(size=(10, 4)), "bias": np.zeros(4)}}
    return params, pruning.full_mask(params), ["hidden/0/kernel", "output/kernel"]


def cfg(strategy="layerwise", rate=0.5):
    return OmegaConf.create({"strategy": strategy, "rate": rate, "conv_rate": None, "output_rate": None, "ignore": []})


def test_imp_is_magnitude_scores_through_the_registry():
    params, mask, names = setup()
    for strategy in ("layerwise", "global"):
        by_magnitude = pruning.prune(params, mask, cfg(strategy), names)
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
    with pytest.raises(LotteryError, match="pruning criterion .snap. is not one; choose one of: grasp, magnitude, random, snip, synflow"):
        criteria.score("snap", criteria.Context(params, mask, names))


def test_already_pruned_weights_rank_below_any_score_even_negative_ones():
    params, mask, names = setup()
    flat = pruning.flatten(mask)
    flat["hidden/0/kernel"] = np.arange(200).reshape(20, 10) % 2 == 0  # half already pruned
    mask = pruning.unflatten(mask, flat)
    scores = {n: -np.ones(np.shape(pruning.flatten(params)[n])) for n in names}  # all equal, negative
    new = pruning.flatten(pruning.prune_by_scores(scores, mask, cfg(rate=0.2), names))
    assert not (new["hidden/0/kernel"] & ~flat["hidden/0/kernel"]).any() and new["hidden/0/kernel"].sum() == 80
