"""Results on disk: locks, directories that appear whole, and what a network's metrics.json holds.

Every result directory is written as ``<name>.partial`` and renamed into place when complete, so a
directory that exists is finished and one that does not is redone (an interrupted attempt's
``.partial`` is removed first). A directory that several processes may write (an experiment, the
shared dense level 0) is guarded by an exclusive ``flock`` on its ``lock`` file: the kernel releases
it when the process ends, however it ends, so no lock is ever stale.
"""

import errno
import fcntl
import os
import shutil
import time
from typing import Callable, Optional

from lottery import distributed
from lottery.errors import LotteryError, at
from lottery.provenance import provenance


def acquire_lock(directory: str, wait: Optional[Callable[[str], None]] = None, stop: Callable[[], None] = lambda: None):
    """An exclusive lock on ``directory`` for this process's lifetime, or until closed. Held by
    another process: without ``wait``, an error naming the holder; with ``wait``, say so once
    through ``wait`` and try again every half second (``stop`` is called between tries: it raises
    to give up, e.g. when a signal asks the run to stop)."""
    path = os.path.join(directory, "lock")
    with at(path):
        lock = open(path, "a+")
    said = False
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            if wait is None:
                lock.close()
                raise LotteryError(f"{directory} is in use by another process ({holder}); "
                                   "wait for it to finish or stop it, then run the command again") from None
        if not said:
            wait(f"waiting for {directory}: another process is working on it ({holder})")
            said = True
        try:
            stop()
        except BaseException:
            lock.close()
            raise
        time.sleep(0.5)
    with at(path):
        lock.truncate(0)
        lock.write(f"pid {os.getpid()} on {os.uname().nodename}")
        lock.flush()
    return lock


def open_locked(directory: str, identify: Callable[[], None], what: str, wait=None, stop: Callable[[], None] = lambda: None):
    """Process 0 makes ``directory``, takes its lock (``acquire_lock``) and writes or checks its
    identity (``identify``); every process learns whether it could. Process 0 raises its own error
    (after closing the lock), the others one line. Returns the lock (None off process 0)."""
    lock, error = None, None
    if distributed.primary():
        try:
            with at(directory):
                os.makedirs(directory, exist_ok=True)
            lock = acquire_lock(directory, wait, stop)
            identify()
        except BaseException as e:  # raised below, once the other processes know
            error = e
    failed = distributed.agree(0 if error is None else 1)
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
    if distributed.primary():
        if os.path.isdir(work_dir):  # an interrupted attempt, never finished
            shutil.rmtree(work_dir)
        with at(work_dir):
            os.makedirs(work_dir)
    distributed.barrier(f"fresh {work_dir}")
    return work_dir


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


def summarize(level: int, replicate: int, kind: str, start: int, history, layer_counts, seconds: float) -> dict:
    """A trained network's metrics.json: its counts and densities, its evaluations, the early stop
    (minimum validation loss, found after the fact, as Frankle & Carbin 2019), its training time."""
    early_stop = None
    if history and "val_loss" in history[0]:
        best = min(history, key=lambda r: r["val_loss"])
        early_stop = {"step": best["step"], "val_loss": best["val_loss"],
                      "test_loss": best["test_loss"], "test_accuracy": best["test_accuracy"]}
    return {
        "level": level,
        "replicate": replicate,
        "kind": kind,
        **count_fields(layer_counts),
        "start_step": start,
        "final": history[-1],
        "early_stop": early_stop,
        "history": history,
        "wall_time_s": seconds,  # training its group together, summed over resumed processes
        "provenance": provenance(),  # of the process that finished it
    }


def count_fields(layer_counts) -> dict:
    """metrics.json's counts: remaining, total and density overall, and each layer's with its density."""
    remaining = sum(c["remaining"] for c in layer_counts.values())
    total = sum(c["total"] for c in layer_counts.values())
    layers = {name: {**c, "density": c["remaining"] / c["total"]} for name, c in layer_counts.items()}
    return {"remaining": remaining, "total": total, "density": remaining / total, "layers": layers}
