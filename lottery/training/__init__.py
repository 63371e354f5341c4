"""Training, the machinery that makes a stack of masked networks learn.

  trainer.py  the compiled program: data on the device, the masked step (a pruned weight is exactly
              0.0 after every step), evaluation, optimizers and learning-rate schedules
  loop.py     a group of networks trained over a range of steps in checkpointed chunks, stopped
              and resumed bitwise on a signal
  mesh.py     the same programs over several devices (members x data)

Its public names are these modules (``from lottery.training import trainer``).
"""

__all__ = ["loop", "mesh", "trainer"]


def __getattr__(name):  # the names the old lottery/training.py held (compat.py), with a DeprecationWarning
    from lottery import compat

    return compat.moved(__name__, name)
