"""The members of a level: one single-network program per member vs one vmapped program.

lottery trains each member of a level (replicates, controls, LMC copies) with the same
single-network compiled program, one after another, so that a network's bits do not depend on what
it is trained beside. A vmapped program (what lottery ran before) batches the members into one
program; XLA then picks reduction and contraction orders by the batched shapes, so a member's bits
change with the size of the group. This measures what the guarantee costs: LeNet-300-100 (batch
60, Adam, MNIST-shaped synthetic data) at 20% density, N = 1, 2, 4, 8 members, both ways, in one
run; the median and the range of several timings each, and whether member 0 came out bitwise the
same as when trained alone.

    python experiments/bench/replicates.py [--steps 1000] [--repeats 5] [--smoke]
"""

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from common import machine
from lottery.training import trainer as training
from masked_step import make_trainer, random_mask


def vmapped_program(trainer):
    """The pre-change program: every member's steps in one vmapped, jitted loop per epoch."""
    train = jax.jit(jax.vmap(trainer._train_impl, in_axes=(0, None, 0, 0, None, None, 0)), donate_argnums=(0,))
    orders = jax.jit(jax.vmap(functools.partial(training.epoch_order, n=len(trainer.train_data[1])), in_axes=(0, None)))

    def run(state, data_keys, augment_keys, start, stop):
        loss = jnp.zeros(training.members_of(state), jnp.float32)
        step = start
        while step < stop:
            epoch = step // trainer.iterations_per_epoch
            end = min(stop, (epoch + 1) * trainer.iterations_per_epoch)
            state, loss = train(state, trainer.train_data, orders(data_keys, epoch), augment_keys, jnp.int32(step),
                                jnp.int32(end), loss)
            step = end
        return state, loss

    return run


def timings(run, members, keys, steps, repeats):
    """Seconds of ``repeats`` timed runs of ``steps`` steps (after one warm-up), and the final state."""
    times, state = [], None
    for attempt in range(repeats + 1):
        state = training.stack(members)
        begin = time.perf_counter()
        state, loss = run(state, keys[0], keys[1], 0, steps)
        jax.block_until_ready((state, loss))
        if attempt:
            times.append(time.perf_counter() - begin)
    return times, state


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="a few steps, 1 and 2 members: checks the script runs")
    args = parser.parse_args()
    sizes = (1, 2) if args.smoke else (1, 2, 4, 8)
    steps, repeats = (5, 1) if args.smoke else (args.steps, args.repeats)
    trainer = make_trainer("lenet", masked=True)
    vmapped = vmapped_program(trainer)
    member = lambda i: trainer.init_state(trainer.init_params, trainer.init_batch_stats, random_mask(trainer, 0.2, seed=i))
    print(f"machine: {machine()}")
    print(f"lenet, {steps} steps per member, {repeats} timings each (median [min-max] seconds)")
    print(f"{'members':>8s} {'one program per member':>24s} {'one vmapped program':>22s} {'vmapped speed-up':>17s} "
          f"{'member 0 bitwise as alone':>26s}")
    alone = None
    for n in sizes:
        keys = jax.random.split(jax.random.key(0), 2 * n).reshape(2, n)
        members = [member(i) for i in range(n)]
        ours, our_state = timings(trainer.train, members, keys, steps, repeats)
        theirs, their_state = timings(vmapped, members, keys, steps, repeats)
        first = lambda state: [np.asarray(leaf[0]).tobytes() for leaf in jax.tree.leaves(state["params"])]
        if n == 1:
            alone = first(our_state)
        same = f"{first(our_state) == alone} / {first(their_state) == alone}"
        spread = lambda t: f"{np.median(t):.2f} [{min(t):.2f}-{max(t):.2f}]"
        print(f"{n:8d} {spread(ours):>24s} {spread(theirs):>22s} {np.median(ours) / np.median(theirs):16.2f}x "
              f"{'ours / vmapped: ' + same:>26s}")


if __name__ == "__main__":
    main()
