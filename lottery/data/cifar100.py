"""CIFAR-100, binary version: fixed-length records, never the pickled Python version.

Each record is 2 label bytes -- the coarse label (one of 20 superclasses), then the fine label (one
of 100 classes) -- followed by CIFAR-10's 3,072 pixel bytes (the 32x32 red plane, then green, then
blue; ``cifar10.images``). Krizhevsky, "Learning Multiple Layers of Features from Tiny Images"
(2009), and the data set's page, https://www.cs.toronto.edu/~kriz/cifar.html. ``train.bin``
(50,000 records) and ``test.bin`` (10,000) are looked for in the data directory or its
``cifar-100-binary/`` subdirectory (as the official archive unpacks). Each must hold all its
records: a truncated copy is refused, never taken for the whole set (``dataset.subset=N`` trains on
the first N). ``dataset.labels`` chooses the labels: fine (100 classes, the default) or coarse (20).
"""

import os

import numpy as np

from lottery.data import cifar10
from lottery.data.download import DownloadError, failures, read_file, unpack_archive
from lottery.errors import LotteryError

URL = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"
ARCHIVE = "cifar-100-binary.tar.gz"
ARCHIVE_MD5 = "03b5dce01913d631647c71ecec9e9cb8"  # published on the data set's page, beside the URL
SUBDIR = "cifar-100-binary"
RECORDS = {"train.bin": 50_000, "test.bin": 10_000}  # every file's records: a file of other size is refused
LABELS = {"coarse": 20, "fine": 100}  # the label bytes of a record, in their order, and their classes
RECORD = len(LABELS) + cifar10.PIXELS
# What the pickled Python version unpacks as, or is downloaded as: never read, but named when it is
# all there is, so that nobody wonders why their copy of CIFAR-100 is not found.
PICKLED = ("cifar-100-python", "cifar-100-python.tar.gz")

# CIFAR-100's own per-channel statistics of the 50,000 training images (pixels / 255): mean and
# standard deviation over all their pixels, as computed in weiaicunzai/pytorch-cifar100
# (conf/global_settings.py, CIFAR100_TRAIN_MEAN / CIFAR100_TRAIN_STD, commit c14857b; utils.py,
# compute_mean_std), rounded to 4 places. Not computed here: the real files are not in this
# repository. Unlike CIFAR-10, which keeps open_lth's ImageNet constants (cifar10.STATS), no paper
# whose recipe we follow trained on CIFAR-100, so the data set's own statistics are used.
STATS = dict(scale=255.0, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))


def read(path: str, records: int, labels: str = "fine"):
    """Read a binary file of ``records`` records into (images (N, 32, 32, 3) uint8, labels (N,)
    int32), with the ``labels`` ("fine" or "coarse") asked for. Both label bytes are checked."""
    content = read_file(path)
    if len(content) != RECORD * records:
        raise LotteryError(
            f"{path}: {len(content):,} bytes, expected {RECORD * records:,} ({records:,} records of "
            f"{RECORD:,} bytes): truncated, or not CIFAR-100's binary version; delete it to download "
            "it again, or replace it with the official file"
        )
    content = np.frombuffer(content, np.uint8).reshape(records, RECORD)
    for column, (kind, classes) in enumerate(LABELS.items()):
        wrong = content[:, column] >= classes
        if wrong.any():
            first = int(np.argmax(wrong))
            raise LotteryError(
                f"{path}: {kind} label {content[first, column]} in record {first:,}, CIFAR-100's are "
                f"0-{classes - 1}: corrupt, or not the binary version; replace it with a good copy"
            )
    column = list(LABELS).index(labels)
    return cifar10.images(content[:, len(LABELS) :]), content[:, column].astype(np.int32)


def load(directory: str, download: bool = True, labels: str = "fine"):
    missing = [name for name in RECORDS if cifar10.find(directory, name, SUBDIR) is None]
    if missing:
        where = (
            f"put the binary version's {', '.join(RECORDS)} ({ARCHIVE}) in {directory} (or its {SUBDIR}/), or "
            "set dataset.root / LOTTERY_DATA_DIR"
        )
        pickled = [os.path.join(directory, name) for name in PICKLED if os.path.exists(os.path.join(directory, name))]
        if pickled:
            where = f"{', '.join(pickled)}: the pickled Python version, which is never read; {where}"
        if not download:
            raise LotteryError(f"cifar100: no {', '.join(missing)} in {directory} and dataset.download=false; {where}")
        try:
            unpack_archive(
                URL,
                os.path.join(directory, ARCHIVE),
                ARCHIVE_MD5,
                SUBDIR,
                tuple(RECORDS),
                "the CIFAR-100 binary version",
            )
        except DownloadError as error:
            raise LotteryError(
                f"cifar100: no {', '.join(missing)} in {directory}; {failures([error])}; {where}"
            ) from None
    train_x, train_y = read(cifar10.find(directory, "train.bin", SUBDIR), RECORDS["train.bin"], labels)
    test_x, test_y = read(cifar10.find(directory, "test.bin", SUBDIR), RECORDS["test.bin"], labels)
    return train_x, train_y, test_x, test_y, dict(STATS, num_classes=LABELS[labels])
