"""The exceptions the command line turns into one line and an exit code, and the one place where
operating-system errors become such a line: the path, what went wrong, and what to do."""

import contextlib
import errno
import os
import re
from typing import Optional


class LotteryError(Exception):
    """Bad input (config, data, results directory): the message names the key, file or value."""


class Preempted(Exception):
    """SIGTERM, SIGUSR2 or Ctrl-C arrived: a checkpoint was written and the run stopped; the same
    command continues. ``signal`` is the signal's name, ``code`` the exit code (128 + its number)."""

    def __init__(self, message: str, signal: str = "SIGTERM", code: int = 143):
        super().__init__(message)
        self.signal, self.code = signal, code


class Terminated(BaseException):
    """SIGTERM or SIGUSR2 outside training (loading data, compiling, writing figures), where no
    checkpoint is due: the command stops at once (raised by run.py's handler, which the training
    loop's own replaces while it trains). A BaseException, as KeyboardInterrupt is, so that no
    ``except Exception`` on the way swallows it."""

    def __init__(self, signal: str, code: int):
        super().__init__(signal)
        self.signal, self.code = signal, code


# What to do about an operating-system error, by errno. Results are written to `.partial` paths and
# renamed into place, and checkpoints are kept two at a time, so none of these loses finished work.
_ADVICE = {
    errno.ENOSPC: "finished results are intact: free some space (or choose another "
    "output_dir) and run the same command to continue where it stopped",
    errno.EDQUOT: "finished results are intact: free some space (or choose another output_dir) "
    "and run the same command to continue where it stopped",
    errno.EROFS: "choose a writable place with output_dir=... (results) or dataset.root=... (data)",
    errno.EACCES: "make it writable (readable, for data) or choose another output_dir=... / dataset.root=...",
    errno.EPERM: "make it writable or choose another output_dir=... / dataset.root=...",
    errno.ENOTDIR: "a part of this path is a file, not a directory; choose another output_dir=... (or move the file)",
    errno.EISDIR: "a directory is in the way of a file; move it away",
    errno.ENAMETOOLONG: "choose a shorter name=... or output_dir=...",
    errno.EMFILE: "raise the limit (ulimit -n) and run the same command again",
    errno.EIO: "check the disk, then run the same command to continue",
}


def os_error(error: BaseException) -> Optional[OSError]:
    """The operating-system error behind ``error``: itself, one in its chain of causes, or one that
    a library (orbax, tensorstore) only quoted in its message, ``[Errno 28] No space left on device``."""
    seen, chain = set(), []
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        if isinstance(error, OSError) and error.errno is not None:
            return error
        error = error.__cause__ or error.__context__
    for link in chain:
        text = str(link)
        code = re.search(r"os_error_code='(\d+)'", text)  # tensorstore's form, behind orbax
        if code:
            path = re.search(r'(?:local file|Failed writing:|Failed reading:) "([^"]+)"', text)
            number = int(code.group(1))
            return OSError(number, os.strerror(number), path.group(1).rstrip("/") if path else None)
        quoted = re.search(r"\[Errno (\d+)\] ([^:'\"\]\n]+?)(?:: '([^']+)')?(?:[\n'\"]|$)", str(link))
        if quoted:
            return OSError(int(quoted.group(1)), quoted.group(2).strip(), quoted.group(3))
    return None


@contextlib.contextmanager
def at(path: str):
    """Name ``path`` in an operating-system error raised inside (a failed ``write`` or ``flush``
    of an open file says ENOSPC without saying which file)."""
    try:
        yield
    except OSError as error:
        if error.filename is None and error.errno is not None:
            raise OSError(error.errno, error.strerror, path) from error
        raise


def describe(error: BaseException) -> Optional[str]:
    """One line for an operating-system error: ``<path>: <reason>; <what to do>``; None if ``error``
    has none behind it."""
    found = os_error(error)
    if found is None:
        return None
    path = found.filename if found.filename is not None else "(no path given)"
    if found.filename2 is not None:
        path = f"{path} -> {found.filename2}"
    advice = _ADVICE.get(found.errno, "")
    reason = found.strerror or errno.errorcode.get(found.errno, str(found.errno))
    return f"{path}: {reason}" + (f"; {advice}" if advice else "")
