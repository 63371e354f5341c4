"""Exact counts, nestedness, magnitude order and tie-breaking of both pruning strategies."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from lottery.pruning import masks as pruning
from lottery.config import PruningConfig
from lottery.errors import LotteryError
from lottery.pruning import criteria

LENET_SHAPES = {"hidden/0/kernel": (784, 300), "hidden/1/kernel": (300, 100), "output/kernel": (100, 10)}


def lenet_like(seed):
    rng = np.random.default_rng(seed)
    params = {"hidden": {0: {}, 1: {}}, "output": {}}
    params["hidden"][0] = {"kernel": rng.normal(size=(784, 300)).astype(np.float32), "bias": np.zeros(300, np.float32)}
    params["hidden"][1] = {"kernel": rng.normal(size=(300, 100)).astype(np.float32), "bias": np.zeros(100, np.float32)}
    params["output"] = {"kernel": rng.normal(size=(100, 10)).astype(np.float32), "bias": np.zeros(10, np.float32)}
    return params


def pruning_config(**kwargs):
    return OmegaConf.structured(PruningConfig(**kwargs))


def round_half_up(percent: int, remaining: int) -> int:
    """round(percent/100 x remaining), halves up, in integers: (2 p R + 100) // 200."""
    return (2 * percent * remaining + 100) // 200


def iterate_rounding(total, percent, levels):
    """Remaining weights after each level: r <- r - round_half_up(rate * r), computed independently
    in integer arithmetic (``percent``: the rate in hundredths, possibly fractional as a/b)."""
    remaining = [total]
    for _ in range(levels):
        r = remaining[-1]
        remaining.append(r - round_half_up(percent, r))
    return remaining


def test_halves_round_up_for_every_rate_a_user_can_type():
    # Rates whose binary float lies just below the decimal (0.35 -> 0.34999...) used to round an
    # exact half down: number_to_prune(0.35, 90) was 31.
    assert pruning.number_to_prune(0.35, 90) == 32
    for percent in range(1, 100):
        rate = float(f"0.{percent:02d}")
        for remaining in range(0, 401):
            assert pruning.number_to_prune(rate, remaining) == round_half_up(percent, remaining), (rate, remaining)


def test_the_output_layers_default_half_rate_is_exact():
    # python -m lottery.run levels=2 pruning.rate=0.7: the output layer (100 x 10) loses 35% a level,
    # 1000 -> 650 -> 650 - round(227.5) = 422 (the float 0.7 / 2 gave 227 and kept 423).
    params = lenet_like(0)
    names = pruning.prunable(params)
    mask = pruning.full_mask(params)
    kept = []
    for level in (1, 2):
        mask = criteria.prune(lenet_like(level), mask, pruning_config(rate=0.7), names)
        kept.append(pruning.counts(mask, names)["output/kernel"]["remaining"])
    assert kept == [650, 422]


def test_layerwise_counts_follow_the_closed_form_and_masks_nest():
    cfg = pruning_config(strategy="layerwise", rate=0.2)  # output at half: 0.1 (F&C 2019)
    params = lenet_like(0)
    names = pruning.prunable(params)
    assert names == list(LENET_SHAPES)
    mask = pruning.full_mask(params)
    levels = 20
    expected = {
        name: iterate_rounding(int(np.prod(shape)), 10 if name.startswith("output") else 20, levels)
        for name, shape in LENET_SHAPES.items()
    }
    for level in range(1, levels + 1):
        # Fresh weights every level, as after retraining: nesting must come from the mask alone.
        new_mask = criteria.prune(lenet_like(level), mask, cfg, names)
        counts = pruning.counts(new_mask, names)
        for name in names:
            assert counts[name]["remaining"] == expected[name][level], (level, name)
        old, new = pruning.flatten(mask), pruning.flatten(new_mask)
        for name in old:
            assert not np.any(new[name] & ~old[name]), f"mask of {name} grew at level {level}"
        assert np.all(new["hidden/0/bias"]) and np.all(new["output/bias"])  # biases never pruned
        mask = new_mask
        total = sum(c["remaining"] for c in counts.values())
        closed_form = 265_200 * 0.8**level + 1_000 * 0.9**level
        assert abs(total - closed_form) <= level  # rounding per level moves it by at most 1 a level
    assert total == sum(expected[name][levels] for name in names)


def test_global_counts_are_exact_and_one_threshold_is_used():
    cfg = pruning_config(strategy="global", rate=0.2)
    params = lenet_like(1)
    names = pruning.prunable(params)
    mask = pruning.full_mask(params)
    expected = iterate_rounding(266_200, 20, 8)
    for level in range(1, 9):
        mask = criteria.prune(params, mask, cfg, names)
        flat_mask, flat_params = pruning.flatten(mask), pruning.flatten(params)
        assert sum(c["remaining"] for c in pruning.counts(mask, names).values()) == expected[level]
        kept = np.concatenate([np.abs(flat_params[n])[flat_mask[n]] for n in names])
        gone = np.concatenate([np.abs(flat_params[n])[~flat_mask[n]] for n in names])
        assert kept.min() >= gone.max()  # one magnitude threshold over all layers


def test_layerwise_prunes_the_smallest_magnitudes_of_each_layer():
    params = lenet_like(2)
    names = pruning.prunable(params)
    mask = criteria.prune(params, pruning.full_mask(params), pruning_config(rate=0.5), names)
    for name in names:
        w, m = np.abs(pruning.flatten(params)[name]), pruning.flatten(mask)[name]
        assert w[m].min() >= w[~m].max()


def test_ties_break_by_position_deterministically():
    # Large enough that an unstable sort (NumPy's quicksort is insertion sort below 16) would show.
    params = {"output": {"kernel": np.ones((40, 50), np.float32)}, "fc": {"kernel": np.ones((40, 50), np.float32)}}
    names = pruning.prunable(params)
    cfg = pruning_config(rate=0.2, output_rate=0.3)
    mask = criteria.prune(params, pruning.full_mask(params), cfg, names)
    # 20% of 2,000 equal weights: the first 400 by position go; 30% of the output layer: the first 600.
    assert pruning.flatten(mask)["fc/kernel"].ravel().tolist() == [False] * 400 + [True] * 1600
    assert pruning.flatten(mask)["output/kernel"].ravel().tolist() == [False] * 600 + [True] * 1400
    again = criteria.prune(params, pruning.full_mask(params), cfg, names)
    assert all(np.array_equal(a, b) for a, b in zip(pruning.flatten(mask).values(), pruning.flatten(again).values()))


def test_many_ties_among_few_values_go_by_magnitude_then_position():
    w = np.random.default_rng(6).integers(-3, 4, size=(50, 40)).astype(np.float32)  # 7 values, many ties
    params = {"fc": {"kernel": w}}
    mask = criteria.prune(params, pruning.full_mask(params), pruning_config(rate=0.37), ["fc/kernel"])
    flat = np.abs(w).ravel()
    pruned = set(sorted(range(flat.size), key=lambda i: (flat[i], i))[: round(0.37 * flat.size)])
    assert set(np.flatnonzero(~mask["fc"]["kernel"].ravel())) == pruned


def test_zero_valued_surviving_weights_outrank_pruned_ones():
    # Pruned weights rank below every survivor, even one that is exactly 0: the 2 removed (half of
    # the 4 survivors) are the surviving 0.0 and 3.0, and the pruned weight stays pruned.
    params = {"fc": {"kernel": np.array([[0.0, 0.0, 5.0, 4.0, 3.0]], np.float32)}}
    mask = {"fc": {"kernel": np.array([[False, True, True, True, True]])}}
    new = criteria.prune(params, mask, pruning_config(rate=0.5), ["fc/kernel"])
    assert new["fc"]["kernel"].tolist() == [[False, False, True, True, False]]


def test_conv_rate_applies_to_4d_kernels():
    rng = np.random.default_rng(3)
    params = {
        "conv": {"kernel": rng.normal(size=(3, 3, 4, 10)).astype(np.float32)},
        "fc": {"kernel": rng.normal(size=(10, 10)).astype(np.float32)},
        "output": {"kernel": rng.normal(size=(10, 10)).astype(np.float32)},
    }
    names = pruning.prunable(params)
    cfg = pruning_config(rate=0.2, conv_rate=0.1, output_rate=0.5)
    counts = pruning.counts(criteria.prune(params, pruning.full_mask(params), cfg, names), names)
    assert counts["conv/kernel"]["remaining"] == 360 - 36
    assert counts["fc/kernel"]["remaining"] == 80
    assert counts["output/kernel"]["remaining"] == 50


def test_ignored_parameters_are_never_pruned():
    params = lenet_like(4)
    names = pruning.prunable(params, ignore=["output/kernel"])
    assert names == ["hidden/0/kernel", "hidden/1/kernel"]
    mask = criteria.prune(params, pruning.full_mask(params), pruning_config(strategy="global", rate=0.5), names)
    assert np.all(pruning.flatten(mask)["output/kernel"])
    assert sum(c["remaining"] for c in pruning.counts(mask, names).values()) == 265_200 // 2


def test_ignore_pattern_matching_nothing_is_an_error():
    with pytest.raises(LotteryError, match=r"pruning\.ignore pattern 'head/kernel' matches no prunable parameter"):
        pruning.prunable(lenet_like(5), ignore=["head/kernel"])


@pytest.mark.parametrize(
    "key, value", [("rate", 0.0), ("rate", 1.0), ("rate", 1.5), ("conv_rate", -0.1), ("output_rate", 1.0)]
)
def test_rates_outside_the_open_unit_interval_are_rejected(key, value):
    with pytest.raises(LotteryError, match=rf"^pruning\.{key}={value} must be in \(0, 1\)"):
        pruning.check(pruning_config(**{key: value}))


def test_unknown_strategy_lists_the_choices():
    with pytest.raises(LotteryError, match="choose one of: layerwise, global"):
        pruning.check(pruning_config(strategy="random"))
