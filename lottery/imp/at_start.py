"""Pruning before training (Frankle, Dziugaite, Roy & Carbin 2021, "Pruning neural networks at
initialization: why are we missing the mark?"), ``pruning.prune_at=start``: each level's mask is
scored on the weights training starts from (θk; θ0 with rewind=0) by ``pruning.criterion`` (SNIP,
GraSP, SynFlow, magnitude, random: pruning/criteria.py), straight to IMP's counts at that level, and
trained once. Levels do not build on each other: level L is one training at IMP level L's density.
"""

from lottery.imp.method import Method, method
from lottery.pruning import criteria, masks


@method
class AtStart(Method):
    label = "pruning before training"
    between_levels = False  # each level is its own training, not pruned from the last
    honours = frozenset({"rewind_optimizer", "pruning.criterion"})  # not retrain: each level from its start weights
    ranks = True

    @staticmethod
    def chosen(cfg) -> bool:
        return cfg.pruning.prune_at == "start"

    @staticmethod
    def switch(cfg) -> str:
        return "pruning.prune_at=start"

    def mask(self, replicate: int, level: int):
        """The mask of ``level`` scored on θk in ``pruning.rounds`` rounds whose counts shrink
        exponentially from dense to exactly IMP's counts at this level (one round: one shot;
        SynFlow's schedule with more), each round re-scoring under the mask so far."""
        c = self.context
        cfg = c.cfg.pruning
        theta_k = c.rewind_point(replicate)
        full = masks.full_mask(theta_k["params"])
        keep = masks.level_counts(full, cfg, c.prunable, level)
        context = c.scoring_context(replicate, level, theta_k, full)
        return criteria.iterate_to_counts(
            cfg.criterion, context, masks.groups(c.prunable, cfg.strategy), keep, cfg.rounds
        )

    def ranking(self, replicate: int, level: int):
        """θk, dense, scored: what the first round ranked (the invert control)."""
        c = self.context
        weights = c.rewind_point(replicate)
        survivors = masks.full_mask(weights["params"])
        scores = criteria.score(c.cfg.pruning.criterion, c.scoring_context(replicate, level, weights, survivors))
        return scores, survivors

    def cost(self, level: int, start: int, end: int, copies: int):
        """One training, θk's k steps included."""
        return self.context.rewind + end - start
