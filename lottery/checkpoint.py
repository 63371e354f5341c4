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


def load_tree(path: str, like):
    """Read the pytree at ``path`` with the structure, shapes and dtypes of ``like``."""
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), like)
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
