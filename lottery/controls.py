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

Adding one: its name in ``config.CONTROLS`` (the order gives each control its PRNG stream, so new
ones go at the end) and its start in ``start`` below.
"""

import jax
import numpy as np

from lottery import criteria, pruning
from lottery.config import CONTROLS


def start(experiment, replicate: int, level: int, control: str, ticket: dict, rewound) -> dict:
    """The training state ``control`` starts ``level`` from, given the ticket's start state
    ``ticket``; ``rewound(mask)`` is a network that starts from θk under ``mask``, as the ticket
    does (imp.rewound)."""
    trainer, prunable = experiment.trainer, experiment.prunable
    mask = jax.device_get(ticket["mask"])
    key = jax.random.fold_in(jax.random.fold_in(experiment.keys(replicate)["controls"], level), CONTROLS.index(control))
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)))
    if control == "random_reinit":
        fresh = experiment.initial_weights(key)
        return trainer.init_state(fresh["params"], fresh["batch_stats"], mask)
    if control == "sign_preserving_reinit":
        fresh = experiment.initial_weights(key)
        signs, params = pruning.flatten(jax.device_get(ticket["params"])), pruning.flatten(fresh["params"])
        for name in prunable:  # fresh magnitudes, the ticket's signs; the other parameters fresh
            params[name] = (np.sign(signs[name]) * np.abs(np.asarray(params[name]))).astype(np.asarray(params[name]).dtype)
        return trainer.init_state(pruning.unflatten(fresh["params"], params), fresh["batch_stats"], mask)
    if control == "random_prune":
        return rewound(pruning.random_mask(mask, prunable, experiment.cfg.pruning.strategy, rng))
    if control == "shuffle_layer":
        return rewound(pruning.random_mask(mask, prunable, "layerwise", rng))
    if control == "invert":
        return rewound(inverted(experiment, replicate, level, mask))
    raise ValueError(f"no start for control {control!r}")


def inverted(experiment, replicate: int, level: int, ticket_mask):
    """The ticket's pruning step at ``level`` with the ranking reversed: in each prunable tensor, of
    the weights the ranking started from (IMP: those the previous level kept, scored on its trained
    weights; pruning before training: all, scored on θk in one shot), the lowest-scored survive, as
    many as the ticket kept there (its per-layer counts, under global pruning too: the ablation
    changes which weights, not how many per layer). Ties go by position, as in pruning."""
    cfg = experiment.cfg.pruning
    if cfg.prune_at == "start":
        weights = experiment.rewind_point(replicate)
        survivors = pruning.full_mask(weights["params"])
    else:
        previous = experiment.level_dir(replicate, level - 1)
        survivors = experiment.load(previous, "ticket")["mask"]
        weights = experiment.load(previous, "trained")
    scores = criteria.score(cfg.criterion, experiment.scoring_context(replicate, level, weights, survivors))
    per_layer = [[name] for name in experiment.prunable]
    keep = [int(c["remaining"]) for c in pruning.counts(ticket_mask, experiment.prunable).values()]
    return pruning.prune_to_counts({name: -np.asarray(s) for name, s in scores.items()}, survivors, per_layer, keep)
