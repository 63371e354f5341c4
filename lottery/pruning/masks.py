"""Masks shaped like the parameters, with exact counts, from one score per weight.

A mask is a pytree of booleans with the structure of the parameter dict (``True`` = kept). Every
parameter has one; only prunable ones (conv and dense ``kernel``s not matched by an ignore pattern)
are ever set to ``False``. Pruning runs on the host once per level, in NumPy.

Counts are exact: a group of weights (one tensor for ``layerwise``, all prunable tensors together for
``global``) with R remaining weights loses ``round(rate * R)`` of them, halves rounding up, computed
in exact rational arithmetic with the rate as the decimal the user wrote (0.35, not the binary
float just below it, whose product with 90 would round to 31 instead of 32). Weights are ranked
by a criterion's scores (criteria.py; magnitude for IMP); ties go by position (the earlier
weight is pruned first), and weights already pruned rank below every surviving one, so masks are
nested from level to level. Pruning before training goes straight to a count instead of a rate
(``prune_to_counts``; ``keep_at_density`` by the same rule), in one shot or over the rounds of an
exponential schedule whose counts are rounded exactly too (``exponential_counts``).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Dict, List

import numpy as np

from lottery import lazy
from lottery.errors import LotteryError

jax = lazy.module("jax")
jnp = lazy.module("jax.numpy")

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


def _masked(tree, mask):
    return jax.tree.map(lambda v, m: jnp.where(m, v, jnp.zeros_like(v)), tree, mask)


# ``tree`` with the entries ``mask`` prunes set to exactly 0 (on the host: one compiled program for
# the whole tree; inside a compiled program, inlined there).
apply_mask = lazy.jit(_masked)


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
        raise LotteryError(
            f"pruning.strategy={cfg.strategy!r} is not a strategy; choose one of: {', '.join(STRATEGIES)}"
        )
    for key in ("rate", "conv_rate", "output_rate"):
        value = getattr(cfg, key)
        if value is not None and not 0 < value < 1:
            raise LotteryError(
                f"pruning.{key}={value} must be in (0, 1): the fraction of remaining weights pruned per level"
            )
    for pattern in cfg.ignore:
        try:
            re.compile(pattern)
        except re.error as error:
            raise LotteryError(
                f"pruning.ignore pattern {pattern!r} is not a regular expression ({error}); "
                "write e.g. output/kernel or conv_.*/kernel"
            ) from None


def number_to_prune(rate, remaining: int) -> int:
    """round(rate x remaining), halves up, exactly (see the module docstring)."""
    return math.floor(decimal(rate) * remaining + Fraction(1, 2))


def _keep_group(scores: List[np.ndarray], masks: List[np.ndarray], keep: int) -> List[np.ndarray]:
    """New masks for tensors that share one ranking: the ``keep`` highest-scored surviving weights."""
    alive = np.flatnonzero(np.concatenate([m.ravel() for m in masks]))  # already-pruned weights never return
    values = np.concatenate([np.asarray(s).ravel() for s in scores])[alive]
    kept = np.zeros(sum(m.size for m in masks), dtype=bool)
    kept[alive[_highest(values, keep)]] = True
    pieces = np.split(kept, np.cumsum([m.size for m in masks])[:-1])
    return [piece.reshape(m.shape) for piece, m in zip(pieces, masks)]


def _highest(values: np.ndarray, keep: int) -> np.ndarray:
    """Indices of the ``keep`` highest values, equal values kept from the last position back (the
    earlier weight is pruned first): the last ``keep`` of a stable ascending sort, NaN ranked
    highest as numpy sorts it, found by one partition instead of a sort (SynFlow's 100 rounds on
    VGG-16's 15M weights)."""
    if keep <= 0:
        return np.zeros(0, dtype=np.int64)
    if keep >= values.size:
        return np.arange(values.size)
    threshold = np.partition(values, values.size - keep)[values.size - keep]  # the lowest kept value
    nan = np.isnan(values)
    above = np.zeros_like(nan) if np.isnan(threshold) else (values > threshold) | nan
    tied = np.flatnonzero(nan if np.isnan(threshold) else values == threshold)
    chosen = above.copy()
    chosen[tied[tied.size - (keep - int(above.sum())) :]] = True
    return np.flatnonzero(chosen)


def prune_by_scores(scores: Dict[str, np.ndarray], mask, cfg, names: List[str]):
    """The next level's mask: of each group's surviving weights (one tensor for ``layerwise``, all
    of ``names`` for ``global``), the lowest-scored go, by the counting rule above; ties by position."""
    return prune_to_counts(scores, mask, groups(names, cfg.strategy), level_counts(mask, cfg, names, 1))


def groups(names: List[str], strategy: str) -> List[List[str]]:
    """The tensors that share one ranking: each alone (``layerwise``) or all together (``global``)."""
    if strategy not in STRATEGIES:
        raise LotteryError(f"pruning.strategy={strategy!r} is not a strategy; choose one of: {', '.join(STRATEGIES)}")
    return [[name] for name in names] if strategy == "layerwise" else [list(names)]


def keep_at_density(mask, groups: List[List[str]], density) -> List[int]:
    """How many weights each group keeps at ``density`` of its size: size - round((1 - density) x size),
    by the counting rule above (the pruned count rounds, halves up, in exact decimal arithmetic)."""
    if not 0 < density <= 1:
        raise LotteryError(f"density {density} must be in (0, 1]: the fraction of each group's weights kept")
    flat = flatten(mask)
    sizes = [sum(int(np.size(flat[name])) for name in group) for group in groups]
    return [size - number_to_prune(1 - decimal(density), size) for size in sizes]


def exponential_counts(remaining: int, keep: int, rounds: int) -> List[int]:
    """The counts of an exponential schedule from ``remaining`` weights down to ``keep`` in ``rounds``
    rounds (SynFlow, Tanaka et al. 2020, Algorithm 1: density ρ^(-r/n) at round r): round r = 1..n
    keeps x = remaining x (keep / remaining)^(r/n) rounded to the nearest integer, decided exactly in
    integers (k = floor(x + 1/2) iff (2k - 1)^n <= 2^n remaining^(n-r) keep^r < (2k + 1)^n; x is never
    a half, since x^n is an integer), so no platform's pow() can move a count, and round n keeps
    exactly ``keep``."""
    if rounds < 1 or not 0 <= keep <= remaining:
        raise ValueError(
            f"an exponential schedule needs rounds >= 1 and 0 <= keep <= remaining, "
            f"not rounds={rounds}, keep={keep}, remaining={remaining}"
        )
    counts = []
    for r in range(1, rounds + 1):
        if keep == 0:
            counts.append(0)
            continue
        target = 2**rounds * remaining ** (rounds - r) * keep**r  # (2x)^n, an integer
        k = round(remaining * (keep / remaining) ** (r / rounds))  # a float guess, corrected below
        while (2 * k + 1) ** rounds <= target:
            k += 1
        while k > 1 and (2 * k - 1) ** rounds > target:  # x >= 1 here, so k >= 1
            k -= 1
        counts.append(k)
    return counts


def prune_to_counts(scores: Dict[str, np.ndarray], mask, groups: List[List[str]], keep: List[int]):
    """The mask that keeps, of each group's surviving weights, its ``keep`` highest-scored ones
    (ties by position; already-pruned weights stay pruned, so the mask nests in ``mask``)."""
    new_mask = {k: np.asarray(v) for k, v in flatten(mask).items()}
    for group, count in zip(groups, keep):
        remaining = int(sum(new_mask[name].sum() for name in group))
        if not 0 <= count <= remaining:
            raise ValueError(f"cannot keep {count} weights of {', '.join(group)}: {remaining} remain")
        for name in group:
            if np.shape(scores[name]) != new_mask[name].shape:
                raise ValueError(f"scores of {name} have shape {np.shape(scores[name])}, not {new_mask[name].shape}")
        pruned = _keep_group([np.asarray(scores[n]) for n in group], [new_mask[n] for n in group], count)
        new_mask.update(zip(group, pruned))
    return unflatten(mask, new_mask)


def level_counts(mask, cfg, names: List[str], levels: int) -> List[int]:
    """The weights each group (``groups``) keeps after ``levels`` more IMP levels from ``mask``: the
    counting rule applied level by level to the counts alone (what pruning straight to a level's
    density must keep, to match IMP's counts exactly)."""
    flat, rates = flatten(mask), layerwise_rates(cfg)
    out = []
    for group in groups(names, cfg.strategy):
        remaining = int(sum(np.sum(flat[name]) for name in group))
        rate = cfg.rate if cfg.strategy == "global" else rates[layer_kind(group[0], flat[group[0]])]
        for _ in range(levels):
            remaining -= number_to_prune(rate, remaining)
        out.append(remaining)
    return out


def level_densities(mask, cfg, names: List[str], levels: int) -> List[float]:
    """The density of ``names`` at each of levels 0..``levels`` of IMP from ``mask`` (``level_counts``):
    what an experiment's levels reach, known before any of them trains."""
    flat = flatten(mask)
    total = sum(int(np.size(flat[name])) for name in names)
    return [sum(level_counts(mask, cfg, names, level)) / total for level in range(levels + 1)]


def counts(mask, names: List[str]) -> Dict[str, Dict[str, int]]:
    """Remaining and total weights of each prunable tensor."""
    flat = flatten(mask)
    return {
        name: {"remaining": int(np.sum(np.asarray(flat[name]))), "total": int(np.size(flat[name]))} for name in names
    }


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
