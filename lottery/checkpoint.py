"""Saving and loading pytrees (orbax) and JSON results, never leaving a half-written file behind."""

import json
import logging
import os
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

from lottery.errors import LotteryError, at

# orbax reports through absl's logger what it then raises (a truncated file: "Failed to json parse
# ..."), and we turn what it raises into one line naming the directory: its own reports are noise.
logging.getLogger("absl").setLevel(logging.CRITICAL)


# Every process calls each save and restore (orbax synchronizes them); process 0 writes.
MULTIPROCESS = ocp.options.MultiprocessingOptions(primary_host=0)


def save_tree(path: str, tree) -> None:
    """Write a pytree of host arrays to the new directory ``path`` and wait until it is on disk."""
    checkpointer = ocp.StandardCheckpointer(multiprocessing_options=MULTIPROCESS)
    with at(path):
        checkpointer.save(os.path.abspath(path), tree)
        checkpointer.wait_until_finished()
    checkpointer.close()


def abstract(like):
    """The structure, shapes and dtypes of a pytree: what orbax restores into."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), like)


def load_tree(path: str, like):
    """Read the pytree at ``path`` with the structure, shapes and dtypes of ``like``."""
    target = abstract(like)
    checkpointer = ocp.StandardCheckpointer(multiprocessing_options=MULTIPROCESS)
    try:
        tree = checkpointer.restore(os.path.abspath(path), target)
    except Exception as error:  # orbax raises many types for missing, truncated or foreign files
        # Not closed: reads still in flight would call back into a closed event loop and print
        # tracebacks around the one line that matters; the failing process ends soon anyway.
        raise LotteryError(f"{path}: cannot be read as a checkpoint of this experiment ({type(error).__name__}: "
                           f"{str(error).splitlines()[0]}); it is corrupt: delete the directory that holds it to "
                           "train that network again") from None
    checkpointer.close()
    return tree


def write_json(path: str, content) -> None:
    """Write ``path`` whole or not at all; in a multi-process run, only process 0 writes."""
    if jax.process_index() != 0:
        return
    partial = path + ".partial"
    with at(partial), open(partial, "w") as f:
        json.dump(content, f, indent=1)
    os.replace(partial, path)


def read_json(path: str, keys=()):
    """The JSON at ``path``; with ``keys``, an object that must have them (a result file that parses
    but holds something else -- ``1``, ``{}``, a truncated object -- is named, never skipped)."""
    try:
        with open(path) as f:
            content = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LotteryError(f"{path}: cannot be read as JSON ({error}); it is corrupt: delete the directory "
                           "that holds it to train that network again") from None
    missing = [key for key in keys if not isinstance(content, dict) or key not in content]
    if missing:
        found = type(content).__name__ if not isinstance(content, dict) else f"an object without {', '.join(missing)}"
        raise LotteryError(f"{path}: holds {found}, not a lottery result; it is corrupt: delete the directory "
                           "that holds it to train that network again")
    return content


def read_flat(directory: str, keys, exact: bool = True, separator: str = ".") -> dict:
    """The orbax tree at ``directory`` as flat NumPy arrays per key of ``keys`` (``{"params":
    {"hidden.0.kernel": a}}``), read by the checkpoint's own metadata: no model has to be built, any
    shapes are read. It must hold exactly ``keys`` (``exact=False``: at least them; the rest, an
    optimizer state of any structure, is not flattened)."""
    what = f"the orbax checkpoint {os.path.basename(directory)}/ of a finished level, with {', '.join(keys)}"
    if not os.path.isdir(directory):
        raise LotteryError(f"{directory}: missing; expected {what}")
    checkpointer = ocp.StandardCheckpointer()
    try:
        tree = checkpointer.restore(os.path.abspath(directory))
    except Exception as error:  # orbax raises many types for missing, truncated or foreign files
        raise LotteryError(f"{directory}: cannot be read as an orbax checkpoint ({type(error).__name__}: "
                           f"{str(error).splitlines()[0] if str(error) else ''}); expected {what}; it is corrupt") from None
    checkpointer.close()
    if not isinstance(tree, dict) or (set(tree) != set(keys) if exact else not set(keys) <= set(tree)):
        found = sorted(tree) if isinstance(tree, dict) else type(tree).__name__
        raise LotteryError(f"{directory}: holds {found}; expected {what}")
    return {key: flat_arrays(tree[key], directory, separator) for key in keys}


def flat_arrays(tree, directory: str, separator: str = ".", prefix: str = "") -> dict:
    """``{"hidden": {"0": {"kernel": a}}}`` -> ``{"hidden.0.kernel": a}``, C-contiguous NumPy
    (safetensors 0.8 writes a non-contiguous array's memory as it lies, not in index order)."""
    flat = {}
    for key, value in (tree or {}).items():
        if separator in str(key):  # a key holding the separator would make two names one
            raise LotteryError(f"{directory}: the key {key!r} of {prefix or 'the tree'} holds a {separator!r}, which "
                               "separates the parts of a path in the names; this tree cannot be read by name")
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_arrays(value, directory, separator, name + separator))
        else:
            flat[name] = np.ascontiguousarray(np.asarray(value))
    return flat


NETWORK_KEYS = ("level", "replicate", "kind", "density", "remaining", "layers", "final", "history", "start_step")
LMC_KEYS = ("alphas", "test_error", "barrier", "start_step")


class LevelCheckpoints:
    """Checkpoints inside a level of one group of networks trained together (orbax
    ``CheckpointManager``, the last two kept, so an unreadable one falls back to the one before)."""

    def __init__(self, directory: str):
        self.directory = directory
        options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True, enable_async_checkpointing=True,
                                               multiprocessing_options=MULTIPROCESS)
        self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

    def save(self, step: int, arrays, meta: dict) -> None:
        """Save host copies (the training state's buffers are donated to the next step)."""
        arrays = jax.device_get(arrays)
        with at(self.directory):  # also where an earlier asynchronous save's failure surfaces
            self.manager.save(step, args=ocp.args.Composite(arrays=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)))

    def latest(self, like):
        """(step, arrays, meta) of the newest readable checkpoint, or None if there is none.

        ``like(meta)`` gives the arrays' structure. Unreadable checkpoints are skipped with a
        warning; if none is readable the level is not silently restarted: an error names them.
        """
        errors = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
                target = abstract(like(meta))
                arrays = self.manager.restore(step, args=ocp.args.Composite(arrays=ocp.args.StandardRestore(target)))["arrays"]
                for error in errors:  # said only when an older one was read: otherwise the error below says it all
                    print(f"warning: {self.directory}: checkpoint at {error}; resuming from step {step}", file=sys.stderr)
                return step, arrays, meta
            except Exception as error:  # truncated or foreign files raise many types
                errors.append(f"step {step}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        if errors:
            raise LotteryError(f"{self.directory}: no readable checkpoint ({'; '.join(errors)}); "
                               "delete this directory to train the level again from its start")
        return None

    def close(self) -> None:
        with at(self.directory):
            self.manager.wait_until_finished()
        self.manager.close()
