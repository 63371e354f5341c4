"""Short LeNet-300-100 runs on the real MNIST (``$LOTTERY_DATA_DIR/mnist``).

Skipped where the files are absent, except with LOTTERY_REQUIRE_MNIST=1 (CI), where it fails.
"""

import concurrent.futures
import io
import os
import signal
import subprocess

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from conftest import REPO, child_env, compose_config
from lottery import data as datasets
from lottery import imp

DATA_ROOT = os.environ.get("LOTTERY_DATA_DIR", os.path.expanduser("~/.cache/lottery"))
HAVE_MNIST = os.path.exists(os.path.join(DATA_ROOT, "mnist", "train-images-idx3-ubyte.gz")) or os.path.exists(
    os.path.join(DATA_ROOT, "mnist", "train-images-idx3-ubyte")
)


@pytest.fixture
def mnist():
    if not HAVE_MNIST:
        if os.environ.get("LOTTERY_REQUIRE_MNIST") == "1":
            pytest.fail(f"MNIST is required (LOTTERY_REQUIRE_MNIST=1) but not found in {DATA_ROOT}/mnist")
        pytest.skip(f"MNIST not found in {DATA_ROOT}/mnist")


@pytest.mark.slow
def test_lenet_on_real_mnist(mnist, tmp_path):
    cfg = compose_config(
        [
            "+exp=lenet",
            "training.steps=300it",
            "levels=1",
            "progress=false",
            f"dataset.root={DATA_ROOT}",
            "dataset.download=false",
            f"output_dir={tmp_path}",
        ]
    )
    level_0, level_1 = imp.run(cfg, console=Console(file=io.StringIO()))
    # F&C's protocol: 55K/5K train/validation, evaluation every 100 iterations.
    assert [r["step"] for r in level_0["history"]] == [100, 200, 300]
    assert level_0["final"]["test_accuracy"] > 0.9 and level_1["final"]["test_accuracy"] > 0.9
    assert level_0["early_stop"]["step"] in (100, 200, 300)
    # One level of layerwise pruning: fc 20%, output 10% of 266,200 weights.
    assert level_1["remaining"] == 188_160 + 24_000 + 900
    assert level_1["layers"]["output/kernel"]["remaining"] == 900


REPRODUCE = "test_the_frankle_carbin_reproduce_script_runs_end_to_end"


@pytest.fixture(scope="module", autouse=True)
def reproduce(request, tmp_path_factory):
    """The reproduce script's command, started with this module's first test (where the files are
    there and its test is one of those run): it runs beside the in-process test above, and its
    test waits for it."""
    if not HAVE_MNIST or not any(item.name == REPRODUCE for item in request.session.items):
        yield None
        return
    tmp_path = tmp_path_factory.mktemp("reproduce")
    script = REPO / "experiments" / "frankle_carbin_2019" / "reproduce.sh"
    env = child_env(RESULTS=str(tmp_path))
    process = subprocess.Popen(
        [
            "bash",
            str(script),
            str(tmp_path / "runs"),
            "training.steps=100it",
            "levels=2",
            f"dataset.root={DATA_ROOT}",
            "dataset.download=false",
            "progress=false",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # read as it runs
        try:
            yield pool.submit(process.communicate), process, tmp_path
        finally:
            if process.poll() is None:  # its test failed or was not reached: stop the script and its commands
                os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.slow
def test_the_frankle_carbin_reproduce_script_runs_end_to_end(mnist, reproduce):
    """experiments/frankle_carbin_2019/reproduce.sh, shortened: tickets and random reinit for 3
    replicates, then the CSV and both figures, written where RESULTS says (not over the record)."""
    outputs, process, tmp_path = reproduce
    _, stderr = outputs.result()
    assert process.returncode == 0, stderr
    df = pd.read_csv(tmp_path / "levels.csv")
    assert sorted(df.groupby("kind").size().items()) == [("random_reinit", 6), ("ticket", 9)]
    assert sorted(df["replicate"].unique()) == [0, 1, 2]
    assert sorted(df["remaining"].unique(), reverse=True) == [266_200, 188_160 + 24_000 + 900, 150_528 + 19_200 + 810]
    assert (df["early_stop_iteration"] == 100).all() and (df["wall_time_s"] > 0).all()
    for figure in ("accuracy_vs_sparsity.png", "early_stopping.png"):
        assert (tmp_path / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_real_mnist_loads_checked_in_frankle_and_carbins_split(mnist):
    cfg = compose_config(["+exp=lenet", f"dataset.root={DATA_ROOT}", "dataset.download=false"])
    data = datasets.load(cfg.dataset)  # the loader checks the files' content checksums
    assert (len(data.train_x), len(data.val_x), len(data.test_x)) == (55_000, 5_000, 10_000)
    assert data.train_x.shape[1:3] == (28, 28) and data.train_x.dtype == np.uint8
    assert sorted(set(data.train_y.tolist())) == sorted(set(data.test_y.tolist())) == list(range(10))
