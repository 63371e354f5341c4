"""lottery: iterative magnitude pruning with weight rewinding on JAX and Flax NNX.

The lottery ticket hypothesis (Frankle & Carbin 2019), with rewinding (Frankle et al. 2020), its
controls, and the analyses of its tickets. Importing ``lottery`` loads nothing heavy; each package
is imported when it is used:

  imp       the procedure: an experiment, level by level (``lottery.imp.run(cfg)``)
  pruning   which weights a ticket keeps: masks and their counting rule, criteria, controls
  training  the compiled masked training of a stack of networks, checkpointed, over devices
  models    the networks (``build``) and the units they declare for structured pruning
  data      the data sets, as uint8 arrays on the device (``load``)
  results   results on disk: the layout, whole writes, an experiment's identity, provenance
  analysis  finished results as DataFrames, figures and tables (for notebooks)

The commands are ``python -m lottery.run``, ``lottery.report`` and ``lottery.export``. The module
paths from before the packages (``lottery.criteria`` and the like) still import, with a
DeprecationWarning naming the new one, for one release (compat.py).
"""

import sys

__version__ = "0.1.0"
__all__ = ["__version__", "analysis", "data", "imp", "models", "pruning", "results", "training"]


class _OldPaths:
    """Asked last, for a ``lottery.<name>`` that no module is: an old path, or none (compat.py is
    read only then, so that importing lottery stays light)."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if fullname.count(".") != 1 or not fullname.startswith("lottery."):
            return None
        from lottery import compat

        return compat.find_spec(fullname)


sys.meta_path.append(_OldPaths)
