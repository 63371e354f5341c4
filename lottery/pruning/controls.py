"""Controls: what a ticket is compared with, each trained beside it at every pruned level.

Each control starts from something derived from the ticket's start at that level (its mask, its
start weights, the ranking that made it) and trains on the ticket's segment with its data order,
so the comparison isolates one property of the ticket:

  random_reinit           the ticket's mask on freshly drawn initial weights (Frankle & Carbin 2019;
                          Frankle et al. 2021's "reinit"): does the ticket need its own weights?
  random_prune            a random mask with the ticket's counts (per layer for layerwise, overall for
                          global), from θk: does it need its mask?
  shuffle_layer           each layer's mask permuted at random, keeping each layer's count (Frankle et
                          al. 2021), from θk: does it need its mask's positions within a layer?
  invert                  the ticket's per-layer counts, keeping the LOWEST-scored weights of the
                          ranking that made the ticket (the previous level's trained magnitudes
                          under its mask), from θk (Frankle et al. 2021): does the ranking matter?
  sign_preserving_reinit  the ticket's mask, fresh magnitudes with the signs of the ticket's start
                          weights (Zhou et al. 2019): are signs all the weights carry?

Adding one is one function here (or in any module imported before the run) under
``@control(name, stream=...)``: ``stream`` gives it its own PRNG stream and never changes once it
has results (a new control takes the next free number), ``same_start`` says it starts from the
ticket's own weights (the report then shows no sign agreement, which is 1 by construction), and
``transfers`` says whether it means anything for a ticket transferred from another experiment.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from lottery import lazy
from lottery.errors import LotteryError
from lottery.pruning import masks, structure

jax = lazy.module("jax")


@dataclasses.dataclass
class Context:
    """What a control's start is made from, at one level of one replicate."""

    ticket: dict  # the ticket's start state on the host: mask, params, batch_stats
    names: List[str]  # the prunable tensors
    key: jax.Array  # this control's own PRNG key at this level (fresh weights)
    rng: np.random.Generator  # the same stream as a NumPy generator (random masks)
    fresh_weights: Callable[[jax.Array], dict]  # {params, batch_stats} as the model initializes them with a key
    rewound: Callable[[dict], dict]  # a training state from θk under a mask, exactly as the ticket starts
    init_state: Callable[[dict, dict, dict], dict]  # a training state from (params, batch_stats, mask)
    ranking: Callable[[], Tuple[dict, dict]]  # (scores, the mask they ranked) of the ticket's pruning step
    structure: structure.Structure  # what the experiment prunes: random and inverted masks keep it


@dataclasses.dataclass(frozen=True)
class Control:
    name: str
    start: Callable[[Context], dict]  # the control's training state at the start of the level
    stream: int  # its PRNG stream (fold_in of the replicate's controls key): fixed for good
    same_start: bool  # starts from the ticket's own start weights
    transfers: Optional[str]  # None: it applies to a transferred ticket; else why it does not


CONTROLS: Dict[str, Control] = {}


def control(name: str, stream: int, same_start: bool, transfers: Optional[str] = None):
    """Register a control's start function under ``name`` (see the module docstring)."""

    def register(start: Callable[[Context], dict]) -> Callable[[Context], dict]:
        taken = {c.stream: c.name for c in CONTROLS.values() if c.name != name}
        if stream in taken:
            raise ValueError(f"control {name!r}: PRNG stream {stream} is {taken[stream]!r}'s")
        CONTROLS[name] = Control(name, start, stream, same_start, transfers)
        return start

    return register


def names() -> Tuple[str, ...]:
    """Every control, in the order of their streams (the order of tables and result directories)."""
    return tuple(c.name for c in sorted(CONTROLS.values(), key=lambda c: c.stream))


def kinds() -> Tuple[str, ...]:
    """What a trained network of a level can be: the ticket or one of its controls."""
    return ("ticket", *names())


def check(cfg) -> None:
    """The config's ``controls``: each registered, and meaningful for a transferred ticket if it is one."""
    for name in cfg.controls:
        if name not in CONTROLS:
            raise LotteryError(f"controls: {name!r} is not a control; choose from: {', '.join(names())}")
        reason = CONTROLS[name].transfers
        if cfg.transfer.source is not None and reason is not None:
            usable = [c for c in names() if CONTROLS[c].transfers is None]
            raise LotteryError(f"controls: {name} {reason}; use {', '.join(usable[:-1])} or {usable[-1]}")


def start(name: str, context: Context) -> dict:
    return CONTROLS[name].start(context)


def stream_key(controls_key: jax.Array, level: int, name: str) -> jax.Array:
    """The PRNG key of control ``name`` at ``level``, from a replicate's controls key."""
    return jax.random.fold_in(jax.random.fold_in(controls_key, level), CONTROLS[name].stream)


@control("random_reinit", stream=0, same_start=False)
def random_reinit(context: Context) -> dict:
    fresh = context.fresh_weights(context.key)
    return context.init_state(fresh["params"], fresh["batch_stats"], context.ticket["mask"])


@control("random_prune", stream=1, same_start=True)
def random_prune(context: Context) -> dict:
    return context.rewound(context.structure.random(context.ticket["mask"], context.rng))


@control("shuffle_layer", stream=2, same_start=True)
def shuffle_layer(context: Context) -> dict:
    return context.rewound(context.structure.random(context.ticket["mask"], context.rng, "layerwise"))


@control(
    "invert",
    stream=3,
    same_start=True,
    transfers="reverses the ranking that made a ticket, which a transferred ticket was not made by here",
)
def invert(context: Context) -> dict:
    """The ticket's pruning step with the ranking reversed: in each prunable tensor, of the weights
    the ranking started from (IMP: those the previous level kept, scored on its trained weights;
    pruning before training: all, scored on θk in one shot), the lowest-scored survive, as many as
    the ticket kept there (its per-layer counts, under global pruning too: the ablation changes
    which weights, not how many per layer). Ties go by position, as in pruning."""
    scores, survivors = context.ranking()
    return context.rewound(context.structure.inverted(scores, survivors, context.ticket["mask"]))


@control("sign_preserving_reinit", stream=4, same_start=False)
def sign_preserving_reinit(context: Context) -> dict:
    fresh = context.fresh_weights(context.key)
    signs, params = masks.flatten(context.ticket["params"]), masks.flatten(fresh["params"])
    for name in context.names:  # fresh magnitudes, the ticket's signs; the other parameters fresh
        params[name] = (np.sign(signs[name]) * np.abs(np.asarray(params[name]))).astype(np.asarray(params[name]).dtype)
    return context.init_state(masks.unflatten(fresh["params"], params), fresh["batch_stats"], context.ticket["mask"])
