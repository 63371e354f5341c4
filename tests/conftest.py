"""Shared helpers: composing configs the way the command line does, and running the command."""

import os
import pathlib
import tempfile
import subprocess
import sys

# The suite runs on the CPU whatever the machine has: its expected values (bitwise comparisons, the
# stored digests of θ0) are the CPU's, and a test that found a GPU would also take 75% of its memory.
# Set before JAX is imported (it reads JAX_PLATFORMS once); the commands the tests start inherit it.
os.environ["JAX_PLATFORMS"] = "cpu"
if "jax" in sys.modules:  # imported by a plugin before this file: still before any backend started
    sys.modules["jax"].config.update("jax_platforms", "cpu")

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

import lottery.config  # noqa: F401,E402  (registers the schema that conf/config.yaml starts from)

# W&B stays off in tests unless a test asks for offline runs itself (tests/commands/test_tracking.py).
os.environ.setdefault("WANDB_MODE", "disabled")
# The compilation cache of the tests' runs stays out of the user's home.
os.environ.setdefault("LOTTERY_JAX_CACHE", os.path.join(tempfile.gettempdir(), "lottery-tests-jax-cache"))

TESTS = pathlib.Path(__file__).resolve().parent
REPO = TESTS.parent
CONF = REPO / "conf"

# tests/ mirrors the package (tests/imp/, tests/data/, ...; docs/tests.md). Test modules import
# helpers and fixtures from each other across folders (``from test_data import make_idx_dataset``),
# whichever folder pytest collects first or alone: every folder is on the path, as tests/ is (this
# file's folder, for ``from conftest import ...`` and ``wandb_records``). Basenames stay unique.
for _folder in sorted(TESTS.iterdir()):
    if _folder.is_dir() and not _folder.name.startswith((".", "_")) and str(_folder) not in sys.path:
        sys.path.append(str(_folder))

# A small, fast experiment on the bundled digits: a few hundred steps per level.
SMALL = ["model.hidden=[64,32]", "training.steps=5ep", "training.eval_every=20it", "levels=2", "progress=false"]


def compose_config(overrides=()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def child_env(**extra):
    """The environment of a command the tests start: this one, without the W&B service that an
    in-process offline run leaves in WANDB_SERVICE (a child attached to it would have its run files
    written by this process's service, asynchronously); on the CPU unless ``extra`` says otherwise."""
    env = {key: value for key, value in os.environ.items() if key != "WANDB_SERVICE"}
    return {**env, "PYTHONUNBUFFERED": "1", "JAX_PLATFORMS": "cpu", **extra}


def run_cli(*args, cwd):
    env = child_env()
    return subprocess.run(
        [sys.executable, "-m", "lottery.run", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture
def small_config(tmp_path):
    """Compose the small experiment with extra overrides, writing results under tmp_path."""

    def make(*overrides):
        return compose_config([*SMALL, f"output_dir={tmp_path / 'runs'}", *overrides])

    return make
