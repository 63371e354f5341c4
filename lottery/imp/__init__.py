"""Iterative magnitude pruning, the science's procedure: one experiment, level by level.

  levels.py      the story of a level: prune -> rewind -> controls -> train -> record (start here)
  method.py      what a level asks of a method (its seams, its Context), and the one compatibility check
  experiment.py  the experiment the levels run: config checked, data, model, keys, saved trees
  dense.py       level 0, the dense network, trained once and shared by every experiment it is the same for
  lmc.py         linear mode connectivity: two copies from a level's start, the error between them
  finish.py      an invocation's record, and the end of a run: objective, W&B summary, figures, table
The methods, one module each (a new one is a module here, its config group and its tests):
  iterative.py        IMP, weight rewinding and the retraining rules (the method the others are told against)
  at_start.py         pruning before training (SNIP, GraSP, SynFlow, ...)
  sparse_training.py  sparse training from scratch (static, GMP, SET, RigL)
  transfer.py         levels that start from another experiment's tickets
  early_bird.py       Early-Bird draws: each level's mask once the masks settle
  swamp.py            weight averaging inside IMP (SWAMP)
  diet.py             data diets: EL2N/GraNd scores, the shared scores store, the pre-training subset

``run(cfg)`` runs (or continues) an experiment; ``prepare(cfg)`` builds it without writing anything.
"""

__all__ = ["Experiment", "Results", "check", "prepare", "run"]

_HOMES = {"Experiment": "experiment", "prepare": "experiment", "check": "checks", "Results": "levels", "run": "levels"}


def __getattr__(name):
    """The public names, from their modules when first asked for (``lottery.imp.checks`` imports no
    JAX: a config is refused before it starts); else the names the old lottery/imp.py held
    (compat.py), with a DeprecationWarning."""
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    from lottery import compat

    return compat.moved(__name__, name)
