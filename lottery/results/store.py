"""Results on disk: pytrees (orbax) and JSON, written whole or not at all, directories that appear
whole, and locks.

Every result directory is written as ``<name>.partial`` and renamed into place when complete, so a
directory that exists is finished and one that does not is redone (an interrupted attempt's
``.partial`` is removed first). A directory that several processes may write (an experiment, the
shared dense level 0) is guarded by an exclusive ``flock`` on its ``lock`` file: the kernel releases
it when the process ends, however it ends, so no lock is ever stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import sys
from typing import Callable, Optional

import numpy as np

from lottery import lazy
from lottery import hosts
from lottery.errors import LotteryError, at
from lottery.results import lock

jax = lazy.module("jax")
ocp = lazy.module("orbax.checkpoint")

# orbax reports through absl's logger what it then raises (a truncated file: "Failed to json parse
# ..."), and we turn what it raises into one line naming the directory: its own reports are noise.
logging.getLogger("absl").setLevel(logging.CRITICAL)


# Every process calls each save and restore (orbax synchronizes them); process 0 writes.
def multiprocess():
    """Orbax's options for a multi-process run: process 0 writes."""
    return ocp.options.MultiprocessingOptions(primary_host=0)


class _ReadLoop(asyncio.SelectorEventLoop):
    """The event loop of one orbax read. orbax closes it as soon as one array fails to read (a
    truncated file) while tensorstore still finishes the others, and each of those would then print
    ``RuntimeError: Event loop is closed`` from its own thread: a closed loop drops their callbacks,
    which could never run."""

    def call_soon_threadsafe(self, callback, *args, context=None):
        if self.is_closed():
            return None
        return super().call_soon_threadsafe(callback, *args, context=context)


class _ReadLoops(asyncio.DefaultEventLoopPolicy):
    _loop_factory = _ReadLoop


@contextlib.contextmanager
def _reading():
    """orbax's reads inside run in ``_ReadLoop``s (orbax makes a new loop for each restore)."""
    previous = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(_ReadLoops())
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(previous)


def save_tree(path: str, tree) -> None:
    """Write a pytree of host arrays to the new directory ``path`` and wait until it is on disk."""
    checkpointer = ocp.StandardCheckpointer(multiprocessing_options=multiprocess())
    with at(path):
        checkpointer.save(os.path.abspath(path), tree)
        checkpointer.wait_until_finished()
    checkpointer.close()


def abstract(like):
    """The structure, shapes and dtypes of a pytree: what orbax restores into."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), like)


RETRAIN = "run the same command to train it again"  # what to do once a damaged result is deleted


def load_tree(path: str, like, owner: Optional[str] = None, then: str = RETRAIN):
    """Read the pytree at ``path`` with the structure, shapes and dtypes of ``like``; if it cannot be
    read, say so in one line (``unreadable``: ``owner`` and ``then``)."""
    target = abstract(like)
    checkpointer = ocp.StandardCheckpointer(multiprocessing_options=multiprocess())
    try:
        with _reading():
            tree = checkpointer.restore(os.path.abspath(path), target)
    except Exception as error:  # orbax raises many types for missing, truncated or foreign files
        # Not closed: reads still in flight would call back into a closed event loop and print
        # tracebacks around the one line that matters; the failing process ends soon anyway.
        raise unreadable(path, error, owner, then) from None
    checkpointer.close()
    return tree


def unreadable(path: str, error: Exception, owner: Optional[str] = None, then: str = RETRAIN) -> LotteryError:
    """A checkpoint that cannot be read, in one line: the path, the error's type (not its message:
    tensorstore's holds its whole JSON spec, 1,400 characters), what to delete -- ``owner``, the
    directory whose deletion redoes it (``path``'s parent unless given: deleting the checkpoint alone
    leaves a finished level or dense run without it) -- and ``then`` what to run."""
    owner = os.path.dirname(os.path.normpath(path)) if owner is None else owner
    which = (
        "it" if os.path.normpath(owner) == os.path.normpath(path) else f"the {os.path.basename(owner)}/ that holds it"
    )
    return LotteryError(f"{path}: cannot be read as a checkpoint ({type(error).__name__}); delete {which} and {then}")


def write_whole(path: str, write: Callable[[str], None], before: Callable[[], None] = lambda: None) -> None:
    """The one way a file is written: ``write(partial)`` writes ``<path>.partial``, which is renamed
    over ``path`` (after ``before()``, which may raise) only when complete, so ``path`` holds the old
    content or the new, never a part; a failed attempt's partial file is removed."""
    partial = path + ".partial"
    try:
        with at(partial):
            write(partial)
        before()
        os.replace(partial, path)
    finally:
        if os.path.lexists(partial):
            os.remove(partial)


def write_json(path: str, content) -> None:
    """Write ``path`` whole or not at all; in a multi-process run, only process 0 writes."""
    if not hosts.primary():
        return

    def write(partial):
        with open(partial, "w") as f:
            json.dump(content, f, indent=1)

    write_whole(path, write)


def read_json(path: str, keys=()):
    """The JSON at ``path``; with ``keys``, an object that must have them (a result file that parses
    but holds something else -- ``1``, ``{}``, a truncated object -- is named, never skipped)."""
    try:
        with open(path) as f:
            content = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LotteryError(
            f"{path}: cannot be read as JSON ({error}); it is corrupt: delete the directory "
            "that holds it to train that network again"
        ) from None
    missing = [key for key in keys if not isinstance(content, dict) or key not in content]
    if missing:
        found = type(content).__name__ if not isinstance(content, dict) else f"an object without {', '.join(missing)}"
        raise LotteryError(
            f"{path}: holds {found}, not a lottery result; it is corrupt: delete the directory "
            "that holds it to train that network again"
        )
    return content


def read_flat(directory: str, keys, exact: bool = True, separator: str = ".", then: Optional[str] = None) -> dict:
    """The orbax tree at ``directory`` as flat NumPy arrays per key of ``keys`` (``{"params":
    {"hidden.0.kernel": a}}``), read by the checkpoint's own metadata: no model has to be built, any
    shapes are read. It must hold exactly ``keys`` (``exact=False``: at least them; the rest, an
    optimizer state of any structure, is not flattened). ``then``: as ``load_tree``'s, for a reader
    that knows how the checkpoint is made again."""
    what = f"the orbax checkpoint {os.path.basename(directory)}/ of a finished level, with {', '.join(keys)}"
    if not os.path.isdir(directory):
        raise LotteryError(f"{directory}: missing; expected {what}")
    checkpointer = ocp.StandardCheckpointer()
    try:
        with _reading():
            tree = checkpointer.restore(os.path.abspath(directory))
    except Exception as error:  # orbax raises many types for missing, truncated or foreign files
        if then is not None:
            raise unreadable(directory, error, then=then) from None
        raise LotteryError(
            f"{directory}: cannot be read as an orbax checkpoint ({type(error).__name__}); "
            f"expected {what}; it is corrupt"
        ) from None
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
            raise LotteryError(
                f"{directory}: the key {key!r} of {prefix or 'the tree'} holds a {separator!r}, which "
                "separates the parts of a path in the names; this tree cannot be read by name"
            )
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_arrays(value, directory, separator, name + separator))
        else:
            flat[name] = np.ascontiguousarray(np.asarray(value))
    return flat


class LevelCheckpoints:
    """Checkpoints inside a level of one group of networks trained together (orbax
    ``CheckpointManager``, the last two kept, so an unreadable one falls back to the one before)."""

    def __init__(self, directory: str):
        self.directory = directory
        options = ocp.CheckpointManagerOptions(
            max_to_keep=2, create=True, enable_async_checkpointing=True, multiprocessing_options=multiprocess()
        )
        self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

    def save(self, step: int, arrays, meta: dict) -> None:
        """Save host copies (the training state's buffers are donated to the next step)."""
        arrays = jax.device_get(arrays)
        with at(self.directory):  # also where an earlier asynchronous save's failure surfaces
            self.manager.save(
                step, args=ocp.args.Composite(arrays=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta))
            )

    def latest(self, like):
        """(step, arrays, meta) of the newest readable checkpoint, or None if there is none.

        ``like(meta)`` gives the arrays' structure. Unreadable checkpoints are skipped with a
        warning; if none is readable the level is not silently restarted: an error names them.
        """
        errors = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                with _reading():
                    meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
                    target = abstract(like(meta))
                    arrays = self.manager.restore(
                        step, args=ocp.args.Composite(arrays=ocp.args.StandardRestore(target))
                    )["arrays"]
                for error in errors:  # said only when an older one was read: otherwise the error below says it all
                    print(
                        f"warning: {self.directory}: checkpoint at {error}; resuming from step {step}", file=sys.stderr
                    )
                return step, arrays, meta
            except Exception as error:  # truncated or foreign files raise many types (messages: tensorstore's spec)
                errors.append(f"step {step}: {type(error).__name__}")
        if errors:
            raise LotteryError(
                f"{self.directory}: no readable checkpoint ({'; '.join(errors)}); "
                "delete this directory to train the level again from its start"
            )
        return None

    def close(self) -> None:
        with at(self.directory):
            self.manager.wait_until_finished()
        self.manager.close()


# --- directories that appear whole, and locks --------------------------------------------------


def acquire_lock(directory: str, wait: Optional[Callable[[str], None]] = None, stop: Callable[[], None] = lambda: None):
    """An exclusive lock on ``directory`` (its ``lock`` file: lock.py) for this process's lifetime, or until closed."""
    return lock.acquire(os.path.join(directory, lock.LOCK), directory, wait, stop)


def open_locked(
    directory: str, identify: Callable[[], None], what: str, wait=None, stop: Callable[[], None] = lambda: None
):
    """Process 0 makes ``directory``, takes its lock (``acquire_lock``) and writes or checks its
    identity (``identify``); every process learns whether it could. Process 0 raises its own error
    (after closing the lock), the others one line. Returns the lock (None off process 0)."""
    lock, error = None, None
    if hosts.primary():
        try:
            with at(directory):
                os.makedirs(directory, exist_ok=True)
            lock = acquire_lock(directory, wait, stop)
            identify()
        except BaseException as e:  # raised below, once the other processes know
            error = e
    failed = hosts.agree(0 if error is None else 1)
    if error is not None:
        if lock is not None:
            lock.close()
        raise error
    if any(failed):
        raise LotteryError(f"{directory}: process 0 could not open {what} (its error line says why)")
    return lock


def fresh(work_dir: str) -> str:
    """An empty ``work_dir`` (an interrupted attempt's is removed), made by process 0 before any
    process writes into it."""
    if hosts.primary():
        if os.path.isdir(work_dir):  # an interrupted attempt, never finished
            shutil.rmtree(work_dir)
        with at(work_dir):
            os.makedirs(work_dir)
    hosts.barrier(f"fresh {work_dir}")
    return work_dir


def files_digest(directory: str) -> str:
    """The content of the files below ``directory`` (relative paths, sizes, bytes; none: the digest
    of nothing): what a hard link shares with the file it links, read without orbax."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(f"{os.path.relpath(path, directory)}\0{os.path.getsize(path)}\0".encode())
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def tree_digest(tree) -> str:
    """The content of a pytree of arrays (paths, dtypes, shapes, values): the same for two bitwise
    equal trees, whichever files hold them (orbax's metadata has the time of writing)."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)} {array.dtype.str} {array.shape}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def link_tree(source: str, destination: str) -> None:
    """Copy the directory ``source`` to ``destination``, each file hard-linked where the file
    system allows it (no second copy of the bytes: results are never modified in place once
    written), else copied."""

    def link_or_copy(src, dst):
        try:
            os.link(src, dst)
        except OSError as error:
            if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                raise
            shutil.copy2(src, dst)

    with at(destination):
        shutil.copytree(source, destination, copy_function=link_or_copy)
