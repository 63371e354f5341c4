"""Pruning, the science of which weights a ticket keeps.

  masks.py     masks shaped like the parameters and the counting rule: how many weights each level
               keeps, exactly, and which (ties by position, nested from level to level)
  criteria.py  the scores that rank weights (magnitude for IMP; random, SNIP, GraSP, SynFlow), a
               registry: a new criterion is one function there under ``@criterion("name")``
  controls.py  what a ticket is compared with (random reinitialization, random pruning, ...), a
               registry: a new control is one function there under ``@control("name", ...)``
"""
