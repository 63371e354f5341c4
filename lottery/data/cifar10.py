"""CIFAR-10, binary version: fixed-length records, never the pickled Python version.

Each record is 1 label byte followed by 3,072 bytes of pixels: the 32x32 red plane, then green, then
blue. Files ``data_batch_1.bin`` ... ``data_batch_5.bin`` and ``test_batch.bin`` are looked for in
the data directory or its ``cifar-10-batches-bin/`` subdirectory (as the official archive unpacks).

``cifar10`` (``load``) is the whole data set: each file must hold its 10,000 records, so a
truncated copy is refused, never taken for the full set. ``cifar10_subset`` (``load_subset``) is
asked for by name: part of CIFAR-10 (the first records of a file, fewer files), in files of any
whole number of records, checked against the directory's ``SHA256SUMS`` where there is one (no
published checksum covers part of a file). Its content has its own fingerprint, so it is another
experiment than the full set.
"""

import glob
import os

import numpy as np

from lottery.data.download import DownloadError, failures, file_digest, read_file, unpack_archive
from lottery.errors import LotteryError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
ARCHIVE = "cifar-10-binary.tar.gz"
ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILES = ("test_batch.bin",)
PIXELS = 3 * 32 * 32  # a 32x32 red plane, then green, then blue
RECORD = 1 + PIXELS
RECORDS_PER_FILE = 10_000
SUBDIR = "cifar-10-batches-bin"
# cifar10_subset: <root>/cifar10-subset/, training records in data_batch_*.bin, test records in
# test_batch*.bin (data_batch_1.first4000.bin, test_batch.first1000.bin, data_batch_1.bin, ...).
SUBSET_DIRECTORY = "cifar10-subset"
SUBSET_TRAIN, SUBSET_TEST = "data_batch_*.bin", "test_batch*.bin"
SUMS = "SHA256SUMS"

# Normalization of open_lth's CIFAR-10 data set (datasets/cifar10.py, Dataset.__init__:
# torchvision.transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])): ImageNet's channel
# statistics, not CIFAR-10's own (per-pixel means ~(0.491, 0.482, 0.447), standard deviations
# ~(0.247, 0.243, 0.262); the often copied (0.2023, 0.1994, 0.2010) is close to the mean per-image
# standard deviation). Every experiment on CIFAR-10 uses these. We found no statement of the input
# normalization of Conv-2/4/6 in Frankle & Carbin 2019; Zhou et al.'s 2019 re-implementation only
# divides by 255 (uber-research/deconstructing-lottery-tickets, train.py).
STATS = dict(scale=255.0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def read_batch(path: str, whole_file: bool = True):
    """Read one binary batch file into (images (N, 32, 32, 3) uint8, labels (N,) int32).

    ``whole_file``: an official batch of ``RECORDS_PER_FILE`` records; otherwise any whole number
    of records (part of CIFAR-10, ``load_subset``)."""
    content = read_file(path)
    records, extra = divmod(len(content), RECORD)
    if whole_file and records and not extra and records != RECORDS_PER_FILE:  # part of a batch: never taken for it
        raise LotteryError(
            f"{path}: {records:,} records, not {RECORDS_PER_FILE:,}: for part of CIFAR-10 use "
            "dataset=cifar10_subset (README: Data), else replace it with the official file"
        )
    if whole_file and len(content) != RECORD * RECORDS_PER_FILE:
        raise LotteryError(
            f"{path}: {len(content)} bytes, expected {RECORD * RECORDS_PER_FILE} ({RECORDS_PER_FILE} "
            f"records of {RECORD} bytes): truncated, or not CIFAR-10's binary version; replace it with "
            "the official file"
        )
    if not whole_file and not records:
        raise LotteryError(
            f"{path}: {len(content)} bytes, less than one {RECORD}-byte record; remove it, or replace it "
            "with whole records of CIFAR-10's binary version"
        )
    if not whole_file and extra:
        raise LotteryError(
            f"{path}: {len(content):,} bytes, not whole {RECORD}-byte records ({records:,} and {extra:,} "
            "bytes over): truncated, or not CIFAR-10's binary version; replace it with whole records"
        )
    records = np.frombuffer(content, np.uint8).reshape(records, RECORD)
    labels = records[:, 0].astype(np.int32)
    if labels.max() > 9:
        first = int(np.argmax(labels > 9))
        raise LotteryError(
            f"{path}: label {labels.max()} found (record {first}), CIFAR-10's are 0-9: corrupt, or not "
            "the binary version; replace it with a good copy"
        )
    return images(records[:, 1:]), labels


def find(directory: str, name: str, subdir: str = SUBDIR):
    """``directory/name``, else ``directory/subdir/name`` (as the official archive unpacks), else None."""
    for candidate in (os.path.join(directory, name), os.path.join(directory, subdir, name)):
        if os.path.exists(candidate):
            return candidate
    return None


def images(pixels: np.ndarray) -> np.ndarray:
    """(N, 3,072) pixel bytes of the binary versions (the 32x32 red plane, then green, then blue,
    each row-major) as (N, 32, 32, 3) images."""
    return np.ascontiguousarray(pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _download(directory: str) -> None:
    """Fetch the official archive (unless it is there) and unpack the batch files from it."""
    unpack_archive(
        URL,
        os.path.join(directory, ARCHIVE),
        ARCHIVE_MD5,
        SUBDIR,
        TRAIN_FILES + TEST_FILES,
        "the CIFAR-10 binary version",
    )


def load(directory: str, download: bool = True):
    names = TRAIN_FILES + TEST_FILES
    if any(find(directory, name) is None for name in names):
        where = f"put {', '.join(names)} in {directory} (or its {SUBDIR}/), or set dataset.root / LOTTERY_DATA_DIR"
        if not download:
            raise LotteryError(f"cifar10: missing binary batch files and dataset.download=false; {where}")
        try:
            _download(directory)
        except DownloadError as error:
            raise LotteryError(
                f"cifar10: missing binary batch files in {directory}; {failures([error])}; {where}"
            ) from None
    train = [read_batch(find(directory, name)) for name in TRAIN_FILES]
    test_x, test_y = read_batch(find(directory, TEST_FILES[0]))
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    return train_x, train_y, test_x, test_y, dict(STATS)


def _checksums(directory: str, paths) -> None:
    """Check ``paths`` against ``directory``'s SHA256SUMS (``sha256sum`` format), where there is one:
    every file it lists must be there and match, and every file read must be listed."""
    sums = os.path.join(directory, SUMS)
    if not os.path.exists(sums):
        return
    listed = {}
    for number, line in enumerate(read_file(sums).decode(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        digest, _, name = line.strip().partition(" ")
        name = name.strip().lstrip("*")  # "*name": sha256sum's binary mode
        if len(digest) != 64 or not name:
            raise LotteryError(f"{sums}: line {number} is not '<sha256>  <file>'; fix it, or remove {SUMS}")
        listed[name] = digest.lower()
    for name in sorted(set(listed) - {os.path.basename(p) for p in paths}):
        if name.endswith(".bin"):
            raise LotteryError(
                f"{os.path.join(directory, name)}: listed in {SUMS} but missing (or not named "
                f"{SUBSET_TRAIN} / {SUBSET_TEST}); put it back, or remove its line from {SUMS}"
            )
    for path in paths:
        name = os.path.basename(path)
        if name not in listed:
            raise LotteryError(f"{path}: not listed in {sums}; add its sha256 there (sha256sum), or remove {SUMS}")
        if file_digest(path, algorithm="sha256") != listed[name]:
            raise LotteryError(
                f"{path}: checksum mismatch (sha256 should be {listed[name]}, from {SUMS}); it is "
                "corrupt or not the file listed: replace it with a good copy"
            )


def load_subset(directory: str, download: bool = True):
    """Part of CIFAR-10 (``dataset=cifar10_subset``): the records of every ``data_batch_*.bin`` file
    (training, in file name order) and ``test_batch*.bin`` file (test) in ``directory``, or in its
    ``cifar-10-batches-bin/``; each file any whole number of records. Nothing is downloaded (no
    official source serves a subset), so ``download`` is not used."""
    where = f"put CIFAR-10 binary records there as {SUBSET_TRAIN} and {SUBSET_TEST} files, or set dataset.root"
    if not os.path.isdir(directory):
        raise LotteryError(f"{directory}: no such directory; {where}")
    found = lambda d, pattern: sorted(glob.glob(os.path.join(glob.escape(d), pattern)))
    if not found(directory, "*.bin") and os.path.isdir(os.path.join(directory, SUBDIR)):
        directory = os.path.join(directory, SUBDIR)  # as the official archive unpacks
    train, test = found(directory, SUBSET_TRAIN), found(directory, SUBSET_TEST)
    if not train:
        raise LotteryError(f"{os.path.join(directory, SUBSET_TRAIN)}: no such file (training records); {where}")
    if not test:
        raise LotteryError(f"{os.path.join(directory, SUBSET_TEST)}: no such file (test records); {where}")
    _checksums(directory, train + test)
    train = [read_batch(path, whole_file=False) for path in train]
    test = [read_batch(path, whole_file=False) for path in test]
    return (
        np.concatenate([x for x, _ in train]),
        np.concatenate([y for _, y in train]),
        np.concatenate([x for x, _ in test]),
        np.concatenate([y for _, y in test]),
        dict(STATS),
    )
