"""Short LeNet-300-100 runs on the real MNIST (``$LOTTERY_DATA_DIR/mnist``).

Skipped where the files are absent, except with LOTTERY_REQUIRE_MNIST=1 (CI), where it fails.
"""

import io
import os
import subprocess

import pandas as pd
import pytest
from rich.console import Console

from conftest import REPO, child_env, compose_config
from lottery import imp

DATA_ROOT = os.environ.get("LOTTERY_DATA_DIR", os.path.expanduser("~/.cache/lottery"))
HAVE_MNIST = os.path.exists(os.path.join(DATA_ROOT, "mnist", "train-images-idx3-ubyte.gz")) or os.path.exists(
    os.path.join(DATA_ROOT, "mnist", "train-images-idx3-ubyte"))


@pytest.fixture
def mnist():
    if not HAVE_MNIST:
        if os.environ.get("LOTTERY_REQUIRE_MNIST") == "1":
            pytest.fail(f"MNIST is required (LOTTERY_REQUIRE_MNIST=1) but not found in {DATA_ROOT}/mnist")
        pytest.skip(f"MNIST not found in {DATA_ROOT}/mnist")


def test_lenet_on_real_mnist(mnist, tmp_path):
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


def test_the_frankle_carbin_reproduce_script_runs_end_to_end(mnist, tmp_path):
    """experiments/frankle_carbin_2019/reproduce.sh, shortened: tickets and random reinit for 3
    replicates, then the CSV and both figures, written where RESULTS says (not over the record)."""
    script = REPO / "experiments" / "frankle_carbin_2019" / "reproduce.sh"
    env = child_env(RESULTS=str(tmp_path))
    result = subprocess.run(["bash", str(script), str(tmp_path / "runs"), "training.steps=100it", "levels=2",
                             f"dataset.root={DATA_ROOT}", "dataset.download=false", "progress=false"],
                            cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    df = pd.read_csv(tmp_path / "levels.csv")
    assert sorted(df.groupby("kind").size().items()) == [("random_reinit", 6), ("ticket", 9)]
    assert sorted(df["replicate"].unique()) == [0, 1, 2]
    assert sorted(df["remaining"].unique(), reverse=True) == [266_200, 188_160 + 24_000 + 900, 150_528 + 19_200 + 810]
    assert (df["early_stop_iteration"] == 100).all() and (df["wall_time_s"] > 0).all()
    for figure in ("accuracy_vs_sparsity.png", "early_stopping.png"):
        assert (tmp_path / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
