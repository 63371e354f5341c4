"""Iterative magnitude pruning (IMP) with weight rewinding: one experiment, top to bottom.

Level 0 trains the dense network from θ0 for T steps and keeps θk, its weights at the rewind step k.
Each later level L
  1. prunes: magnitude pruning of level L-1's trained weights, under its mask, gives mask_L;
  2. rewinds: the surviving weights are reset to θk (k = 0 is the original reset to θ0 of
     Frankle & Carbin 2019; k > 0 is weight rewinding, Frankle et al. 2020);
  3. trains from step k to T, the learning-rate schedule continuing from k, the data order the
     same as every other level's.

Results go to ``<output_dir>/<name>-<hash>/replicate_<r>/level_<L>/``:
  metrics.json  test accuracy (final and at early stop), densities, the evaluation history
  ticket/       orbax: the mask and the weights training started from (θk ⊙ mask)
  trained/      orbax: the weights and batch statistics after training
and ``level_0/rewind_point/`` holds θk with its batch statistics and optimizer state. A level's
directory appears, by one rename, only when the level is complete: re-running the command skips
finished levels and redoes an interrupted one; asking for more levels continues from the last.
"""

import dataclasses
import os
import re
import shutil
import time
from typing import List

import jax
import numpy as np
from omegaconf import OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from lottery import data as datasets
from lottery import models, pruning, training
from lottery.checkpoint import load_tree, read_json, save_tree, write_json
from lottery.config import experiment_hash
from lottery.errors import LotteryError
from lottery.step import Step


@dataclasses.dataclass
class Experiment:
    cfg: object
    trainer: training.Trainer
    prunable: List[str]  # paths of the prunable tensors
    end: int  # T, the last step of training
    rewind: int  # k, the rewind step
    eval_every: int
    data_key: jax.Array  # epoch orders
    augment_key: jax.Array
    directory: str  # <output_dir>/<name>-<hash>

    @property
    def replicate_dir(self) -> str:
        return os.path.join(self.directory, f"replicate_{self.cfg.replicate}")

    def level_dir(self, level: int) -> str:
        return os.path.join(self.replicate_dir, f"level_{level}")

    # Templates that give orbax the structure, shapes and dtypes to restore.
    def like_weights(self):
        return {"params": self.trainer.init_params, "batch_stats": self.trainer.init_batch_stats}

    def like_ticket(self):
        return {"mask": pruning.full_mask(self.trainer.init_params), **self.like_weights()}

    def like_rewind_point(self):
        return {**self.like_weights(), "opt_state": self.trainer.tx.init(self.trainer.init_params)}


def prepare(cfg) -> Experiment:
    """Check the whole config, load the data and build the model; writes nothing."""
    pruning.check(cfg.pruning)
    models.check(cfg.model)
    tx = training.make_optimizer(cfg.optimizer)
    if cfg.levels < 0:
        raise LotteryError(f"levels={cfg.levels} must be 0 or more (pruning levels after the dense level 0)")
    data = datasets.load(cfg.dataset)
    batch_size = cfg.training.batch_size
    if not 1 <= batch_size <= len(data.train_x):
        raise LotteryError(f"training.batch_size={batch_size} must be between 1 and the {len(data.train_x)} training examples")
    if cfg.training.eval_batch_size < 1:
        raise LotteryError(f"training.eval_batch_size={cfg.training.eval_batch_size} must be positive")
    per_epoch = len(data.train_x) // batch_size
    end = Step.parse(cfg.training.steps, per_epoch, "training.steps").iteration
    if end <= 0:
        raise LotteryError(f"training.steps={cfg.training.steps} must be longer than 0 iterations")
    rewind = Step.parse(cfg.rewind, per_epoch, "rewind").iteration
    if rewind >= end:
        raise LotteryError(f"rewind={cfg.rewind} is at or past the end of training (training.steps={cfg.training.steps})")
    eval_every = Step.parse(cfg.training.eval_every, per_epoch, "training.eval_every").iteration
    if eval_every <= 0:
        raise LotteryError(f"training.eval_every={cfg.training.eval_every} must be longer than 0 iterations")
    schedule = training.make_schedule(cfg.optimizer, cfg.training, per_epoch)

    # Each replicate has its own initialization, data order and augmentation.
    key = jax.random.fold_in(jax.random.key(cfg.seed), cfg.replicate)
    init_key, data_key, augment_key = jax.random.split(key, 3)
    model = models.build(cfg.model, data.input_shape, data.num_classes, init_key)
    trainer = training.Trainer(model, tx, schedule, data, batch_size, cfg.training.eval_batch_size,
                               cfg.dataset.augment, cfg.training.loop)
    prunable = pruning.prunable(trainer.init_params, cfg.pruning.ignore)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", cfg.name).lstrip(".") or "experiment"
    directory = os.path.join(os.path.expanduser(cfg.output_dir), f"{name}-{experiment_hash(cfg)}")
    return Experiment(cfg, trainer, prunable, end, rewind, eval_every, data_key, augment_key, directory)


def run(cfg, console: Console = None) -> List[dict]:
    """Run (or continue) levels 0..cfg.levels; returns each level's metrics and prints the table."""
    console = console or Console()
    experiment = prepare(cfg)
    os.makedirs(experiment.replicate_dir, exist_ok=True)
    config_file = os.path.join(experiment.directory, "config.yaml")
    if not os.path.exists(config_file):
        OmegaConf.save(cfg, config_file, resolve=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not cfg.progress) as progress:
        results = [run_level(experiment, level, progress) for level in range(cfg.levels + 1)]
    console.print(summary_table(results, experiment.directory))
    return results


def run_level(experiment: Experiment, level: int, progress: Progress) -> dict:
    final_dir = experiment.level_dir(level)
    if os.path.isdir(final_dir):  # finished earlier
        return read_json(os.path.join(final_dir, "metrics.json"))
    work_dir = final_dir + ".partial"
    if os.path.isdir(work_dir):  # an interrupted attempt, never finished: start the level again
        shutil.rmtree(work_dir)
    os.makedirs(work_dir)
    cfg, trainer = experiment.cfg, experiment.trainer
    began = time.time()

    if level == 0:
        mask = pruning.full_mask(trainer.init_params)
        state = trainer.init_state(trainer.init_params, trainer.init_batch_stats, mask)
        start = 0
    else:
        # 1. Prune the previous level's trained weights.
        previous = experiment.level_dir(level - 1)
        previous_mask = load_tree(os.path.join(previous, "ticket"), experiment.like_ticket())["mask"]
        trained = load_tree(os.path.join(previous, "trained"), experiment.like_weights())
        mask = pruning.prune(trained["params"], previous_mask, cfg.pruning, experiment.prunable)
        # 2. Rewind the survivors to θk.
        theta_k = load_tree(os.path.join(experiment.level_dir(0), "rewind_point"), experiment.like_rewind_point())
        opt_state = None
        if cfg.rewind_optimizer:
            opt_state = training.mask_optimizer_state(trainer.tx, theta_k["opt_state"], mask)
        state = trainer.init_state(theta_k["params"], theta_k["batch_stats"], mask, opt_state)
        start = experiment.rewind
    ticket = jax.device_get({"mask": state["mask"], "params": state["params"], "batch_stats": state["batch_stats"]})
    save_tree(os.path.join(work_dir, "ticket"), ticket)

    # 3. Train from the rewind step to the end.
    layer_counts = pruning.counts(mask, experiment.prunable)
    density = pruning.density(layer_counts)
    task = progress.add_task(f"level {level} ({density:.1%} of weights)", total=experiment.end - start)
    state, history, rewind_point = train(experiment, state, level, start, lambda n: progress.advance(task, n))
    if rewind_point is not None:
        save_tree(os.path.join(work_dir, "rewind_point"), rewind_point)
    save_tree(os.path.join(work_dir, "trained"), jax.device_get({"params": state["params"], "batch_stats": state["batch_stats"]}))

    metrics = summarize(level, start, history, layer_counts, time.time() - began)
    write_json(os.path.join(work_dir, "metrics.json"), metrics)
    os.rename(work_dir, final_dir)
    return metrics


def train(experiment: Experiment, state, level: int, start: int, advance):
    """Train steps [start, T) in compiled chunks that end at each evaluation (and at k on level 0).

    Returns the final state, the evaluation history and, on level 0, the rewind point θk.
    """
    trainer, end, every, k = experiment.trainer, experiment.end, experiment.eval_every, experiment.rewind
    evaluations = set(range((start // every + 1) * every, end + 1, every)) | {end}
    keep_rewind_point = level == 0
    stops = sorted(evaluations | ({k} if keep_rewind_point and k > start else set()))
    snapshot = lambda s: jax.device_get({key: s[key] for key in ("params", "batch_stats", "opt_state")})
    rewind_point = snapshot(state) if keep_rewind_point and k == start else None
    history, step = [], start
    for stop in stops:
        state, train_loss = trainer.train(state, experiment.data_key, experiment.augment_key, step, stop)
        advance(stop - step)
        step = stop
        if keep_rewind_point and step == k:
            rewind_point = snapshot(state)
        if step not in evaluations:
            continue
        train_loss = float(train_loss)
        if not np.isfinite(train_loss):
            raise LotteryError(f"level {level}: training loss is {train_loss} at step {step}; earlier levels are intact")
        record = {"step": step, "train_loss": train_loss}  # mean training loss since the last record
        for split in ("val", "test"):
            result = trainer.evaluate(state, split)
            if result is not None:
                record[f"{split}_loss"], record[f"{split}_accuracy"] = result
        history.append(record)
    return state, history, rewind_point


def summarize(level: int, start: int, history, layer_counts, seconds: float) -> dict:
    remaining = sum(c["remaining"] for c in layer_counts.values())
    total = sum(c["total"] for c in layer_counts.values())
    early_stop = None
    if history and "val_loss" in history[0]:
        # Early-stopping iteration: minimum validation loss, found after the fact (F&C 2019).
        best = min(history, key=lambda r: r["val_loss"])
        early_stop = {"step": best["step"], "val_loss": best["val_loss"],
                      "test_loss": best["test_loss"], "test_accuracy": best["test_accuracy"]}
    layers = {name: {**c, "density": c["remaining"] / c["total"]} for name, c in layer_counts.items()}
    return {
        "level": level,
        "remaining": remaining,
        "total": total,
        "density": remaining / total,
        "layers": layers,
        "start_step": start,
        "final": history[-1],
        "early_stop": early_stop,
        "history": history,
        "wall_time_s": seconds,
    }


def summary_table(results, directory: str) -> Table:
    table = Table(title=f"IMP results: {directory}")
    for column in ("level", "% weights remaining", "test acc (final)", "test acc (early stop)", "early-stop it"):
        table.add_column(column, justify="right")
    for r in results:
        early = r["early_stop"]
        table.add_row(
            str(r["level"]),
            f"{100 * r['density']:.2f}",
            f"{100 * r['final']['test_accuracy']:.2f}",
            f"{100 * early['test_accuracy']:.2f}" if early else "-",
            str(early["step"]) if early else "-",
        )
    return table
