"""Iterative magnitude pruning, the science's procedure: one experiment, level by level.

  levels.py      the story of a level: prune -> rewind -> controls -> train -> record (start here)
  experiment.py  the experiment the levels run: config checked, data, model, keys, saved trees
  dense.py       level 0, the dense network, trained once and shared by every experiment it is the same for
  lmc.py         linear mode connectivity: two copies from a level's start, the error between them
  transfer.py    levels that start from another experiment's tickets
  swamp.py       weight averaging inside IMP (SWAMP)
  early_bird.py  Early-Bird draws: each level's mask once the masks settle
  diet.py        data diets: EL2N/GraNd scores, the shared scores store, the pre-training subset

``run(cfg)`` runs (or continues) an experiment; ``prepare(cfg)`` builds it without writing anything.
"""

from lottery.imp.experiment import Experiment, check, prepare
from lottery.imp.levels import Results, run

__all__ = ["Experiment", "Results", "check", "prepare", "run"]


def __getattr__(name):  # the names the old lottery/imp.py held (compat.py), with a DeprecationWarning
    from lottery import compat

    return compat.moved(__name__, name)
