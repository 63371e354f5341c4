"""Sparse training from scratch beside IMP (config ``sparsity``; the algorithms: pruning/sparse.py):
each level L trains one network from θ0 at IMP level L's density -- Static (a random mask kept),
GMP (Zhu & Gupta 2017: dense, pruned gradually), SET (Mocanu et al. 2018) and RigL (Evci et al.
2020: a sparse mask whose weights are dropped and regrown during training). Levels do not build on
each other; ``sparsity.levels`` trains only some. A method whose mask moves trains the ticket
alone first, with its mask updates in the step: its controls need the mask it ends with, which is
its ticket (saved on θ0).
"""

from __future__ import annotations

import numpy as np

from lottery import lazy
from lottery.errors import LotteryError
from lottery.imp.method import Method, method, theta_k_start
from lottery.pruning import masks, sparse
from lottery.step import Step
from lottery.training.loop import Network

jax = lazy.module("jax")


@method
class SparseTraining(Method):
    label = "sparse training from scratch"
    between_levels = False  # each level is its own training from θ0
    # nothing of IMP's: each level trains once from θ0 (θ0's optimizer state is a fresh one), by its own rule
    honours = frozenset()

    def __init__(self, context):
        super().__init__(context)
        self.cfg = cfg = context.cfg
        schedule = self.schedule(cfg, context.rewind, context.trainer.iterations_per_epoch, context.end)
        self.updates = sparse.Updates(schedule, sparse.groups(cfg, context.prunable))
        self.updating = context.trainer.with_updates(self.updates) if sparse.dynamic(cfg) else None

    @staticmethod
    def schedule(cfg, rewind: int, per_epoch: int, end: int) -> sparse.Schedule:
        """Its mask updates over [0, end) (refused where none fits), from θ0 (rewind 0)."""
        if rewind != 0:
            raise LotteryError(
                f"rewind={cfg.rewind}: sparsity.method={cfg.sparsity.method} trains each level from θ0; use rewind=0it"
            )
        every = Step.length(cfg.sparsity.update_every, per_epoch, "sparsity.update_every")
        return sparse.Schedule.of(cfg, end, every)

    @classmethod
    def check_data(cls, cfg, checked) -> None:
        cls.schedule(cfg, checked.rewind, checked.per_epoch, checked.end)

    @staticmethod
    def chosen(cfg) -> bool:
        return sparse.method(cfg) is not None

    check_settings = staticmethod(sparse.check)  # its settings' checks that need no data

    @staticmethod
    def switch(cfg) -> str:
        return f"sparsity.method={cfg.sparsity.method}"

    def trains(self, level: int) -> bool:
        return sparse.trains(self.cfg, level)

    def ticket(self, replicate: int, level: int) -> dict:
        """θ0 under the method's start mask (dense for GMP; the level's counts at random positions
        for the others), with what its mask updates read: each group's counts at every update and
        its random key. Once trained, its ticket is the mask it ended with, on θ0 (``saved_start``)."""
        cfg, c = self.cfg, self.context
        full = masks.full_mask(c.trainer.init_params)
        targets = sparse.level_targets(cfg, full, c.prunable, level)
        key = c.sparse_key(replicate, level)
        rng = np.random.default_rng(np.asarray(jax.random.key_data(jax.random.fold_in(key, 0))))
        mask = sparse.start_mask(cfg, full, c.prunable, targets, rng)
        state = theta_k_start(c, replicate, mask)
        if self.updating is not None:
            flat = masks.flatten(mask)
            start = [int(sum(np.sum(flat[name]) for name in group)) for group in self.updates.groups]
            state["sparse"] = self.updates.state(start, targets, jax.random.fold_in(key, 1))
        return state

    def record(self, network: Network, level: int, start_state: dict, finished: dict) -> dict:
        """The method, its distribution, the ticket's counts at the start and end, its mask updates."""
        if network.kind != "ticket":
            return {}
        remaining = lambda mask: sum(c["remaining"] for c in masks.counts(mask, self.context.prunable).values())
        events = self.updates.schedule.events
        return {
            "sparse_training": {
                "method": self.cfg.sparsity.method,
                "distribution": self.cfg.sparsity.distribution,
                "start_remaining": remaining(start_state["mask"]),
                "final_remaining": remaining(finished["mask"]),
                "updates": len(events) if self.updating is not None else 0,
                "update_steps": [int(e) for e in events],
            }
        }

    def saved_start(self, start_state: dict, finished: dict) -> dict:
        if "sparse" not in start_state:  # trained without mask updates: its ticket is the mask it started with
            return start_state
        return {
            **start_state,
            "mask": finished["mask"],
            "params": masks.apply_mask(start_state["params"], finished["mask"]),
        }

    def cost(self, level: int, start: int, end: int, copies: int):
        """One training, θk's k steps included (k = 0: sparse training starts from θ0)."""
        return self.context.rewind + end - start
