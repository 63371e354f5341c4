"""Replicates of a level trained by one vmapped program vs one after another.

LeNet-300-100 (batch 60, Adam, MNIST-shaped synthetic data) at 20% density: N = 1, 2, 4, 8
members stacked along a leading axis and trained by one compiled program, against the same N
trained one by one with the single-member program.

    python experiments/bench/replicates.py [--steps 1000]
"""

import argparse

import jax

from common import machine, timed
from lottery import training
from masked_step import make_trainer, random_mask


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--model", default="lenet", choices=("lenet", "resnet20"))
    args = parser.parse_args()
    trainer = make_trainer(args.model, masked=True)
    member = lambda i: trainer.init_state(trainer.init_params, trainer.init_batch_stats, random_mask(trainer, 0.2, seed=i))
    print(f"machine: {machine()}")
    print(f"{args.model}, {args.steps} steps per member")
    print(f"{'members':>8s} {'vmapped s':>10s} {'one by one s':>13s} {'speed-up':>9s}")
    for n in (1, 2, 4, 8):
        keys = jax.random.split(jax.random.key(0), 2 * n).reshape(2, n)
        together = {"state": training.stack([member(i) for i in range(n)])}
        alone = [{"state": training.stack([member(i)])} for i in range(n)]

        def vmapped():
            together["state"], loss = trainer.train(together["state"], keys[0], keys[1], 0, args.steps)
            return loss

        def sequential():
            losses = []
            for i, holder in enumerate(alone):
                holder["state"], loss = trainer.train(holder["state"], keys[0, i:i + 1], keys[1, i:i + 1], 0, args.steps)
                losses.append(loss)
            return losses

        v, s = timed(vmapped, repeats=3), timed(sequential, repeats=3)
        print(f"{n:8d} {v:10.2f} {s:13.2f} {s / v:8.2f}x")


if __name__ == "__main__":
    main()
