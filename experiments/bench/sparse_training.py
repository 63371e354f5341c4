"""What sparse training's mask updates cost per step, beside a masked IMP step, in one run.

LeNet-300-100 (batch 60, Adam, MNIST-shaped synthetic data) at a density (default 20%, ERK layer
counts), each program timed over the same steps (median of repeats):

  masked       the IMP step (masks in the step, no updates): the baseline
  dense        the same step without masks (the cost of one dense gradient step)
  <m> idle     the program of method m (gmp, set, rigl) with its updates compiled in but none due
               (the masked steps between two updates run as one inner loop: what most steps cost)
  <m> update   the same with an update at every step (what an update step costs)

Ratios: idle / masked (issue 36's target: at most 1.05) and (update - masked) / dense (the extra
cost of an update in dense steps: issue 36's target at most 2).

    python experiments/bench/sparse_training.py [--steps 500] [--density 0.2] [--repeats 5] [--smoke]
"""

import argparse
import json

import jax
import numpy as np

from common import compose_config, machine, timed
from masked_step import make_trainer
from lottery.pruning import masks, sparse
from lottery.training import trainer as training


def updates_for(name, events, trainer, density):
    """A method's compiled updates at ``events`` (GMP: steps done before a pruning; SET/RigL: update iterations)."""
    cfg = compose_config([f"sparsity={name}", "sparsity.distribution=erk", "pruning.strategy=layerwise"])
    method = sparse.METHODS[name]
    schedule = sparse.Schedule(method, np.asarray(events, np.int64), np.full(len(events), 0.3))
    full = masks.full_mask(trainer.init_params)
    names = masks.prunable(trainer.init_params)
    shapes = {n: np.shape(masks.flatten(full)[n]) for n in names}
    total = int(density * sum(np.prod(s) for s in shapes.values()))
    targets = sparse.distribution_counts("erk", shapes, total)
    groups = sparse.groups(cfg, names)
    updates = sparse.Updates(schedule, groups)
    rng = np.random.default_rng(0)
    mask = full if not method.sparse_start else sparse.start_mask(cfg, full, names, targets, rng)
    start = [int(sum(np.sum(masks.flatten(mask)[n]) for n in g)) for g in groups]
    state = trainer.init_state(
        trainer.init_params, trainer.init_batch_stats, mask, sparse=updates.state(start, targets, jax.random.key(3))
    )
    return updates, state


def step_time(trainer, state, steps, repeats):
    keys = jax.random.split(jax.random.key(1), 2)
    holder = {"state": training.stack([state])}

    def run():
        holder["state"], loss = trainer.train(holder["state"], keys[:1], keys[1:], 0, steps)
        return loss

    return timed(run, repeats=repeats) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--density", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the times (ms per step) to this file (device.sh)")
    parser.add_argument("--smoke", action="store_true", help="a few steps of each: checks the script runs")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.repeats = 10, 1
    print(f"machine: {machine()}")
    masked, dense = make_trainer("lenet", True), make_trainer("lenet", False)
    _, idle_state = updates_for("rigl", [10**9], masked, args.density)
    base_mask = idle_state["mask"]
    plain = lambda trainer: trainer.init_state(trainer.init_params, trainer.init_batch_stats, base_mask)
    times = {
        "masked": step_time(masked, plain(masked), args.steps, args.repeats),
        "dense": step_time(dense, plain(dense), args.steps, args.repeats),
    }
    for name in ("rigl",) if args.smoke else ("gmp", "set", "rigl"):  # smoke: one method's two programs
        for label, events in (("idle", [10**9]), ("update", np.arange(1, args.steps + 1))):
            updates, state = updates_for(name, events, masked, args.density)
            times[f"{name} {label}"] = step_time(masked.with_updates(updates), state, args.steps, args.repeats)
    print(f"LeNet-300-100, batch 60, {100 * args.density:g}% density, {args.steps} steps, median of {args.repeats}")
    print(f"{'program':14s} {'ms/step':>9s} {'vs masked':>10s} {'extra / dense step':>19s}")
    for label, seconds in times.items():
        extra = (seconds - times["masked"]) / times["dense"] if label.endswith("update") else float("nan")
        print(f"{label:14s} {1e3 * seconds:9.3f} {seconds / times['masked']:10.2f} {extra:19.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ms_per_step": {label: 1e3 * seconds for label, seconds in times.items()}}, f)


if __name__ == "__main__":
    main()
