"""Inference of structured tickets: the masked dense network vs the compact one it is, side by side.

A unit-structured ticket (``pruning.structure=neurons|channels``) is a smaller dense network:
``lottery.export --compact`` removes its pruned units (pruning/structure.py ``compact``). This
times, for LeNet-300-100 (MNIST-shaped input, neurons) and Conv-2 (CIFAR-shaped, channels and fc
neurons), at several fractions of units kept (random units per layer, the same in both paths):

  masked    the full-width network with pruned units' weights held as zeros (lottery's program)
  compact   the network with the units removed, every layer narrower (same logits: checked here)

each jitted, at batch 1 (latency, ms per forward) and a large batch (examples/s), median of
repeats after a warm-up call, the two paths timed alternately in each round, the speed-up as the
median of per-round ratios. Unstructured tickets at the same weight density run no faster dense;
experiments/bench/sparse_inference.py times them in sparse formats.

    python experiments/bench/structured_inference.py [--batch 1000] [--repeats 7] [--smoke]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from common import compose_config, machine
from lottery import models
from lottery.pruning import masks, structure

SPECS = {"lenet": ("lenet", (28, 28, 1), "neurons"), "conv2": ("conv2", (32, 32, 3), "channels")}


def network(name, keep_fraction, seed=0):
    """(params, compact params, units kept per layer) of a random structured ticket."""
    model_name, shape, kind = SPECS[name]
    cfg = compose_config([f"model={model_name}", f"pruning.structure={kind}"])
    model = models.build(cfg.model, shape, 10, jax.random.key(seed))
    params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    names = masks.prunable(params)
    flat = masks.flatten(params)
    found = structure.Structure(cfg.pruning, names, models.units(cfg.model, {n: a.shape for n, a in flat.items()}))
    rng = np.random.default_rng(seed)
    keep = {}
    for i, layer in enumerate(found.layers):
        kept = np.zeros(layer.count, bool)
        kept[rng.permutation(layer.count)[: max(1, round(keep_fraction * layer.count))]] = True
        keep[i] = kept
    mask = found.with_units({n: np.ones(a.shape, bool) for n, a in flat.items()}, keep)
    masked = {n: np.where(mask[n], a, 0).astype(a.dtype) for n, a in flat.items()}
    _, trees, _ = structure.compact(mask, {"params": masked}, found.layers)
    density = sum(mask[n].sum() for n in names) / sum(mask[n].size for n in names)
    return masked, trees["params"], density, shape


def forward(name):
    """The model's forward pass on flat params of any widths (jitted)."""

    def lenet(p, x):
        x = x.reshape(x.shape[0], -1)
        for i in range(2):
            x = jax.nn.relu(x @ p[f"hidden/{i}/kernel"] + p[f"hidden/{i}/bias"])
        return x @ p["output/kernel"] + p["output/bias"]

    def conv2(p, x):
        for i in range(2):
            x = jax.lax.conv_general_dilated(
                x, p[f"convs/{i}/kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            x = jax.nn.relu(x + p[f"convs/{i}/bias"])
        x = nnx.max_pool(x, (2, 2), strides=(2, 2)).reshape(x.shape[0], -1)
        for i in range(2):
            x = jax.nn.relu(x @ p[f"fc/{i}/kernel"] + p[f"fc/{i}/bias"])
        return x @ p["output/kernel"] + p["output/bias"]

    return jax.jit({"lenet": lenet, "conv2": conv2}[name])


def timed_pair(f, a, b, x, repeats):
    """Median seconds per call of f(a, x) and f(b, x), and the median per-round ratio."""
    jax.block_until_ready((f(a, x), f(b, x)))
    ta, tb = [], []
    for _ in range(repeats):
        for params, out in ((a, ta), (b, tb)):
            start = time.perf_counter()
            jax.block_until_ready(f(params, x))
            out.append(time.perf_counter() - start)
    ratio = np.median(np.asarray(ta) / np.asarray(tb))
    return np.median(ta), np.median(tb), ratio


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--fractions", default="1.0,0.5,0.25,0.1")
    parser.add_argument("--smoke", action="store_true", help="small batch, one repeat: checks the script runs")
    args = parser.parse_args()
    if args.smoke:
        args.batch, args.repeats, args.fractions = 8, 1, "1.0,0.5"
    print(f"machine: {machine()}")
    print(
        f"{'model':6s} {'units kept':>10s} {'weights':>8s} {'batch':>6s} {'masked ms':>10s} {'compact ms':>11s} "
        f"{'speed-up':>9s} {'same logits':>12s}"
    )
    for name in SPECS:
        f = forward(name)
        for fraction in map(float, args.fractions.split(",")):
            masked, compact, density, shape = network(name, fraction)
            masked = jax.device_put(masked)
            compact = jax.device_put(compact)
            for batch in (1, args.batch):
                x = jnp.asarray(np.random.default_rng(1).standard_normal((batch, *shape)), jnp.float32)
                same = bool(np.allclose(f(masked, x), f(compact, x), rtol=1e-4, atol=1e-4))
                tm, tc, ratio = timed_pair(f, masked, compact, x, args.repeats)
                print(
                    f"{name:6s} {100 * fraction:9.0f}% {100 * density:7.2f}% {batch:6d} {1e3 * tm:10.3f} "
                    f"{1e3 * tc:11.3f} {ratio:8.2f}x {str(same):>12s}"
                )


if __name__ == "__main__":
    main()
