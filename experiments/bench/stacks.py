"""A level's networks trained in stacks of several widths: networks per second, side by side.

``training.stack=W`` trains W networks of a level in one vmapped program (``Trainer(stack=)``).
This trains the same N networks (20% density, each its own random mask, data order and
augmentation) for a number of steps at each width, in one run: the median and the range of several
timings, networks per second (N / seconds), the speed-up over width 1, and whether network 0 came
out bitwise the same when the other networks of its block are different ones (stack [0, 1, ...]
against [0, N+1, ...] at the same width; it must: a network's bits depend on the width, never on
its mates). LeNet-300-100 (batch 60, Adam, MNIST-shaped synthetic data) or ResNet-20 (batch 128,
SGD, CIFAR-shaped synthetic data).

    python experiments/bench/stacks.py [--networks 8] [--widths 1,2,4,8] [--steps 500] [--model lenet|resnet]
                                       [--repeats 3] [--precision float32|bfloat16] [--json FILE] [--smoke]
"""

import argparse
import json
import time

import jax
import numpy as np

from common import machine
from lottery.training import trainer as training
from masked_step import make_trainer, random_mask

MODELS = {"lenet": "lenet", "resnet": "resnet20"}


def train(trainer, members, keys, steps):
    """Seconds to train the stack of ``members`` for ``steps`` steps, and the trained stack."""
    state = training.stack(members)
    begin = time.perf_counter()
    state, loss = trainer.train(state, keys[0], keys[1], 0, steps)
    jax.block_until_ready((state, loss))
    return time.perf_counter() - begin, state


def first_network(state):
    return [np.asarray(leaf[0]).tobytes() for leaf in jax.tree.leaves(state["params"])]


def peak_bytes():
    """Peak device memory of this process (None where the backend does not report it, e.g. CPU)."""
    stats = jax.devices()[0].memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=8)
    parser.add_argument("--widths", default="1,2,4,8")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--model", default="lenet", choices=sorted(MODELS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--json", help="also write the rows to this file (experiments/bench/device.sh)")
    parser.add_argument(
        "--smoke", action="store_true", help="2 networks, widths 1 and 2, a few steps: checks the script runs"
    )
    args = parser.parse_args()
    if args.smoke:
        args.networks, args.widths, args.steps, args.repeats = 2, "1,2", 3, 1
    widths = [int(w) for w in args.widths.split(",")]
    n = args.networks
    print(f"machine: {machine()}")
    print(
        f"{args.model}, {n} networks x {args.steps} steps, {args.precision}, {args.repeats} timings each "
        f"(median [min-max] s)"
    )
    print(
        f"{'width':>6s} {'seconds':>22s} {'networks/s':>11s} {'speed-up':>9s} {'network 0 bitwise, other mates':>31s}"
    )
    rows, base = [], None
    for width in widths:
        trainer = make_trainer(MODELS[args.model], masked=True, stack=str(width), precision=args.precision)
        member = lambda i: trainer.init_state(
            trainer.init_params, trainer.init_batch_stats, random_mask(trainer, 0.2, seed=i)
        )
        # Keys of networks 0..2N-1: network i has data key i and augmentation key 2N + i.
        keys = jax.random.split(jax.random.key(0), 4 * n).reshape(2, 2 * n)
        members = [member(i) for i in range(n)]
        times, state = [], None
        for attempt in range(args.repeats + 1):  # the first compiles
            seconds, state = train(trainer, members, keys[:, :n], args.steps)
            if attempt:
                times.append(seconds)
        # Network 0 beside other mates: the block of `width` networks [0, N+1, N+2, ...].
        mates = [0] + list(range(n + 1, n + width))
        _, other = train(trainer, [member(i) for i in mates], keys[:, mates], args.steps)
        same = first_network(state) == first_network(other)
        median = float(np.median(times))
        base = base or median
        rows.append(
            dict(
                model=args.model,
                width=width,
                networks=n,
                steps=args.steps,
                seconds=median,
                min=min(times),
                max=max(times),
                networks_per_s=n / median,
                speedup=base / median,
                bitwise=same,
                precision=args.precision,
            )
        )
        print(
            f"{width:6d} {f'{median:.2f} [{min(times):.2f}-{max(times):.2f}]':>22s} {n / median:11.2f} "
            f"{base / median:8.2f}x {str(same):>31s}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "peak_bytes": peak_bytes()}, f)


if __name__ == "__main__":
    main()
