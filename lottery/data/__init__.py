"""Data sets as uint8 arrays that are put on the device whole; batches are gathered there.

``load(cfg)`` returns a ``Dataset`` whose images keep their stored integer values (``scale`` is the
largest one); normalization and augmentation happen inside the compiled training program. ``names()``
are the data sets it knows (digits, MNIST, Fashion-MNIST, CIFAR-10 and its shared subset, CIFAR-100:
one module per file format), ``fingerprint`` the hash of the examples read (part of an experiment's
identity).
"""

import dataclasses
import hashlib
import os
from typing import Callable, Dict, Tuple

import numpy as np

from lottery.errors import LotteryError

__all__ = ["Dataset", "fingerprint", "load", "names"]


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
    num_classes: int = 10  # a loader's stats may say otherwise (CIFAR-100: 100 fine or 20 coarse classes)

    @property
    def input_shape(self) -> Tuple[int, ...]:
        return self.train_x.shape[1:]

    @property
    def examples(self) -> Dict[str, int]:
        """How many examples each split holds (recorded in each result's metrics.json)."""
        return {"train": len(self.train_x), "validation": len(self.val_x), "test": len(self.test_x)}


def _loaders() -> Dict[str, Tuple[Callable, str, Tuple[str, ...]]]:
    """Each data set's loader, the directory below ``dataset.root`` that holds its files, and the
    kinds of label it has (``dataset.labels``): a loader of more than one takes ``labels=``."""
    from lottery.data import cifar10, cifar100, digits, mnist

    return {
        "digits": (digits.load, "digits", ("fine",)),
        "mnist": (mnist.load_mnist, "mnist", ("fine",)),
        "fashion_mnist": (mnist.load_fashion_mnist, "fashion_mnist", ("fine",)),
        "cifar10": (cifar10.load, "cifar10", ("fine",)),
        "cifar10_subset": (cifar10.load_subset, cifar10.SUBSET_DIRECTORY, ("fine",)),
        "cifar100": (cifar100.load, "cifar100", ("fine", "coarse")),
    }


def names():
    return sorted(_loaders())


def load(cfg) -> Dataset:
    """Load ``cfg.name`` from ``<cfg.root>/<its directory>/``, keep the first ``cfg.subset`` training
    examples if set, and hold out the last ``cfg.validation`` of them."""
    loaders = _loaders()
    if cfg.name not in loaders:
        raise LotteryError(f"dataset.name={cfg.name!r} is not a data set; choose one of: {', '.join(names())}")
    loader, name, kinds = loaders[cfg.name]
    labels = cfg.get("labels", "fine")
    if labels not in kinds:
        having = [other for other, (_, _, its) in sorted(loaders.items()) if labels in its]
        raise LotteryError(
            f"dataset.labels={labels} is not a kind of label of {cfg.name}; choose {' or '.join(kinds)}"
            + (f" ({labels} labels: {', '.join(having)})" if having else "")
        )
    directory = os.path.join(os.path.expanduser(cfg.root), name)
    options = {"labels": labels} if len(kinds) > 1 else {}
    train_x, train_y, test_x, test_y, stats = loader(directory, download=cfg.download, **options)
    subset = cfg.get("subset")
    if subset is not None:
        if not 1 <= subset <= len(train_x):
            raise LotteryError(
                f"dataset.subset={subset}: {directory} holds {len(train_x):,} training examples; ask "
                f"for 1 to {len(train_x)}, or leave dataset.subset unset (null) for all of them"
            )
        train_x, train_y = train_x[:subset], train_y[:subset]  # the first ones, the same in every run
    if not 0 <= cfg.validation < len(train_x):
        raise LotteryError(
            f"dataset.validation={cfg.validation} must be between 0 and the {len(train_x)} training examples"
            f"{' of dataset.subset' if subset is not None else ''}; set it lower (e.g. "
            f"dataset.validation={len(train_x) // 10})"
        )
    # The last `validation` training examples are held out, the same ones in every run.
    cut = len(train_x) - cfg.validation
    return Dataset(
        fingerprint=fingerprint(train_x, train_y, test_x, test_y),  # of the examples used: a subset is other data
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
