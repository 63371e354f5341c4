"""Part of the real CIFAR-10 (``$LOTTERY_DATA_DIR/cifar10-subset``: records 0-3,999 of the official
data_batch_1.bin and 0-999 of test_batch.bin, with their SHA256SUMS), read as ``dataset=cifar10_subset``.

Skipped where the files are absent, except with LOTTERY_REQUIRE_CIFAR10_SUBSET=1 (CI), where it fails.
"""

import io
import os

import numpy as np
import pytest
from omegaconf import OmegaConf
from rich.console import Console

from conftest import REPO, compose_config
from lottery import data as datasets
from lottery import imp
from lottery.data import cifar10
from lottery.errors import LotteryError

DATA_ROOT = os.environ.get("LOTTERY_DATA_DIR", os.path.expanduser("~/.cache/lottery"))
SUBSET = os.path.join(DATA_ROOT, cifar10.SUBSET_DIRECTORY)
FILES = ("data_batch_1.first4000.bin", "test_batch.first1000.bin")


@pytest.fixture
def shared_subset():
    if not all(os.path.exists(os.path.join(SUBSET, name)) for name in FILES + ("SHA256SUMS",)):
        if os.environ.get("LOTTERY_REQUIRE_CIFAR10_SUBSET") == "1":
            pytest.fail(f"the CIFAR-10 subset is required (LOTTERY_REQUIRE_CIFAR10_SUBSET=1) but not found in {SUBSET}")
        pytest.skip(f"the CIFAR-10 subset is not in {SUBSET}")
    return compose_config(["dataset=cifar10_subset", f"dataset.root={DATA_ROOT}"]).dataset


def test_the_shared_records_load_checked_with_cifar10s_statistics(shared_subset):
    data = datasets.load(shared_subset)  # SHA256SUMS checked
    assert data.examples == {"train": 3600, "validation": 400, "test": 1000}  # 10% held out, as F&C's 5K of 50K
    train_x, train_y = np.concatenate([data.train_x, data.val_x]), np.concatenate([data.train_y, data.val_y])
    # The data README's per-channel means of CIFAR-10, which these 4,000 training images have.
    np.testing.assert_allclose(train_x.mean(axis=(0, 1, 2)) / 255, (0.4916, 0.4818, 0.4447), atol=1e-4)
    for labels in (train_y, data.test_y):
        counts = np.bincount(labels)
        assert len(counts) == 10 and counts.min() > 0.8 * len(labels) / 10  # every class, roughly balanced
    # The fingerprint is of the records read: fewer of them are other data, another experiment.
    shorter = datasets.load(
        compose_config(["dataset=cifar10_subset", f"dataset.root={DATA_ROOT}", "dataset.subset=3999"]).dataset
    )
    assert shorter.examples["train"] == 3599 and shorter.fingerprint != data.fingerprint


def test_the_shared_records_are_never_taken_for_the_whole_of_cifar10(shared_subset, tmp_path):
    # The same bytes under the official names: the full set's reader refuses them and names the opt-in.
    directory = tmp_path / "cifar10"
    os.makedirs(directory)
    for name in cifar10.TRAIN_FILES:
        os.symlink(os.path.join(SUBSET, FILES[0]), directory / name)
    os.symlink(os.path.join(SUBSET, FILES[1]), directory / "test_batch.bin")
    cfg = compose_config(["+exp=conv2", f"dataset.root={tmp_path}", "dataset.download=false"]).dataset
    with pytest.raises(
        LotteryError,
        match=r"data_batch_1\.bin: 4,000 records, not 10,000: for part of CIFAR-10 use "
        r"dataset=cifar10_subset",
    ):
        datasets.load(cfg)


@pytest.mark.slow
def test_conv2_learns_the_shared_records_end_to_end(shared_subset, tmp_path):
    """Conv-2 (F&C 2019) for 20 iterations: 29% ± 2% test accuracy over 4 seeds (chance: 10%)."""
    cfg = compose_config(
        [
            "+exp=conv2",
            "dataset=cifar10_subset",
            f"dataset.root={DATA_ROOT}",
            "training.steps=20it",
            "training.eval_every=20it",
            "levels=1",
            "progress=false",
            f"output_dir={tmp_path}",
        ]
    )
    level_0, _ = imp.run(cfg, console=Console(file=io.StringIO()))
    fingerprint = datasets.load(shared_subset).fingerprint
    assert level_0["examples"] == {"train": 3600, "validation": 400, "test": 1000}
    assert level_0["data_fingerprint"] == fingerprint
    assert level_0["final"]["test_accuracy"] > 0.15
    (directory,) = [d for d in tmp_path.iterdir() if d.name.startswith("conv2-")]
    identity = OmegaConf.to_container(OmegaConf.load(directory / "config.yaml"))
    assert identity["dataset"] == {
        "name": "cifar10_subset",
        "validation": 400,
        "augment": False,
        "fingerprint": fingerprint,
    }
    # experiments/bench/device.sh's section f, on this run (its --smoke skips it): each level's
    # remaining count against the counting rule, from the results alone
    import importlib
    import json
    import sys
    import types

    sys.path.insert(0, str(REPO / "experiments" / "bench"))
    try:
        device = importlib.import_module("device")
        device.cifar(types.SimpleNamespace(directory=str(tmp_path), json=str(tmp_path / "cifar.json")))
    finally:
        sys.path.remove(str(REPO / "experiments" / "bench"))
    with open(tmp_path / "cifar.json") as f:
        levels = json.load(f)["levels"]
    assert [level["level"] for level in levels] == [0, 1] and all(row["remaining"] == row["rule"] for row in levels)
