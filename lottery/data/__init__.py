"""Data sets as uint8 arrays that are put on the device whole; batches are gathered there.

``load(cfg)`` returns a ``Dataset`` whose images keep their stored integer values (``scale`` is the
largest one); normalization and augmentation happen inside the compiled training program.
"""

import dataclasses
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
        name=cfg.name,
        train_x=train_x[:cut],
        train_y=train_y[:cut],
        val_x=train_x[cut:],
        val_y=train_y[cut:],
        test_x=test_x,
        test_y=test_y,
        **stats,
    )
