"""Modules imported where they are first used, so that a command that needs none of them (a config
refused before JAX starts, ``--help``) does not wait for them.

``jax = lazy.module("jax")`` at the top of a module reads as ``import jax`` and imports JAX at the
first ``jax.<name>``; each name, once read, is kept on the stand-in, so that reading it again costs
what reading it from the module costs. A module read at import time (a base class, a dataclass
field's type, a value of a constant) is imported normally or behind a function.
"""

import importlib
import types


class _Module(types.ModuleType):
    def __getattr__(self, name: str):  # only for a name not kept yet
        value = getattr(importlib.import_module(self.__name__), name)
        setattr(self, name, value)
        return value


def module(name: str) -> types.ModuleType:
    """``name``, imported at the first attribute read of what this returns."""
    return _Module(name)


def jit(function, **options):
    """``jax.jit(function, **options)``, made at its first call (importing the caller imports no JAX).
    For work between compiled programs on a whole tree: one dispatch and one compiled program where
    eager ``jax.numpy`` makes one of each per leaf (and per shape, each traced and looked up in the
    compilation cache at every process start)."""
    compiled = []

    def call(*args, **kwargs):
        if not compiled:
            compiled.append(importlib.import_module("jax").jit(function, **options))
        return compiled[0](*args, **kwargs)

    call.__wrapped__ = function
    return call
