"""Fetching missing data files from their official sources, with a progress bar and checksums."""

import gzip
import hashlib
import os
import shutil
import tempfile
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


def fetch(url: str, destination: str, md5: str = None) -> None:
    """Download ``url`` to ``destination`` (atomically), checking the md5 of the downloaded bytes."""
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=os.path.dirname(destination), suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            columns = (TextColumn(os.path.basename(destination)), BarColumn(), DownloadColumn(), TransferSpeedColumn())
            with Progress(*columns, transient=True) as progress:
                task = progress.add_task("download", total=total)
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    progress.advance(task, len(block))
        if md5 is not None and file_digest(partial) != md5:
            raise LotteryError(f"{url}: downloaded file has the wrong md5 (expected {md5})")
        shutil.move(partial, destination)
    except LotteryError:
        raise
    except Exception as error:  # network errors of every kind end in the same message
        raise LotteryError(f"could not download {url}: {error}") from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)
