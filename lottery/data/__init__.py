"""Data sets as uint8 arrays that are put on the device whole; batches are gathered there.

``load(cfg)`` returns a ``Dataset`` whose images keep their stored integer values (``scale`` is the
largest one); normalization and augmentation happen inside the compiled training program.
"""

import dataclasses
import hashlib
import os
from typing import Callable, Dict, Tuple

import numpy as np

from lottery.errors import LotteryError


@dataclasses.dataclass
class Dataset:
    name: str
    train_x: np.ndarray  # (N, H, W, C) uint8
    train_y: np.ndarray  # (N,) int32
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    scale: float  # pixel value that maps to 1.0
    mean: Tuple[float, ...]  # per channel, after dividing by scale
    std: Tuple[float, ...]
    fingerprint: str = ""  # of the content read (see ``fingerprint``): part of the experiment's identity
    num_classes: int = 10

    @property
    def input_shape(self) -> Tuple[int, ...]:
        return self.train_x.shape[1:]


def _loaders() -> Dict[str, Callable]:
    from lottery.data import cifar10, digits, mnist

    return {
        "digits": digits.load,
        "mnist": mnist.load_mnist,
        "fashion_mnist": mnist.load_fashion_mnist,
        "cifar10": cifar10.load,
    }


def names():
    return sorted(_loaders())


def load(cfg) -> Dataset:
    """Load ``cfg.name`` from ``<cfg.root>/<cfg.name>/`` and hold out ``cfg.validation`` examples."""
    loaders = _loaders()
    if cfg.name not in loaders:
        raise LotteryError(f"dataset.name={cfg.name!r} is not a data set; choose one of: {', '.join(names())}")
    directory = os.path.join(os.path.expanduser(cfg.root), cfg.name)
    train_x, train_y, test_x, test_y, stats = loaders[cfg.name](directory, download=cfg.download)
    if not 0 <= cfg.validation < len(train_x):
        raise LotteryError(
            f"dataset.validation={cfg.validation} must be between 0 and the {len(train_x)} training examples"
        )
    # The last `validation` training examples are held out, the same ones in every run.
    cut = len(train_x) - cfg.validation
    return Dataset(
        fingerprint=fingerprint(train_x, train_y, test_x, test_y),
        name=cfg.name,
        train_x=train_x[:cut],
        train_y=train_y[:cut],
        val_x=train_x[cut:],
        val_y=train_y[cut:],
        test_x=test_x,
        test_y=test_y,
        **stats,
    )


def fingerprint(*arrays) -> str:
    """sha256 of the arrays a data set was read into (dtype, shape and bytes of each): the same
    for the same images and labels whatever files held them (raw or .gz, another directory), and
    different for other data (a subset, another copy, a corrupted file that still parses)."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return "sha256:" + digest.hexdigest()
