"""Iterative magnitude pruning (Frankle & Carbin 2019; weight rewinding, Frankle et al. 2020): the
method every other one is told against (``method.Method`` answers its seams as IMP does).

Level L's mask is level L-1's survivors ranked by their trained values (``pruning.criterion``:
magnitude), pruned to level L's counts in the experiment's structure (single weights, units or N:M
blocks: pruning/structure.py). The ticket then rewinds to θk -- or, with ``retrain`` (Renda et al.
2020: ``lr_rewind``, ``finetune``), keeps level L-1's trained weights.
"""

import os

from lottery.imp.method import Method, method
from lottery.pruning import criteria


@method
class IMP(Method):
    label = "IMP"
    fallback = True  # chosen unless another method makes the tickets
    honours = frozenset({"retrain", "rewind_optimizer", "pruning.criterion", "pruning.structure"})
    ranks = True

    @staticmethod
    def chosen(cfg) -> bool:
        return True

    def mask(self, replicate: int, level: int):
        scores, survivors = self.ranking(replicate, level)
        return self.context.structure.prune(scores, survivors, level)

    def ranking(self, replicate: int, level: int):
        """The previous level's trained weights under its mask, scored by ``pruning.criterion``."""
        c = self.context
        previous = c.level_dir(replicate, level - 1)
        survivors = c.load(previous, "ticket")["mask"]
        weights = c.load(previous, "trained")
        scores = criteria.score(c.cfg.pruning.criterion, c.scoring_context(replicate, level, weights, survivors))
        return scores, survivors

    def start(self, replicate: int, level: int, mask) -> dict:
        c = self.context
        if c.cfg.retrain == "rewind":
            return self.rewound(replicate, mask)
        this_level = c.level_dir(replicate, level)  # lr_rewind, finetune: the trained weights kept
        kept = (
            c.load(this_level, "ticket")
            if os.path.isdir(this_level)
            else c.load(c.level_dir(replicate, level - 1), "trained")
        )
        return c.trainer.init_state(kept["params"], kept["batch_stats"], mask)
