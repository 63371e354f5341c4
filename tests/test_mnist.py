"""A short LeNet-300-100 run on the real MNIST (``$LOTTERY_DATA_DIR/mnist``).

Skipped where the files are absent, except with LOTTERY_REQUIRE_MNIST=1 (CI), where it fails.
"""

import io
import os

import pytest
from rich.console import Console

from conftest import compose_config
from lottery import imp

DATA_ROOT = os.environ.get("LOTTERY_DATA_DIR", os.path.expanduser("~/.cache/lottery"))
HAVE_MNIST = os.path.exists(os.path.join(DATA_ROOT, "mnist", "train-images-idx3-ubyte.gz")) or os.path.exists(
    os.path.join(DATA_ROOT, "mnist", "train-images-idx3-ubyte"))


def test_lenet_on_real_mnist(tmp_path):
    if not HAVE_MNIST:
        if os.environ.get("LOTTERY_REQUIRE_MNIST") == "1":
            pytest.fail(f"MNIST is required (LOTTERY_REQUIRE_MNIST=1) but not found in {DATA_ROOT}/mnist")
        pytest.skip(f"MNIST not found in {DATA_ROOT}/mnist")
    cfg = compose_config(["+exp=lenet", "training.steps=300it", "levels=1", "progress=false",
                          f"dataset.root={DATA_ROOT}", "dataset.download=false", f"output_dir={tmp_path}"])
    level_0, level_1 = imp.run(cfg, console=Console(file=io.StringIO()))
    # F&C's protocol: 55K/5K train/validation, evaluation every 100 iterations.
    assert [r["step"] for r in level_0["history"]] == [100, 200, 300]
    assert level_0["final"]["test_accuracy"] > 0.9 and level_1["final"]["test_accuracy"] > 0.9
    assert level_0["early_stop"]["step"] in (100, 200, 300)
    # One level of layerwise pruning: fc 20%, output 10% of 266,200 weights.
    assert level_1["remaining"] == 188_160 + 24_000 + 900
    assert level_1["layers"]["output/kernel"]["remaining"] == 900
