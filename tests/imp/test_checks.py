"""imp/checks.py: every refusal that needs no device comes before JAX is imported (issue 36): the
config's checks, then the data's (its size: points of training, batch sizes, a method's own)."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, child_env

HEAVY = ("jax", "jaxlib", "flax", "optax", "orbax", "wandb", "pandas", "matplotlib", "sklearn")

# A child that checks configs of every method and model, and the quickstart's with its data, then
# names the heavy libraries it imported.
PROBE = """
import sys
HEAVY = {heavy!r}
from hydra import compose, initialize_config_dir
from lottery.config import CONF
from lottery.errors import LotteryError
from lottery.imp import checks
with initialize_config_dir(config_dir=CONF, version_base="1.3"):
    configs = [compose("config", overrides=o) for o in {overrides!r}]
for cfg in configs:
    checks.check(cfg)
checked = checks.with_data(configs[0])
print("checked", checked.end, checked.per_epoch, len(checked.data.train_x), configs[0].training.batch_size)
try:
    checks.with_data(configs[-1])
except LotteryError as error:
    print("refused", error)
print("imported", sorted(name for name in sys.modules if name.split(".")[0] in HEAVY))
"""


def test_the_checks_of_a_config_and_its_data_import_no_jax():
    overrides = [
        [],
        ["sparsity=rigl"],
        ["sparsity=gmp"],
        ["diet.score=el2n", "rewind=20it"],
        ["early_bird.enabled=true"],
        ["swamp.particles=2"],
        ["pruning.prune_at=start", "pruning.criterion=snip"],
        ["pruning.structure=neurons"],
        ["model=vgg", "dataset=cifar10"],
        ["model=vit", "dataset=cifar10"],
        ["controls=[random_reinit,random_prune,invert]", "lmc.levels=[1]"],
        ["rewind=5000it"],  # last: refused with its data (T is 30 epochs of the digits)
    ]
    probe = PROBE.format(heavy=HEAVY, overrides=overrides)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=child_env(), cwd=REPO)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    word, end, per_epoch, examples, batch = lines[0].split()
    assert word == "checked" and int(per_epoch) == int(examples) // int(batch) and int(end) == 30 * int(per_epoch)
    assert lines[1] == "refused rewind=5000it is at or past the end of training (training.steps=30ep)"
    assert lines[2] == "imported []"


def test_a_refused_command_imports_no_jax_and_is_one_line():
    """``python -X importtime`` lists every module the process imported: none of the heavy ones."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "lottery.run", "rewind=5000it"],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=REPO,
    )
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    errors = [line for line in lines if not line.startswith("import time:")]
    assert errors == ["error: rewind=5000it is at or past the end of training (training.steps=30ep)"]
    imported = {line.split("|")[-1].strip() for line in lines if line.startswith("import time:")}
    assert "lottery.imp.checks" in imported and "lottery.data.digits" in imported  # it did check, with the data
    assert not {name for name in imported if name.split(".")[0] in HEAVY}


def test_the_digits_are_scikit_learns_read_without_importing_it():
    from sklearn.datasets import load_digits

    from lottery.data import digits

    images, labels = digits._read()
    bundled = load_digits()
    assert np.array_equal(images, bundled.images) and np.array_equal(labels, bundled.target)
    assert images.shape == (1797, 8, 8) and os.path.basename(digits.__file__) == "digits.py"


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["sparsity=gmp", "sparsity.update_every=100ep"], "sparsity.update_every=100ep: no pruning step fits"),
        (["sparsity=gmp", "rewind=1it"], "rewind=1it: sparsity.method=gmp trains each level from θ0"),
        (["early_bird.enabled=true", "early_bird.every=30ep"], "early_bird.every=30ep (600 iterations) leaves no"),
        (["diet.score=el2n", "rewind=20it", "diet.pretrain=21it"], "diet.pretrain=21it must be between 1 iteration"),
        (["training.batch_size=100000"], "training.batch_size=100000 must be between 1 and the 1257 training"),
        (["checkpoint_every=0min"], "checkpoint_every=0min must be longer than 0 seconds"),
        (["checkpoint_every=5m"], "checkpoint_every='5m' is not an interval: expected steps (500it, 2ep, 1ep100it) or"),
        (["checkpoint_every=0it"], "checkpoint_every=0it must be longer than 0 iterations"),
    ],
)
def test_a_methods_checks_that_need_the_data_set_run_with_it(overrides, expected):
    from conftest import compose_config

    from lottery.errors import LotteryError
    from lottery.imp import checks

    with pytest.raises(LotteryError) as refused:
        checks.with_data(compose_config(overrides))
    assert str(refused.value).startswith(expected)
