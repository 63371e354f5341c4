"""Early-Bird tickets (You, Li, Xu, Fu, Wang, Chen, Baraniuk, Wang & Lin, "Drawing Early-Bird
Tickets", ICLR 2020, Sec. 3.3 and Algorithm 1), config ``early_bird``.

IMP draws level L+1's mask from level L's weights at the end of training. An early-bird draw takes
it when the mask stops changing: every ``early_bird.every`` steps of level L's training the mask
that the next level would get from the current weights (IMP's rule: magnitude, counts, nested in
level L's mask) is computed, with its distance to the previous one (normalized Hamming distance:
the fraction of prunable weights on which the two masks differ, You et al.'s mask distance); once
the last ``early_bird.window`` distances are all below ``early_bird.epsilon`` (their FIFO queue of
5 and ε = 0.1), the newest mask is the next level's. Level L still trains to the end, so its
accuracy is reported as IMP's; what the draw saves is the training after it, recorded as
``saved_steps`` (a run that only wants the last level's ticket could stop each level there).

Level 0 is the dense network shared by every experiment (dense.py), trained in full once: its draw
trains a probe, the same network from θ0 with the same data order, chunk by chunk, and stops at the
early-bird point (the experiment's training program: bitwise the dense run's trajectory where that
ran with the same ``training.stack`` and loop, as every run on one machine does by default). Levels 1 and above keep
their ticket's weights at each check (``keep``, checkpointed like θk) and draw after training.
Where the masks never settle, the draw is the end of training (IMP's mask), ``reached`` false.
Each draw is ``level_L/early_bird/``: ``mask`` (orbax) and ``metrics.json`` (the checks, their
distances, the step drawn at, the steps saved).
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

from lottery import lazy
from lottery.errors import LotteryError

from lottery.imp.iterative import IMP
from lottery.imp.method import Context, Outcome, method
from lottery.pruning import criteria, masks
from lottery.results.store import fresh, load_tree, read_json, save_tree, write_json
from lottery.step import Step
from lottery.training import loop
from lottery.training import trainer as training
from lottery.training.loop import Network
from lottery.results import paths

jax = lazy.module("jax")

DIRECTORY = "early_bird"
KEYS = ("step", "reached", "checks", "distances", "saved_steps")


def check(cfg) -> None:
    e = cfg.early_bird
    if not e.enabled:
        return
    if not 0 < e.epsilon <= 1:
        raise LotteryError(
            f"early_bird.epsilon={e.epsilon} must be in (0, 1]: the fraction of prunable weights on "
            "which two masks may differ and still count as settled (You et al.: 0.1)"
        )
    if e.window < 1:
        raise LotteryError(
            f"early_bird.window={e.window} must be 1 or more: the consecutive mask distances below "
            "early_bird.epsilon that settle the masks (You et al.: 5)"
        )
    # what it cannot be beside (another criterion or structure, SWAMP, invert): imp/method.py's check


def distance(a, b, names: Sequence[str]) -> float:
    """The fraction of the prunable weights on which masks ``a`` and ``b`` differ."""
    fa, fb = masks.flatten(a), masks.flatten(b)
    differ = sum(int(np.sum(np.asarray(fa[n]) != np.asarray(fb[n]))) for n in names)
    return differ / sum(int(np.size(fa[n])) for n in names)


def settled(distances: Sequence[float], epsilon: float, window: int) -> Optional[int]:
    """The first check at which the last ``window`` consecutive distances are all below ``epsilon``
    (the index into the checks; distance i is between checks i and i+1), or None."""
    for i in range(window - 1, len(distances)):
        if all(d < epsilon for d in distances[i - window + 1 : i + 1]):
            return i + 1
    return None


def every(context) -> int:
    return interval(context.cfg, context.trainer.iterations_per_epoch, context.end)


def interval(cfg, per_epoch: int, end: int) -> int:
    """``early_bird.every`` in iterations, refused where it leaves no check before ``end``."""
    value = Step.length(cfg.early_bird.every, per_epoch, "early_bird.every")
    if value >= end:  # the end itself is the last check: with no check before it, nothing is drawn early
        raise LotteryError(
            f"early_bird.every={cfg.early_bird.every} ({value} iterations) leaves no check "
            f"before the end of training (training.steps={cfg.training.steps}, "
            f"{end} iterations); use a shorter interval"
        )
    return value


def check_steps(context: Context, start: int, end: int) -> List[int]:
    """The steps of [start, end) at which a level's masks are compared (the end is the last check)."""
    return list(range(start + every(context), end, every(context)))


class Draws:
    """The masks a level's weights would give the next level, check by check, until they settle."""

    def __init__(self, context: Context, survivors):
        self.context, self.survivors = context, survivors
        self.masks, self.steps, self.distances, self.found = [], [], [], None

    def add(self, step: int, params) -> bool:
        """The check at ``step`` with the level's weights there; True once the masks have settled."""
        self.masks.append(criteria.prune(params, self.survivors, self.context.cfg.pruning, self.context.prunable))
        self.steps.append(step)
        if len(self.masks) > 1:
            self.distances.append(distance(self.masks[-2], self.masks[-1], self.context.prunable))
        cfg = self.context.cfg.early_bird
        self.found = settled(self.distances, cfg.epsilon, cfg.window)
        return self.found is not None

    def result(self, end: int) -> Tuple[dict, dict]:
        """The mask drawn (the settled one, else the last) and the record of the draw."""
        index = self.found if self.found is not None else len(self.masks) - 1
        cfg = self.context.cfg.early_bird
        return self.masks[index], {
            "step": self.steps[index],
            "reached": self.found is not None,
            "checks": self.steps,
            "distances": self.distances,
            "saved_steps": end - self.steps[index],
            "epsilon": cfg.epsilon,
            "window": cfg.window,
        }


def draw(context: Context, survivors, weights: Sequence[Tuple[int, dict]], end: int) -> Tuple[dict, dict]:
    """The next level's mask from a level's ``weights`` at its checks ((step, params), in order,
    the last at the end of training), and the record of the draw."""
    draws = Draws(context, survivors)
    for step, params in weights:
        if draws.add(step, params):
            break
    return draws.result(end)


def save(directory: str, mask, record: dict) -> None:
    """``<directory>/early_bird/`` (inside a level's directory being written, or alone beside its results)."""
    target = os.path.join(directory, DIRECTORY)
    work = fresh(target + ".partial")
    save_tree(os.path.join(work, "mask"), mask)
    write_json(paths.metrics_file(work), record)
    os.rename(work, target)


def load(context: Context, level_dir: str):
    """A level's early-bird mask (the next level's), or None where it has none yet."""
    target = os.path.join(level_dir, DIRECTORY)
    if not os.path.isdir(target):
        return None
    read_json(paths.metrics_file(target), KEYS)
    return load_tree(os.path.join(target, "mask"), masks.full_mask(context.trainer.init_params))


def probe_level_0(context: Context, replicate: int, dense_directory: str, say=print) -> None:
    """Level 0's draw: the dense network (of the run in ``dense_directory``) trained again from θ0,
    check by check, until its masks settle (or to the end), its early-bird mask saved in
    ``level_0/early_bird/``."""
    end, keys = context.end, context.keys(replicate)
    network = Network(
        replicate,
        "ticket",
        context.level_dir(replicate, 0),
        context.dense_start(replicate),
        keys["data"],
        keys["augment"],
    )
    state, step = training.stack([network.state]), 0
    draws = Draws(context, masks.full_mask(context.trainer.init_params))
    trainer = context.level_0_trainer(dense_directory, say)  # with a data diet's pre-training (diet.py)
    for stop in check_steps(context, 0, end) + [end]:
        state, _, _, _ = loop.train(
            trainer,
            state,
            [network],
            0,
            step,
            stop,
            lambda n: None,
            eval_every=end,
            checkpoint_every=end,
            evaluate=False,
        )
        step = stop
        if draws.add(step, jax.device_get(training.unstack(state, 0)["params"])):
            break
    mask, record = draws.result(end)
    save(context.level_dir(replicate, 0), mask, record)
    say(
        f"level 0, replicate {replicate}: early-bird mask drawn at step {record['step']} of {end}"
        + ("" if record["reached"] else " (the masks never settled: the end of training)")
    )


@method
class EarlyBird(IMP):
    """IMP whose next mask is drawn during a level's training (``early_bird.enabled``)."""

    label = "Early-Bird IMP"
    fallback = False
    # IMP's magnitude pruning of single weights, drawn early: not another criterion or structure
    honours = frozenset({"retrain", "rewind_optimizer"})
    ranks = False  # drawn from earlier weights than the previous level's final ones, which invert reverses

    check_settings = staticmethod(check)  # its settings' checks that need no data

    @staticmethod
    def switch(cfg) -> str:
        return "early_bird.enabled=true"

    @staticmethod
    def chosen(cfg) -> bool:
        return cfg.early_bird.enabled

    def __init__(self, context: Context):
        super().__init__(context)
        every(context)  # a bad interval is refused now, not after the dense level 0

    @staticmethod
    def check_data(cfg, checked) -> None:
        interval(cfg, checked.per_epoch, checked.end)

    def mask(self, replicate: int, level: int):
        """Level ``level``'s mask as the previous level drew it; level 0's by a probe of the dense
        training, run here the first time it is asked for."""
        c = self.context
        previous = c.level_dir(replicate, level - 1)
        mask = load(c, previous)
        if mask is None and level == 1:
            probe_level_0(c, replicate, c.dense_directory())
            mask = load(c, previous)
        if mask is None:
            raise LotteryError(
                f"{previous}: has no early_bird/ draw (trained without early_bird.enabled); delete it and "
                "run this again to train it with the draw"
            )
        return mask

    def keep_steps(self, networks, start: int, end: int) -> List[int]:
        return check_steps(self.context, start, end)  # every level draws the next (the last too: levels may grow)

    def after_training(self, networks, states, kept, histories, end: int):
        """Each ticket's draw from its weights at each check, then at the end."""
        out = {}
        for i, network in enumerate(networks):
            if network.kind == "ticket":
                finished = training.unstack(states, i)
                weights = [(s, training.unstack(kept[s], i)["params"]) for s in sorted(kept)] + [
                    (end, finished["params"])
                ]
                drawn_mask, record = draw(self.context, network.state["mask"], weights, end)
                out[i] = Outcome(
                    record={"early_bird": record}, save=lambda work_dir, m=drawn_mask, r=record: save(work_dir, m, r)
                )
        return out
