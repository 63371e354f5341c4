"""scikit-learn's bundled 8x8 handwritten digits (1,797 images): needs no download.

The quickstart's data. There is no official test split, so a fixed one is drawn once (seed 0,
independent of the experiment's seed): 360 test images, the rest for training.
"""

import importlib.util
import os

import numpy as np

TEST_SIZE = 360


def load(directory: str = None, download: bool = True):
    images, labels = _read()
    images = images.astype(np.uint8)[..., None]  # values 0..16
    labels = labels.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(images))
    train, test = order[:-TEST_SIZE], order[-TEST_SIZE:]
    stats = dict(scale=16.0, mean=(0.3053,), std=(0.3760,))
    return images[train], labels[train], images[test], labels[test], stats


def _read():
    """The images (8x8, values 0..16) and labels of scikit-learn's bundled ``digits.csv.gz``, read
    as ``sklearn.datasets.load_digits`` reads it (64 pixel columns, then the label) without importing
    scikit-learn (1-2 s, more than the rest of a refused command); through it where the file is not
    where its package keeps it."""
    spec = importlib.util.find_spec("sklearn")
    path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz") if spec else ""
    if not os.path.isfile(path):
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images, digits.target
    data = np.loadtxt(path, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1]
