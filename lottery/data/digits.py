"""scikit-learn's bundled 8x8 handwritten digits (1,797 images): needs no download.

The quickstart's data. There is no official test split, so a fixed one is drawn once (seed 0,
independent of the experiment's seed): 360 test images, the rest for training.
"""

import numpy as np

TEST_SIZE = 360


def load(directory: str = None, download: bool = True):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.uint8)[..., None]  # values 0..16
    labels = digits.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(images))
    train, test = order[:-TEST_SIZE], order[-TEST_SIZE:]
    stats = dict(scale=16.0, mean=(0.3053,), std=(0.3760,))
    return images[train], labels[train], images[test], labels[test], stats
