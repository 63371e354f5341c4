"""Reading data files, and fetching missing ones from their official sources.

``unpack_archive`` fetches and checks an official tar.gz archive and unpacks the named files from it.

Every failure is a ``LotteryError`` on one line that names the file or the URL and says what to do:
a corrupt, truncated or unreadable file, a server that cannot be reached, a download that fails,
stalls (``TIMEOUT``) or takes too long (``DEADLINE``). A partial download is removed however
``fetch`` ends; one that a killed process left goes at the next download of that file.
"""

import glob
import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib

import rich
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from lottery.errors import LotteryError

TIMEOUT = 30.0  # seconds a connection, or a read of the response, may wait for the server
DEADLINE = 3600.0  # seconds a whole download may take (CIFAR-10's 170 MB at 50 kB/s: 57 min)

# What reading a corrupt or truncated gzip stream raises: BadGzipFile (an OSError) for a bad header,
# CRC or length, zlib.error inside the deflate stream, EOFError where the stream stops early.
GZIP_ERRORS = (gzip.BadGzipFile, zlib.error, EOFError)


class DownloadError(LotteryError):
    """A download that failed; ``offline`` when no connection to the server could be made at all."""

    def __init__(self, url: str, reason: str, offline: bool = False):
        super().__init__(f"could not download {url}: {reason}")
        self.url, self.reason, self.offline = url, reason, offline


def reason(error: BaseException) -> str:
    """An exception as a short phrase on one line (an OSError's text without the path it names)."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        error = error.reason
    text = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return " ".join(text.split()) or type(error).__name__


def unreadable(path: str, error: BaseException, kind: str = "gzip file") -> LotteryError:
    """The error for a data file that cannot be read: which file, what is wrong, what to do."""
    if isinstance(error, GZIP_ERRORS) or not isinstance(error, OSError):
        what = f"not a readable {kind} ({reason(error)}); it is corrupt or truncated"
        todo = "delete it to download it again, or replace it with a good copy"
    elif isinstance(error, IsADirectoryError):
        what, todo = "cannot be read (it is a directory)", "remove it, or put the file there"
    elif isinstance(error, PermissionError):
        what, todo = "cannot be read (permission denied)", "make it readable (chmod u+r), or replace it"
    else:
        what, todo = (
            f"cannot be read ({reason(error)})",
            "replace it with a good copy, or delete it to download it again",
        )
    return LotteryError(f"{path}: {what}: {todo}")


def read_file(path: str, decompress: bool = False) -> bytes:
    """A file's bytes, or its gzip-decompressed content."""
    try:
        with (gzip.open if decompress else open)(path, "rb") as f:
            return f.read()
    except (OSError, *GZIP_ERRORS) as error:
        raise unreadable(path, error) from None


def file_digest(path: str, decompress: bool = False, algorithm: str = "md5") -> str:
    """Digest of a file's bytes, or of its gzip-decompressed content."""
    digest = hashlib.new(algorithm)
    try:
        with (gzip.open if decompress else open)(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except (OSError, *GZIP_ERRORS) as error:
        raise unreadable(path, error) from None
    return digest.hexdigest()


def failures(errors) -> str:
    """The URLs tried, each with its error, as one clause; says so when none could be reached."""
    tried = "; ".join(f"{error.url}: {error.reason}" for error in errors)
    if errors and all(error.offline for error in errors):
        return (
            f"no connection to {'any mirror' if len(errors) > 1 else 'the server'} (is this machine offline?): {tried}"
        )
    return f"download failed ({tried})"


def fetch(url: str, destination: str, md5: str = None, deadline: float = None, timeout: float = None) -> None:
    """Download ``url`` to ``destination`` (atomically), checking the md5 of the downloaded bytes.

    The transfer runs in a worker thread so that the ``deadline`` (default ``DEADLINE``) holds
    whatever the server does: a read waits at most ``timeout`` (default ``TIMEOUT``), but a server
    that sends a byte now and then, or a stalled name lookup, would never trip that. The partial
    file is removed however this ends (KeyboardInterrupt included), as are the directories this
    call created if they are left empty, and partial files that killed processes left behind.
    """
    deadline = DEADLINE if deadline is None else deadline
    timeout = TIMEOUT if timeout is None else timeout
    directory = os.path.dirname(os.path.abspath(destination))
    created, partial, cancel = [], None, threading.Event()
    try:
        try:
            created = _make_directories(directory)
            _remove_stale_parts(destination, deadline + timeout)
            fd, partial = tempfile.mkstemp(dir=directory, prefix=os.path.basename(destination) + ".", suffix=".part")
        except OSError as error:
            raise DownloadError(url, f"cannot write in {directory} ({reason(error)})") from None
        transfer = _Transfer(url, os.fdopen(fd, "wb"), timeout, cancel)
        columns = (TextColumn(os.path.basename(destination)), BarColumn(), DownloadColumn(), TransferSpeedColumn())
        console = rich.get_console()
        shown = console.is_interactive or console.is_jupyter  # where it can be redrawn: no blank lines in logs
        with Progress(*columns, console=console, transient=True, disable=not shown) as progress:
            transfer.progress, transfer.task = progress, progress.add_task("download", total=None)
            worker = threading.Thread(target=transfer.run, name=f"download {url}", daemon=True)
            worker.start()
            worker.join(deadline)
        if worker.is_alive():
            of = f" of {transfer.total:,}" if transfer.total else ""
            raise DownloadError(url, f"not finished after {deadline:g} s ({transfer.received:,}{of} bytes received)")
        if transfer.error is not None:
            error = transfer.error
            offline = isinstance(error, urllib.error.URLError) and isinstance(error.reason, OSError)
            if isinstance(error.reason if offline else error, TimeoutError):
                raise DownloadError(url, f"no response for {timeout:g} s", offline) from None
            raise DownloadError(url, reason(error), offline) from None
        if transfer.total is not None and transfer.received != transfer.total:
            raise DownloadError(url, f"the connection closed after {transfer.received:,} of {transfer.total:,} bytes")
        if md5 is not None and file_digest(partial) != md5:
            raise DownloadError(url, f"the downloaded file has the wrong md5 (expected {md5})")
        try:
            os.replace(partial, destination)
        except OSError as error:
            raise DownloadError(url, f"cannot write {destination} ({reason(error)})") from None
        created = []  # they hold the file now
    finally:
        cancel.set()  # a worker still waiting on the server stops at its next read
        if partial is not None and os.path.exists(partial):
            os.remove(partial)
        for path in reversed(created):  # deepest first; one that is not empty ends it
            try:
                os.rmdir(path)
            except OSError:
                break


def unpack_archive(url: str, archive: str, md5: str, subdir: str, names, what: str) -> None:
    """Fetch the official ``archive`` from ``url`` unless it is there, check its ``md5`` either way,
    and unpack ``subdir/<name>`` for each of ``names`` beside it (``what``: the data it should hold,
    named in the error when one is missing). Only those regular files are unpacked, at those paths,
    and only whole: they are unpacked into a scratch directory first, so that an archive that ends
    early leaves no partial file of the right name behind."""
    directory = os.path.dirname(archive)
    if not os.path.exists(archive):
        fetch(url, archive, md5=md5)
    elif file_digest(archive) != md5:  # one found here; gzip's own CRC is never read by tarfile
        raise LotteryError(
            f"{archive}: checksum mismatch (md5 should be {md5}); the archive is corrupt or not "
            "the official one: delete it to download it again"
        )
    wanted = {f"{subdir}/{name}" for name in names}
    try:
        scratch = tempfile.mkdtemp(dir=directory, prefix=".unpacking-")
    except OSError as error:
        raise LotteryError(f"cannot unpack {archive}: cannot write in {directory} ({reason(error)})") from None
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.name in wanted and m.isfile()]
            tar.extractall(scratch, members=members, filter="data")
        missing = sorted(wanted - {m.name for m in members})
        if missing:
            raise LotteryError(
                f"{archive}: holds no {', '.join(missing)}; is it {what}? delete it to download it again"
            )
        os.makedirs(os.path.join(directory, subdir), exist_ok=True)
        for member in members:
            os.replace(os.path.join(scratch, member.name), os.path.join(directory, member.name))
    except (tarfile.TarError, *GZIP_ERRORS) as error:  # what tarfile raises for a corrupt or truncated archive
        raise unreadable(archive, error, "tar.gz archive") from None
    except OSError as error:  # reading the archive, or writing the files (a full disk, permissions)
        raise LotteryError(f"cannot unpack {archive} into {directory} ({reason(error)})") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class _Transfer:
    """The worker's side of ``fetch``: response bytes into ``out``; errors are kept, not raised."""

    def __init__(self, url, out, timeout, cancel):
        self.url, self.out, self.timeout, self.cancel = url, out, timeout, cancel
        self.total, self.received, self.error = None, 0, None
        self.progress = self.task = None

    def run(self):
        try:
            with self.out, urllib.request.urlopen(self.url, timeout=self.timeout) as response:
                self.total = int(response.headers.get("Content-Length") or 0) or None
                self.progress.update(self.task, total=self.total)
                # read1: at most one read on the socket, so the loop sees `cancel` between reads.
                while not self.cancel.is_set() and (block := response.read1(1 << 16)):
                    self.out.write(block)
                    self.received += len(block)
                    self.progress.advance(self.task, len(block))
        except BaseException as error:  # fetch reports it, in the caller's thread
            self.error = error


def _make_directories(directory: str):
    """``os.makedirs``, returning the directories it created, outermost first."""
    missing, path = [], os.path.abspath(directory)
    while not os.path.isdir(path) and path != os.path.dirname(path):
        missing.append(path)
        path = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    return missing[::-1]


def _remove_stale_parts(destination: str, age: float) -> None:
    """Remove partial downloads of ``destination`` (and unnamed ones, ``tmp*.part``, as earlier
    versions wrote) untouched for longer than any live download lasts: a process killed mid-download
    (SIGKILL, or SIGTERM before training) left them."""
    directory, name = os.path.dirname(destination), os.path.basename(destination)
    for pattern in (glob.escape(name) + ".*.part", "tmp*.part"):
        for path in glob.glob(os.path.join(glob.escape(directory), pattern)):
            try:
                if time.time() - os.path.getmtime(path) > age:
                    os.remove(path)
            except OSError:
                pass
