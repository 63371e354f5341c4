"""Pruning, the science of which weights a ticket keeps.

  masks.py      masks shaped like the parameters and the counting rule: how many weights each level
                keeps, exactly, and which (ties by position, nested from level to level)
  criteria.py   the scores that rank weights (magnitude for IMP; random, SNIP, GraSP, SynFlow), a
                registry: a new criterion is one function there under ``@criterion("name")``
  controls.py   what a ticket is compared with (random reinitialization, random pruning, ...), a
                registry: a new control is one function there under ``@control("name", ...)``
  structure.py  structured tickets: whole neurons, channels or heads (the units each model
                declares, lottery/units.py), N:M, their controls, the compact network
  sparse.py     sparse training from scratch (static, GMP, SET, RigL; ERK), beside IMP

Its public names are these modules (``from lottery.pruning import masks``).
"""

__all__ = ["controls", "criteria", "masks", "sparse", "structure"]


def __getattr__(name):  # the names the old lottery/pruning.py held (compat.py), with a DeprecationWarning
    from lottery import compat

    return compat.moved(__name__, name)
