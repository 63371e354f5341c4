"""Every check of an experiment's config that needs no device, run before JAX is imported (this
module imports none of JAX, Flax, optax or orbax: tests/imp/test_checks.py), so that a mistaken setting
is refused at once: ``check``, what needs only the config (cheap enough to run on each job of a
sweep before the first one starts), and ``with_data``, what needs the data set too (its size: the
points of training, batch sizes).
"""

import dataclasses

from lottery import data as datasets
from lottery import models
from lottery.analysis import objective
from lottery.config import check_unused
from lottery.errors import LotteryError
from lottery.imp import method as methods
from lottery.pruning import controls, criteria, masks
from lottery.pruning import structure as structures
from lottery.step import Every, Step
from lottery.training import settings

RETRAIN = ("rewind", "lr_rewind", "finetune")
MAX_NAME = 100  # characters of `name`: it names the results directory and the W&B runs


def check(cfg) -> None:
    """Every check of the config that needs no data: cheap enough to run on each job of a sweep
    before the first one starts."""
    check_unused(cfg)  # a key of a group not in use (a method not chosen): refused alike for every group
    masks.check(cfg.pruning)
    models.check(cfg.model)
    settings.check_optimizer(cfg.optimizer)
    settings.check_precision(cfg.training.precision)
    if cfg.training.stack != "auto":
        settings.stack_width(cfg.training.stack)
    criteria.check(cfg)
    structures.check(cfg)
    methods.check(cfg)  # each method's own settings, then what the chosen ones declare they honour and work with
    if any(level > cfg.levels for level in cfg.sparsity.levels):
        raise LotteryError(f"sparsity.levels={list(cfg.sparsity.levels)} must be levels 1..{cfg.levels}")
    if cfg.retrain not in RETRAIN:
        raise LotteryError(f"retrain={cfg.retrain!r} is not an option; choose one of: {', '.join(RETRAIN)}")
    controls.check(cfg)
    if cfg.levels < 0:
        raise LotteryError(f"levels={cfg.levels} must be 0 or more (pruning levels after the dense level 0)")
    if cfg.replicates < 1:
        raise LotteryError(f"replicates={cfg.replicates} must be 1 or more")
    if any(not 0 <= level <= cfg.levels for level in cfg.lmc.levels):
        raise LotteryError(f"lmc.levels={list(cfg.lmc.levels)} must be levels 0..{cfg.levels}")
    if cfg.lmc.points < 2:
        raise LotteryError(f"lmc.points={cfg.lmc.points} must be 2 or more (the path's two ends, and points between)")
    if not 0 <= cfg.seed < 2**32:  # jax.random.key keeps 32 bits: seed 2**32 would silently be seed 0
        raise LotteryError(f"seed={cfg.seed} must be between 0 and {2**32 - 1}")
    if not 0 < len(cfg.name) <= MAX_NAME:
        raise LotteryError(
            f"name is {len(cfg.name)} characters long; use 1 to {MAX_NAME} (it names the results "
            "directory and the W&B runs)"
        )
    objective.check(cfg)


@dataclasses.dataclass
class Checked:
    """A config checked against its data set (``with_data``): the data (host arrays) and the
    points of training in iterations."""

    data: object  # lottery.data.Dataset
    per_epoch: int  # iterations in an epoch
    end: int  # T
    rewind: int  # k
    finetune_steps: int
    eval_every: int
    checkpoint_every: Every


def with_data(cfg) -> Checked:
    """``check``, then the data loaded (NumPy: no JAX yet) and every check that needs only the
    config and the data: batch sizes, the examples a criterion scores, the points of training and
    a method's own (``Method.check_data``), the model's input."""
    check(cfg)
    data = datasets.load(cfg.dataset)
    batch_size = cfg.training.batch_size
    if not 1 <= batch_size <= len(data.train_x):
        raise LotteryError(
            f"training.batch_size={batch_size} must be between 1 and the {len(data.train_x)} training examples"
        )
    if cfg.pruning.criterion in criteria.ON_DATA and cfg.pruning.examples > len(data.train_x):  # x[:n] quietly fewer
        raise LotteryError(
            f"pruning.examples={cfg.pruning.examples} is more than the {len(data.train_x)} training "
            f"examples of {cfg.dataset.name}; set it to at most {len(data.train_x)}"
        )
    if cfg.training.eval_batch_size < 1:
        raise LotteryError(f"training.eval_batch_size={cfg.training.eval_batch_size} must be positive")
    per_epoch = len(data.train_x) // batch_size
    checked = Checked(data, per_epoch, *lengths(cfg, per_epoch))
    models.check_input(cfg.model, data.input_shape, cfg.dataset.name)
    methods.check_data(cfg, checked)
    return checked


def lengths(cfg, per_epoch: int):
    """The steps of training (T), rewinding (k), fine-tuning, evaluation and checkpoint intervals as
    iterations, ``per_epoch`` iterations to an epoch; refused in one line where one is no point in
    training or the rewind step is not before the end."""
    length = lambda key, text: Step.length(text, per_epoch, key)
    end = length("training.steps", cfg.training.steps)
    rewind = Step.parse(cfg.rewind, per_epoch, "rewind").iteration
    if rewind >= end:
        raise LotteryError(
            f"rewind={cfg.rewind} is at or past the end of training (training.steps={cfg.training.steps})"
        )
    finetune_steps = end - rewind if cfg.finetune_steps is None else length("finetune_steps", cfg.finetune_steps)
    eval_every = length("training.eval_every", cfg.training.eval_every)
    checkpoint_every = Every.parse(cfg.checkpoint_every, per_epoch, "checkpoint_every")
    return end, rewind, finetune_steps, eval_every, checkpoint_every
