"""CIFAR-10, binary version: fixed-length records, never the pickled Python version.

Each record is 1 label byte followed by 3,072 bytes of pixels: the 32x32 red plane, then green, then
blue. Files ``data_batch_1.bin`` ... ``data_batch_5.bin`` and ``test_batch.bin`` are looked for in
the data directory or its ``cifar-10-batches-bin/`` subdirectory (as the official archive unpacks).
"""

import gzip
import os
import tarfile
import zlib

import numpy as np

from lottery.data.download import created_directory, fetch
from lottery.errors import LotteryError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILES = ("test_batch.bin",)
RECORD = 1 + 3 * 32 * 32
RECORDS_PER_FILE = 10_000
SUBDIR = "cifar-10-batches-bin"

# Normalization of open_lth's CIFAR-10 data set (datasets/cifar10.py, Dataset.__init__:
# torchvision.transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])): ImageNet's channel
# statistics, not CIFAR-10's own (per-pixel means ~(0.491, 0.482, 0.447), standard deviations
# ~(0.247, 0.243, 0.262); the often copied (0.2023, 0.1994, 0.2010) is close to the mean per-image
# standard deviation). Every experiment on CIFAR-10 uses these. We found no statement of the input
# normalization of Conv-2/4/6 in Frankle & Carbin 2019; Zhou et al.'s 2019 re-implementation only
# divides by 255 (uber-research/deconstructing-lottery-tickets, train.py).
STATS = dict(scale=255.0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def read_batch(path: str):
    """Read one binary batch file into (images (N, 32, 32, 3) uint8, labels (N,) int32)."""
    size = os.path.getsize(path)
    if size != RECORD * RECORDS_PER_FILE:
        raise LotteryError(
            f"{path}: {size} bytes, expected {RECORD * RECORDS_PER_FILE} "
            f"({RECORDS_PER_FILE} records of {RECORD} bytes); is it the CIFAR-10 binary version?"
        )
    records = np.fromfile(path, np.uint8).reshape(RECORDS_PER_FILE, RECORD)
    labels = records[:, 0].astype(np.int32)
    if labels.max() > 9:
        raise LotteryError(f"{path}: label {labels.max()} found, CIFAR-10 labels are 0-9")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _find(directory: str, name: str):
    for candidate in (os.path.join(directory, name), os.path.join(directory, SUBDIR, name)):
        if os.path.exists(candidate):
            return candidate
    return None


def _download(directory: str) -> None:
    archive = os.path.join(directory, "cifar-10-binary.tar.gz")
    with created_directory(directory):
        if not os.path.exists(archive):
            fetch(URL, archive, md5=ARCHIVE_MD5)
    try:
        with tarfile.open(archive) as tar:
            # Only the expected regular files, at their expected paths: nothing else is unpacked.
            wanted = {f"{SUBDIR}/{name}" for name in TRAIN_FILES + TEST_FILES}
            members = [m for m in tar.getmembers() if m.name in wanted and m.isfile()]
            tar.extractall(directory, members=members, filter="data")
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        reason = "; ".join(line.strip("- ") for line in str(error).splitlines())
        raise LotteryError(f"{archive}: cannot be unpacked ({type(error).__name__}: {reason}); the archive is corrupt or "
                           "truncated: delete it to download it again") from None


def load(directory: str, download: bool = True):
    names = TRAIN_FILES + TEST_FILES
    if any(_find(directory, name) is None for name in names):
        where = f"put {', '.join(names)} in {directory} (or its {SUBDIR}/), or set dataset.root / LOTTERY_DATA_DIR"
        if not download:
            raise LotteryError(f"cifar10: missing binary batch files and dataset.download=false; {where}")
        try:
            _download(directory)
        except LotteryError as error:
            raise LotteryError(f"cifar10: missing binary batch files and download failed ({error}); {where}") from None
    train = [read_batch(_find(directory, name)) for name in TRAIN_FILES]
    test_x, test_y = read_batch(_find(directory, TEST_FILES[0]))
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    return train_x, train_y, test_x, test_y, dict(STATS)
