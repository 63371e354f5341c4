"""The one lock: an exclusive ``flock`` on a file, held for the process's lifetime or until closed.
The kernel releases it when the process ends, however it ends, so no lock is ever stale. Light
(no JAX): the Optuna callback takes it at Hydra's start-up too."""

import fcntl
import os
import time
from typing import Callable, Optional

from lottery.errors import LotteryError, at

LOCK = "lock"  # the lock file of a directory that one process at a time writes (an experiment, a store)


def acquire(
    path: str, what: str, wait: Optional[Callable[[str], None]] = None, stop: Callable[[], None] = lambda: None
):
    """An exclusive lock on the file ``path``, which guards ``what`` (named in the messages). Held
    by another process: without ``wait``, an error naming the holder; with ``wait``, say so once
    through ``wait`` and try again every half second (``stop`` is called between tries: it raises
    to give up, e.g. when a signal asks the run to stop)."""
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
                raise LotteryError(
                    f"{what} is in use by another process ({holder}); "
                    "wait for it to finish or stop it, then run the command again"
                ) from None
        if not said:
            wait(f"waiting for {what}: another process is working on it ({holder})")
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
