"""MNIST and Fashion-MNIST in the IDX format, raw or gzip-compressed.

Files are looked for in the data directory as ``train-images-idx3-ubyte`` or
``train-images-idx3-ubyte.gz`` (and the three others). MNIST's decompressed content is checked
against the official md5s on every load; Fashion-MNIST's official md5s are of the ``.gz`` files,
checked when they are downloaded.
"""

import hashlib
import math
import os

import numpy as np

from lottery.data.download import DownloadError, failures, fetch, read_file
from lottery.errors import LotteryError

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
# md5 of the decompressed files and of the official .gz files, in the order of FILES.
MNIST_CONTENT_MD5 = (
    "6bbc9ace898e44ae57da46a324031adb",
    "a25bea736e30d166cdddb491f175f624",
    "2646ac647ad5339dbf082846283269ea",
    "27ae3e4e09519cfbb04c329615203637",
)
MNIST_GZ_MD5 = (
    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "d53e105ee54ea40749a09fcbcd1e9432",
    "9fb629c4189551a2d022fa330f9573f3",
    "ec29112dd5afa0611ce80d1b7f02629c",
)
FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
FASHION_GZ_MD5 = (
    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "25c81989df183df01b3e8a0aad5dffbe",
    "bef4ecab320f06d8554ea6380940ec79",
    "bb300cfdad3c16e7a12a480ee83cd310",
)

_IDX_DTYPES = {0x08: np.uint8}
NUM_CLASSES = 10


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into an array of its declared shape."""
    return parse_idx(path, read_file(path, decompress=path.endswith(".gz")))


def parse_idx(path: str, content: bytes) -> np.ndarray:
    """The array an IDX file's ``content`` declares; ``path`` names the file in errors."""
    if content[:2] == b"\x1f\x8b":
        raise LotteryError(
            f"{path}: gzip-compressed content in a file without .gz: name it {os.path.basename(path)}.gz"
        )
    if len(content) < 4 or content[0] != 0 or content[1] != 0 or content[2] not in _IDX_DTYPES:
        empty = " (the file is empty)" if not content else ""
        raise LotteryError(f"{path}: not an IDX file of unsigned bytes (bad magic number){empty}")
    ndim = content[3]
    header = 4 + 4 * ndim
    if len(content) < header:
        raise LotteryError(f"{path}: IDX header of {ndim} dimensions cut short: {len(content)} of {header} bytes")
    shape = tuple(int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(content) != header + math.prod(shape):
        raise LotteryError(
            f"{path}: IDX header declares shape {shape} but the file holds {len(content) - header} bytes"
        )
    return np.frombuffer(content, np.uint8, offset=header).reshape(shape)


def _locate(directory, name, mirrors, gz_md5, download, dataset):
    for candidate in (name, name + ".gz"):
        path = os.path.join(directory, candidate)
        if os.path.exists(path):
            return path
    expected = ", ".join(f"{f}[.gz]" for f in FILES)
    where = f"put the IDX files ({expected}) in {directory}, or set dataset.root / LOTTERY_DATA_DIR"
    if not download:
        raise LotteryError(f"{dataset}: missing {name}[.gz] in {directory} and dataset.download=false; {where}")
    path = os.path.join(directory, name + ".gz")
    errors = []
    for mirror in mirrors:
        try:
            fetch(mirror + name + ".gz", path, md5=gz_md5)
            return path
        except DownloadError as error:
            errors.append(error)
    raise LotteryError(f"{dataset}: missing {name}[.gz] in {directory}; {failures(errors)}; {where}")


def _load(directory, dataset, mirrors, gz_md5s, content_md5s, download):
    arrays = []
    for i, name in enumerate(FILES):
        path = _locate(directory, name, mirrors, gz_md5s[i], download, dataset)
        # Read once; the format is checked before the checksum, whose message can only say "corrupt".
        content = read_file(path, decompress=path.endswith(".gz"))
        array = parse_idx(path, content)
        if content_md5s is not None and hashlib.md5(content).hexdigest() != content_md5s[i]:
            raise LotteryError(
                f"{path}: checksum mismatch (md5 of the decompressed content should be {content_md5s[i]}); "
                "the file is corrupt or not the official one: delete it to download it again"
            )
        if name.endswith("labels-idx1-ubyte") and array.size and array.max() >= NUM_CLASSES:
            raise LotteryError(f"{path}: label {array.max()} found, labels are 0-{NUM_CLASSES - 1}")
        arrays.append(array)
    train_x, train_y, test_x, test_y = arrays
    for images, labels, split in ((train_x, train_y, "train"), (test_x, test_y, "t10k")):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise LotteryError(
                f"{directory}: {split} images {images.shape} and labels {labels.shape} do not match "
                "(expected (N, rows, cols) images and N labels)"
            )
        if len(images) == 0:
            raise LotteryError(f"{directory}: the {split} files hold no examples")
    if train_x.shape[1:] != test_x.shape[1:]:
        raise LotteryError(
            f"{directory}: train images are {train_x.shape[1]}x{train_x.shape[2]} but t10k images "
            f"{test_x.shape[1]}x{test_x.shape[2]}; both splits must come from the same data set"
        )
    return train_x[..., None], train_y.astype(np.int32), test_x[..., None], test_y.astype(np.int32)


def load_mnist(directory: str, download: bool = True):
    arrays = _load(directory, "mnist", MNIST_MIRRORS, MNIST_GZ_MD5, MNIST_CONTENT_MD5, download)
    # Normalization of open_lth's MNIST data set (datasets/mnist.py: Normalize(mean=[0.1307], std=[0.3081])).
    return (*arrays, dict(scale=255.0, mean=(0.1307,), std=(0.3081,)))


def load_fashion_mnist(directory: str, download: bool = True):
    arrays = _load(directory, "fashion_mnist", FASHION_MIRRORS, FASHION_GZ_MD5, None, download)
    return (*arrays, dict(scale=255.0, mean=(0.2860,), std=(0.3530,)))
