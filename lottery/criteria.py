"""Pruning criteria: one score per prunable weight, the higher the more it deserves to stay.

A criterion is a function of a ``Context`` (the weights being scored, the current mask, the
prunable tensors' names, a seeded generator) that returns ``{name: scores}`` with each tensor's
shape. ``pruning.prune_by_scores`` turns scores into the next mask with the exact counts of the
strategy (``layerwise`` or ``global``), the ignore list, nested masks and ties by position, so a
criterion only ranks. Adding one is one function in this file under ``@criterion("name")``
(as open_lth's ``pruning/registry.py``).
"""

import dataclasses
from typing import Callable, Dict, List, Optional

import numpy as np

from lottery.errors import LotteryError
from lottery.pruning import flatten

Scores = Dict[str, np.ndarray]


@dataclasses.dataclass
class Context:
    params: dict  # the weights scored: trained (IMP) or the start weights (pruning before training)
    mask: dict  # the current mask: pruned weights stay pruned whatever their score
    names: List[str]  # the prunable tensors
    rng: Optional[np.random.Generator] = None  # for criteria that draw


CRITERIA: Dict[str, Callable[[Context], Scores]] = {}


def criterion(name: str):
    """Register a scoring function under ``name``."""

    def register(function: Callable[[Context], Scores]) -> Callable[[Context], Scores]:
        CRITERIA[name] = function
        return function

    return register


PRUNE_AT = ("trained", "start")


def check(cfg) -> None:
    """The criterion keys of the config (``pruning.*``), before anything runs."""
    p = cfg.pruning
    if p.criterion not in CRITERIA:
        raise LotteryError(f"pruning.criterion={p.criterion!r} is not a criterion; choose one of: {', '.join(sorted(CRITERIA))}")
    if p.prune_at not in PRUNE_AT:
        raise LotteryError(f"pruning.prune_at={p.prune_at!r} is not an option; choose one of: {', '.join(PRUNE_AT)} "
                           "(trained: IMP; start: pruning before training)")
    if p.rounds < 1 or p.examples < 1:
        raise LotteryError(f"pruning.rounds={p.rounds} and pruning.examples={p.examples} must be 1 or more")
    if p.prune_at == "start" and cfg.retrain != "rewind":
        raise LotteryError(f"pruning.prune_at=start trains each level from its start weights: retrain={cfg.retrain} "
                           "(which keeps trained weights) does not apply; use retrain=rewind")
    if p.rounds > 1 and p.prune_at != "start":
        raise LotteryError(f"pruning.rounds={p.rounds} applies to pruning before training (pruning.prune_at=start); "
                           "IMP's rounds are its levels")


def score(name: str, context: Context) -> Scores:
    if name not in CRITERIA:
        raise LotteryError(f"pruning criterion {name!r} is not one; choose one of: {', '.join(sorted(CRITERIA))}")
    return CRITERIA[name](context)


@criterion("magnitude")
def magnitude(context: Context) -> Scores:
    """|w| (Han et al. 2015; Frankle & Carbin 2019's IMP)."""
    weights = flatten(context.params)
    return {name: np.abs(np.asarray(weights[name])) for name in context.names}


@criterion("random")
def random(context: Context) -> Scores:
    """Uniform random scores: a random mask with the strategy's exact counts, nested in the current one."""
    if context.rng is None:
        raise ValueError("the random criterion needs a seeded generator (Context.rng)")
    weights = flatten(context.params)
    return {name: context.rng.random(np.shape(weights[name])) for name in context.names}
