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

    def mask(self, experiment, replicate: int, level: int):
        scores, survivors = self.ranking(experiment, replicate, level)
        return experiment.structure.prune(scores, survivors, level)

    def ranking(self, experiment, replicate: int, level: int):
        """The previous level's trained weights under its mask, scored by ``pruning.criterion``."""
        previous = experiment.level_dir(replicate, level - 1)
        survivors = experiment.load(previous, "ticket")["mask"]
        weights = experiment.load(previous, "trained")
        scores = criteria.score(
            experiment.cfg.pruning.criterion, experiment.scoring_context(replicate, level, weights, survivors)
        )
        return scores, survivors

    def start(self, experiment, replicate: int, level: int, mask) -> dict:
        if experiment.cfg.retrain == "rewind":
            return self.rewound(experiment, replicate, mask)
        this_level = experiment.level_dir(replicate, level)  # lr_rewind, finetune: the trained weights kept
        kept = (
            experiment.load(this_level, "ticket")
            if os.path.isdir(this_level)
            else experiment.load(experiment.level_dir(replicate, level - 1), "trained")
        )
        return experiment.trainer.init_state(kept["params"], kept["batch_stats"], mask)
