"""Weight averaging inside IMP: SWAMP (Choi, Lee, Oh, Choi & Lee, "SWAMP: Sparse Weight Averaging with
Multiple Particles for Iterative Magnitude Pruning", ICLR 2024, Algorithm 1), config ``swamp``.

At each pruned level the ticket trains as ``swamp.particles`` copies ("particles") from the same
start, each with its own data order and augmentation (particle 0 is the ticket's own; the others
train in the same group, by the same single-network program). Each particle averages its weights
over the epoch ends from ``swamp.average_from`` of training to the end (stochastic weight averaging,
Izmailov et al. 2018; ``average_from=1``: its final weights only), and the level's trained network is
the mean of the particles' averages: evaluated, saved as ``trained/`` and pruned by the next level.
A pruned weight is 0 in every particle, so it is 0 in the average. ``level_L/swamp/particle_<p>/``
keeps each particle's average; ``metrics.json``'s ``swamp`` each particle's test accuracy.

Kept as in the paper: particles from one start with different data orders, uniform averages,
magnitude pruning of the average. Different: level 0 (the dense network, shared by every experiment
of the same training: dense.py) is one network, not averaged; batch-norm statistics are averaged
like the weights instead of recomputed by a pass over the data (SWA's ``bn_update``): exact for
networks without batch norm (LeNet, Conv-2/4/6), an approximation for ResNets and VGG.
"""

from __future__ import annotations

import os
from typing import Dict, List

import numpy as np

from lottery import lazy
from lottery.errors import LotteryError
from lottery.imp.method import Context, Method, Outcome, method
from lottery.results.store import save_tree
from lottery.training import trainer as training
from lottery.training.loop import Network

jax = lazy.module("jax")

PARTICLE = "particle_"  # the kind of particles 1..K-1 while they train (never saved as networks)


def check(cfg) -> None:
    s = cfg.swamp
    if s.particles < 1:
        raise LotteryError(f"swamp.particles={s.particles} must be 1 or more (1: no weight averaging)")
    if not 0 < s.average_from <= 1:
        raise LotteryError(
            f"swamp.average_from={s.average_from} must be in (0, 1]: the fraction of training after "
            "which each particle averages its epoch-end weights (1: final weights only)"
        )
    # the methods it works with: imp/method.py's check (Swamp.works_with)


def particles(context: Context, replicate: int, level: int, ticket: Network) -> List[Network]:
    """Particles 1..K-1 of ``ticket``: its start, each with its own data order and augmentation."""
    out = []
    for p in range(1, context.cfg.swamp.particles):
        key = jax.random.fold_in(jax.random.fold_in(context.keys(replicate)["lmc"], 2**16 + level), p)
        data_key, augment_key = jax.random.split(key)
        out.append(Network(replicate, f"{PARTICLE}{p}", ticket.directory, ticket.state, data_key, augment_key))
    return out


def snapshot_steps(context: Context, start: int, end: int) -> List[int]:
    """The epoch ends in [average_from x T, T) that each particle averages with its final weights."""
    per_epoch = context.trainer.iterations_per_epoch
    first = context.cfg.swamp.average_from * end
    return [s for s in range(per_epoch, end, per_epoch) if s >= first and s > start]


def average(context: Context, networks: List[Network], states, kept: Dict[int, dict], histories) -> Dict[int, dict]:
    """Per replicate with a ticket among ``networks``: the mean of its particles' weight averages
    (``trained``), its evaluation (``history``), and each particle's average (``particles``)."""
    out = {}
    for replicate in sorted({n.replicate for n in networks if n.kind == "ticket"}):
        members = [
            i
            for i, n in enumerate(networks)
            if n.replicate == replicate and (n.kind == "ticket" or n.kind.startswith(PARTICLE))
        ]
        averages = []
        for i in members:  # each particle: its epoch-end weights from average_from, and its final ones
            snapshots = [training.unstack(kept[s], i) for s in sorted(kept)] + [training.unstack(states, i)]
            averages.append(_mean([{k: s[k] for k in ("params", "batch_stats")} for s in snapshots]))
        trained = _mean(averages)
        evaluated = {split: context.trainer.evaluate(training.stack([trained]), split) for split in ("val", "test")}
        record = {
            "step": histories[members[0]][-1]["step"],
            "train_loss": float(np.mean([histories[i][-1]["train_loss"] for i in members])),
        }
        for split, result in evaluated.items():
            if result is not None:
                record[f"{split}_loss"], record[f"{split}_accuracy"] = float(result[0][0]), float(result[1][0])
        tested = context.trainer.evaluate(training.stack(averages), "test")  # each particle's average, one call
        out[replicate] = {
            "trained": trained,
            "history": [record],
            "particles": averages,
            "record": {
                "particles": len(members),
                "average_from": context.cfg.swamp.average_from,
                "snapshots": len(kept) + 1,
                "particle_test_accuracy": None if tested is None else [float(a) for a in tested[1]],
            },
        }
    return out


def save_particles(work_dir: str, averaged: dict) -> None:
    for p, tree in enumerate(averaged["particles"]):
        save_tree(os.path.join(work_dir, "swamp", f"particle_{p}"), tree)


def _mean(trees):
    """The elementwise mean of pytrees of host arrays, in float32, summed in order (deterministic)."""
    return jax.tree.map(
        lambda *leaves: (
            np.sum(np.stack([np.asarray(leaf, np.float32) for leaf in leaves]), axis=0) / np.float32(len(leaves))
        ).astype(np.asarray(leaves[0]).dtype),
        *trees,
    )


@method
class Swamp(Method):
    """Each ticket trained as ``swamp.particles`` particles and replaced by their average."""

    label = "SWAMP"
    makes_tickets = False  # it changes how IMP's (or a transfer's) tickets train
    works_with = ("IMP", "Transfer")  # the average is what the next level prunes, or a transferred ticket's

    check_settings = staticmethod(check)  # its settings' checks that need no data

    @staticmethod
    def switch(cfg) -> str:
        return f"swamp.particles={cfg.swamp.particles}"

    def __init__(self, context):
        super().__init__(context)
        self.copies = context.cfg.swamp.particles

    @staticmethod
    def chosen(cfg) -> bool:
        return cfg.swamp.particles != 1

    def extra_networks(self, replicate: int, level: int, ticket: Network) -> List[Network]:
        return particles(self.context, replicate, level, ticket)

    def keep_steps(self, networks, start: int, end: int) -> List[int]:
        averaging = any(n.kind.startswith(PARTICLE) for n in networks)
        return snapshot_steps(self.context, start, end) if averaging else []

    def after_training(self, networks, states, kept, histories, end: int):
        if not any(n.kind.startswith(PARTICLE) for n in networks):
            return {}
        averaged = average(self.context, networks, states, kept, histories)
        return {
            i: Outcome(
                trained=averaged[n.replicate]["trained"],
                history=averaged[n.replicate]["history"],
                record={"swamp": averaged[n.replicate]["record"]},
                save=lambda work_dir, a=averaged[n.replicate]: save_particles(work_dir, a),
            )
            for i, n in enumerate(networks)
            if n.kind == "ticket" and n.replicate in averaged
        }
