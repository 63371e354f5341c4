"""Shared helpers for the benchmarks: composing configs, synthetic data, timing."""

import pathlib
import time

import jax
import numpy as np
from hydra import compose, initialize_config_dir

import lottery.config  # noqa: F401  (registers the config schema)
from lottery.data import Dataset
from lottery.results.provenance import provenance

CONF = pathlib.Path(__file__).resolve().parents[2] / "conf"


def compose_config(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def synthetic(shape, n_train=10_000, n_test=1_000, seed=0) -> Dataset:
    """Random uint8 images and labels of a real data set's shape (CIFAR-10: (32, 32, 3))."""
    rng = np.random.default_rng(seed)
    images = lambda n: rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    labels = lambda n: rng.integers(0, 10, n).astype(np.int32)
    channels = shape[-1]
    return Dataset(
        "synthetic",
        images(n_train),
        labels(n_train),
        images(0),
        labels(0),
        images(n_test),
        labels(n_test),
        scale=255.0,
        mean=(0.5,) * channels,
        std=(0.25,) * channels,
    )


def timed(function, *args, repeats=5):
    """Median wall time of ``function(*args)`` (results blocked on), after one warm-up call."""
    jax.block_until_ready(function(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def machine() -> str:
    """One line of where a benchmark ran (``lottery.results.provenance``): CPU, cores, device, jax, commit."""
    p = provenance()
    commit = f", commit {p['commit'][:7]}{' (dirty)' if p['dirty'] else ''}" if p["commit"] else ""
    return f"{p['cpu'] or p['platform']}, {p['cpus']} cores, {p['backend']} ({p['device']}), jax {p['jax']}{commit}"
