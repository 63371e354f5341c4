"""Pruning: masks shaped like the parameters, with exact counts, from one score per weight.

A mask is a pytree of booleans with the structure of the parameter dict (``True`` = kept). Every
parameter has one; only prunable ones (conv and dense ``kernel``s not matched by an ignore pattern)
are ever set to ``False``. Pruning runs on the host once per level, in NumPy.

Counts are exact: a group of weights (one tensor for ``layerwise``, all prunable tensors together for
``global``) with R remaining weights loses ``round(rate * R)`` of them, halves rounding up, computed
in exact rational arithmetic with the rate as the decimal the user wrote (0.35, not the binary
float just below it, whose product with 90 would round to 31 instead of 32). Weights are ranked
by a criterion's scores (lottery/criteria.py; magnitude for IMP); ties go by position (the earlier
weight is pruned first), and weights already pruned rank below every surviving one, so masks are
nested from level to level.
"""

import math
import re
from fractions import Fraction
from typing import Dict, List

import jax
import numpy as np

from lottery.errors import LotteryError

STRATEGIES = ("layerwise", "global")


def path_names(tree) -> List[str]:
    """'/'-joined key paths of a nested dict's leaves, in leaf order (``hidden/0/kernel``)."""
    paths, _ = jax.tree_util.tree_flatten_with_path(tree)
    return ["/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path) for path, _ in paths]


def flatten(tree) -> Dict[str, object]:
    return dict(zip(path_names(tree), jax.tree.leaves(tree)))


def unflatten(like, flat: Dict[str, object]):
    return jax.tree.unflatten(jax.tree.structure(like), [flat[name] for name in path_names(like)])


def prunable(params, ignore=()) -> List[str]:
    """Paths of the prunable tensors: conv and dense kernels, minus those an ignore pattern matches."""
    kernels = [name for name in path_names(params) if name.split("/")[-1] == "kernel"]
    for pattern in ignore:
        if not any(re.fullmatch(pattern, name) for name in kernels):
            raise LotteryError(
                f"pruning.ignore pattern {pattern!r} matches no prunable parameter; "
                f"prunable parameters are: {', '.join(kernels)}"
            )
    return [name for name in kernels if not any(re.fullmatch(p, name) for p in ignore)]


def full_mask(params):
    return jax.tree.map(lambda p: np.ones(np.shape(p), dtype=bool), params)


def layer_kind(name: str, kernel) -> str:
    if name.split("/")[0] == "output":
        return "output"
    return "conv" if np.ndim(kernel) == 4 else "fc"


def decimal(rate) -> Fraction:
    """A rate as the exact decimal it was written as: a float's shortest round-tripping repr
    (``0.35`` for the float nearest 0.35), so counts follow the rule for the number the user typed."""
    return rate if isinstance(rate, Fraction) else Fraction(repr(float(rate)))


def layerwise_rates(cfg) -> Dict[str, Fraction]:
    """Per-kind rates of the layerwise strategy: output defaults to half the fc rate (F&C 2019)."""
    return {
        "fc": decimal(cfg.rate),
        "conv": decimal(cfg.rate if cfg.conv_rate is None else cfg.conv_rate),
        "output": decimal(cfg.rate) / 2 if cfg.output_rate is None else decimal(cfg.output_rate),
    }


def check(cfg) -> None:
    if cfg.strategy not in STRATEGIES:
        raise LotteryError(f"pruning.strategy={cfg.strategy!r} is not a strategy; choose one of: {', '.join(STRATEGIES)}")
    for key in ("rate", "conv_rate", "output_rate"):
        value = getattr(cfg, key)
        if value is not None and not 0 < value < 1:
            raise LotteryError(f"pruning.{key}={value} must be in (0, 1): the fraction of remaining weights pruned per level")
    for pattern in cfg.ignore:
        try:
            re.compile(pattern)
        except re.error as error:
            raise LotteryError(f"pruning.ignore pattern {pattern!r} is not a regular expression ({error}); "
                               "write e.g. output/kernel or conv_.*/kernel") from None


def number_to_prune(rate, remaining: int) -> int:
    """round(rate x remaining), halves up, exactly (see the module docstring)."""
    return math.floor(decimal(rate) * remaining + Fraction(1, 2))


def _prune_group(scores: List[np.ndarray], masks: List[np.ndarray], rate: float) -> List[np.ndarray]:
    """New masks for tensors that share one ranking: the lowest-scored surviving weights go."""
    ranked = np.concatenate([np.where(m, s, -np.inf).ravel() for s, m in zip(scores, masks)])
    remaining = int(sum(m.sum() for m in masks))
    keep = remaining - number_to_prune(rate, remaining)
    order = np.argsort(ranked, kind="stable")  # ascending; equal scores keep their position order
    kept = np.zeros(ranked.size, dtype=bool)
    kept[order[ranked.size - keep :]] = True
    pieces = np.split(kept, np.cumsum([m.size for m in masks])[:-1])
    return [piece.reshape(m.shape) for piece, m in zip(pieces, masks)]


def prune(params, mask, cfg, names: List[str]):
    """The next level's mask by magnitude (IMP): prune ``params`` (trained weights) under ``mask``."""
    from lottery import criteria

    return prune_by_scores(criteria.score("magnitude", criteria.Context(params, mask, names)), mask, cfg, names)


def prune_by_scores(scores: Dict[str, np.ndarray], mask, cfg, names: List[str]):
    """The next level's mask: of each group's surviving weights (one tensor for ``layerwise``, all
    of ``names`` for ``global``), the lowest-scored go, by the counting rule above; ties by position."""
    new_mask = {k: np.asarray(v) for k, v in flatten(mask).items()}
    shapes = {n: new_mask[n].shape for n in names}
    for name in names:
        if np.shape(scores[name]) != shapes[name]:
            raise ValueError(f"scores of {name} have shape {np.shape(scores[name])}, not {shapes[name]}")
    if cfg.strategy == "global":
        pruned = _prune_group([np.asarray(scores[n]) for n in names], [new_mask[n] for n in names], cfg.rate)
        new_mask.update(zip(names, pruned))
    else:
        rates = layerwise_rates(cfg)
        for name in names:
            rate = rates[layer_kind(name, new_mask[name])]
            new_mask[name] = _prune_group([np.asarray(scores[name])], [new_mask[name]], rate)[0]
    return unflatten(mask, new_mask)


def groups(cfg, names: List[str]) -> List[List[str]]:
    """The tensors that share one ranking: each alone (layerwise), or all together (global)."""
    return [[name] for name in names] if cfg.strategy == "layerwise" else [list(names)]


def level_counts(mask, cfg, names: List[str], levels: int) -> List[int]:
    """The weights each group (``groups``) keeps after ``levels`` more IMP levels from ``mask``: the
    counting rule applied level by level to the counts alone (what pruning straight to a level's
    density must keep, to match IMP's counts exactly)."""
    flat, rates = flatten(mask), layerwise_rates(cfg)
    out = []
    for group in groups(cfg, names):
        remaining = int(sum(np.sum(flat[name]) for name in group))
        rate = cfg.rate if cfg.strategy == "global" else rates[layer_kind(group[0], flat[group[0]])]
        for _ in range(levels):
            remaining -= number_to_prune(rate, remaining)
        out.append(remaining)
    return out


def keep_top(scores: Dict[str, np.ndarray], mask, cfg, names: List[str], keep: List[int]):
    """``mask`` with exactly ``keep[i]`` weights of group i (``groups``) kept: its highest-scored
    survivors, ties by position (the earlier weight goes first)."""
    new_mask = {k: np.asarray(v) for k, v in flatten(mask).items()}
    for group, count in zip(groups(cfg, names), keep):
        masks = [new_mask[n] for n in group]
        ranked = np.concatenate([np.where(m, np.asarray(scores[n]), -np.inf).ravel() for n, m in zip(group, masks)])
        if count > int(sum(m.sum() for m in masks)):
            raise ValueError(f"cannot keep {count} weights of {group}: only {sum(m.sum() for m in masks)} remain")
        kept = np.zeros(ranked.size, dtype=bool)
        kept[np.argsort(ranked, kind="stable")[ranked.size - count:]] = True
        for name, piece, m in zip(group, np.split(kept, np.cumsum([m.size for m in masks])[:-1]), masks):
            new_mask[name] = piece.reshape(m.shape)
    return unflatten(mask, new_mask)


def counts(mask, names: List[str]) -> Dict[str, Dict[str, int]]:
    """Remaining and total weights of each prunable tensor."""
    flat = flatten(mask)
    return {name: {"remaining": int(np.sum(flat[name])), "total": int(np.size(flat[name]))} for name in names}


def density(layer_counts) -> float:
    return sum(c["remaining"] for c in layer_counts.values()) / sum(c["total"] for c in layer_counts.values())


def random_mask(mask, names: List[str], strategy: str, rng: np.random.Generator):
    """The random-pruning control of ``mask``: kept positions drawn uniformly at random, with
    exactly ``mask``'s count in each tensor (layerwise) or overall (global, spread at random)."""
    flat = {k: np.asarray(v) for k, v in flatten(mask).items()}
    groups = [[name] for name in names] if strategy == "layerwise" else [names]
    for group in groups:
        sizes = [flat[name].size for name in group]
        keep = int(sum(flat[name].sum() for name in group))
        kept = np.zeros(sum(sizes), dtype=bool)
        kept[rng.permutation(kept.size)[:keep]] = True
        for name, piece in zip(group, np.split(kept, np.cumsum(sizes)[:-1])):
            flat[name] = piece.reshape(flat[name].shape)
    return unflatten(mask, flat)
