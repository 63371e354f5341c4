"""Fetching missing data files from their official sources, with a progress bar and checksums."""

import contextlib
import gzip
import hashlib
import os
import shutil
import tempfile
import time
import urllib.request

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from lottery.errors import LotteryError


def file_digest(path: str, decompress: bool = False, algorithm: str = "md5") -> str:
    """Digest of a file's bytes, or of its gzip-decompressed content."""
    opener = gzip.open if decompress else open
    digest = hashlib.new(algorithm)
    with opener(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# The longest a download may take in all (the official CIFAR-10 archive is 163 MB), and the longest
# one read may wait for bytes: a server that drips a byte every few seconds must not hold a run forever.
DEADLINE_S = 3600.0
READ_TIMEOUT_S = 30.0


def fetch(url: str, destination: str, md5: str = None, deadline_s: float = None) -> None:
    """Download ``url`` to ``destination`` (atomically), checking the md5 of the downloaded bytes.
    The partial file is removed however the download ends (an error, the deadline, Ctrl-C)."""
    deadline_s = DEADLINE_S if deadline_s is None else deadline_s
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=os.path.dirname(destination), suffix=".part")
    began = time.monotonic()
    try:
        timeout = min(READ_TIMEOUT_S, deadline_s)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            columns = (TextColumn(os.path.basename(destination)), BarColumn(), DownloadColumn(), TransferSpeedColumn())
            received = 0
            with Progress(*columns, transient=True) as progress:
                task = progress.add_task("download", total=total)
                # read1: whatever has arrived, so that a slow server cannot keep one read waiting.
                for block in iter(lambda: response.read1(1 << 16), b""):
                    out.write(block)
                    received += len(block)
                    progress.advance(task, len(block))
                    if time.monotonic() - began > deadline_s:
                        raise LotteryError(f"could not download {url}: not finished after {deadline_s:g} s ({received} bytes"
                                           f"{f' of {total}' if total else ''}); the server is too slow")
        if md5 is not None and file_digest(partial) != md5:
            raise LotteryError(f"{url}: downloaded file has the wrong md5 (expected {md5})")
        shutil.move(partial, destination)
    except LotteryError:
        raise
    except Exception as error:  # network errors of every kind end in the same message
        raise LotteryError(f"could not download {url}: {getattr(error, 'reason', None) or error}") from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)


@contextlib.contextmanager
def created_directory(directory: str):
    """Remove ``directory`` again if it did not exist before and a failed download left it empty
    (a user should not find an empty ``<root>/mnist/`` that looks like data)."""
    existed = os.path.isdir(directory)
    try:
        yield
    except BaseException:
        if not existed and os.path.isdir(directory) and not os.listdir(directory):
            os.rmdir(directory)
        raise
