"""Saving and loading pytrees (orbax) and JSON results, never leaving a half-written file behind."""

import json
import logging
import os

import jax
import orbax.checkpoint as ocp

from lottery.errors import LotteryError

logging.getLogger("absl").setLevel(logging.WARNING)


def save_tree(path: str, tree) -> None:
    """Write a pytree of arrays to the new directory ``path`` and wait until it is on disk."""
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.abspath(path), tree)
    checkpointer.wait_until_finished()
    checkpointer.close()


def abstract(like):
    """The structure, shapes and dtypes of a pytree: what orbax restores into."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), like)


def load_tree(path: str, like):
    """Read the pytree at ``path`` with the structure, shapes and dtypes of ``like``."""
    target = abstract(like)
    checkpointer = ocp.StandardCheckpointer()
    try:
        return checkpointer.restore(os.path.abspath(path), target)
    except Exception as error:  # orbax raises many types for missing, truncated or foreign files
        raise LotteryError(f"{path}: cannot be read as a checkpoint of this experiment ({type(error).__name__}: {error})") from None
    finally:
        checkpointer.close()


def write_json(path: str, content) -> None:
    partial = path + ".partial"
    with open(partial, "w") as f:
        json.dump(content, f, indent=1)
    os.replace(partial, path)


def read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as error:
        raise LotteryError(f"{path}: cannot be read as JSON ({error})") from None


class LevelCheckpoints:
    """Checkpoints inside a level of one group of networks trained together (orbax
    ``CheckpointManager``, the last two kept, so an unreadable one falls back to the one before)."""

    def __init__(self, directory: str):
        self.directory = directory
        options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True, enable_async_checkpointing=True)
        self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

    def save(self, step: int, arrays, meta: dict) -> None:
        """Save host copies (the training state's buffers are donated to the next step)."""
        arrays = jax.device_get(arrays)
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
                return step, arrays, meta
            except Exception as error:  # truncated or foreign files raise many types
                errors.append(f"step {step}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
                logging.getLogger("lottery").warning("%s: checkpoint at step %d unreadable, trying an older one", self.directory, step)
        if errors:
            raise LotteryError(f"{self.directory}: no readable checkpoint ({'; '.join(errors)}); "
                               "delete this directory to train the level again from its start")
        return None

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
