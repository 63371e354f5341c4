"""Iterative magnitude pruning (IMP) with weight rewinding: one experiment, top to bottom.

Level 0 trains the dense network from θ0 for T steps and keeps θk, its weights at the rewind step k
(once for every experiment that differs only in how it prunes, rewinds and retrains: dense.py).
Each later level L
  1. prunes: magnitude pruning of level L-1's trained weights, under its mask, gives mask_L;
  2. rewinds: the surviving weights are reset to θk (k = 0 is the original reset to θ0 of
     Frankle & Carbin 2019; k > 0 is weight rewinding, Frankle et al. 2020) -- or, with
     ``retrain``, keeps the trained weights (Renda et al. 2020: ``lr_rewind``, ``finetune``);
  3. trains from step k to T, the learning-rate schedule continuing from k, the data order the
     same as every other level's.

Every replicate is its own IMP trajectory (initialization, data order, masks). At each level the
tickets of all replicates and their controls (``random_reinit``: the ticket's mask on fresh initial
weights; ``random_prune``: a random mask with the ticket's counts, from θk; the ablations of
controls.py) are trained as one group,
stacked along a leading axis and checkpointed together, each by the same single-network compiled
program, so that a network's bits never depend on what it was trained beside. At the levels in
``lmc.levels``, two more copies per replicate train from the level's start with different data
orders, and the test error along the line between them gives the level's instability (``lmc.py``).

Results go to ``<output_dir>/<name>-<hash>/replicate_<r>/level_<L>/``:
  metrics.json  test accuracy (final and at early stop), densities, the evaluation history
  ticket/       orbax: the mask and the weights training started from (θk ⊙ mask)
  trained/      orbax: the weights and batch statistics after training
  rewind_point/ (level 0) orbax: θk with its batch statistics and optimizer state (level 0 is linked
                from the shared dense run, ``<output_dir>/dense/``: dense.py)
  random_reinit/, random_prune/   the controls, laid out the same way
  lmc/          copy_a/, copy_b/ (orbax: the two trained copies), metrics.json (error along the
                path at lmc.points points, barrier) and path.png
Each of these directories appears, by one rename, only when it is complete: re-running the command
skips finished work and redoes interrupted work; asking for more levels, replicates, controls or
LMC levels adds to the same experiment. ``config.yaml`` holds the experiment's identity (what the
hash is of) and ``invocations.jsonl`` what each invocation asked for, ran on and added (record.py);
``objectives.json`` the values config ``objective`` asked of the finished results (objective.py).
"""

import dataclasses
import glob
import os
import re
import shutil
import sys
from typing import Dict, List, Optional

import jax
import numpy as np
from flax import nnx
from omegaconf import OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lottery import analysis, controls, criteria, dense, distributed, driver, layout, lmc, models, objective, pruning, record, report, tickets, tracking, training, transfer
from lottery.driver import Job, group_checkpoints, train
from lottery import data as datasets
from lottery.checkpoint import LMC_KEYS, NETWORK_KEYS, load_tree, read_json, save_tree, write_json
from lottery.config import CONTROLS, experiment_hash
from lottery.errors import LotteryError, Preempted
from lottery.step import Step

RETRAIN = ("rewind", "lr_rewind", "finetune")


@dataclasses.dataclass
class Experiment:
    cfg: object
    trainer: training.Trainer
    prunable: List[str]  # paths of the prunable tensors
    end: int  # T, the last step of training
    rewind: int  # k, the rewind step
    finetune_steps: int
    eval_every: int
    checkpoint_every: int
    input_shape: tuple
    num_classes: int
    directory: str  # <output_dir>/<name>-<hash>
    tracker: tracking.Tracker
    data_fingerprint: str  # of the data's content, part of the hash (lottery.data.fingerprint)
    invocation: Optional[record.Invocation] = None  # this invocation's record, once the directory is locked
    transfer_source: Optional[str] = None  # the experiment whose tickets the levels start from (transfer.py)

    def keys(self, replicate: int) -> Dict[str, jax.Array]:
        """The PRNG keys of one replicate: its initialization, data order, augmentation, controls."""
        key = jax.random.fold_in(jax.random.key(self.cfg.seed), replicate)
        init, data, augment, controls, copies = jax.random.split(key, 5)
        return {"init": init, "data": data, "augment": augment, "controls": controls, "lmc": copies}

    def scoring_rng(self, replicate: int, level: int) -> np.random.Generator:
        """The generator of criteria that draw (random), one stream per replicate and level."""
        key = jax.random.fold_in(self.keys(replicate)["init"], 2**20 + level)  # `init` itself is never folded
        return np.random.default_rng(np.asarray(jax.random.key_data(key)))

    def scoring_context(self, replicate: int, level: int, weights: dict, mask) -> criteria.Context:
        """What a criterion scores at ``level``: ``weights`` (params and batch statistics) under
        ``mask``, the model (batch norm with its running statistics), the first ``pruning.examples``
        training examples (data-dependent criteria) and a generator (random)."""
        x, y = self.trainer.train_host
        n = self.cfg.pruning.examples
        return criteria.Context(weights["params"], mask, self.prunable, self.scoring_rng(replicate, level),
                                apply=criteria.model_apply(self.trainer, weights["batch_stats"]),
                                batch=(np.asarray(self.trainer.inputs(x[:n])), np.asarray(y[:n])),
                                input_shape=tuple(self.input_shape))

    def initial_weights(self, key):
        model = models.build(self.cfg.model, self.input_shape, self.num_classes, key)
        return {"params": nnx.to_pure_dict(nnx.state(model, nnx.Param)),
                "batch_stats": nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))}

    def dense_start(self, replicate: int) -> dict:
        """The training state level 0 starts from: θ0 of ``replicate``, dense."""
        theta_0 = self.initial_weights(self.keys(replicate)["init"])
        return self.trainer.init_state(theta_0["params"], theta_0["batch_stats"], pruning.full_mask(theta_0["params"]))

    def level_dir(self, replicate: int, level: int) -> str:
        return os.path.join(self.directory, f"replicate_{replicate}", f"level_{level}")

    def segment(self, level: int):
        """The steps [start, end) that ``level`` trains."""
        if level == 0:
            return 0, self.end
        if self.cfg.retrain == "finetune":
            return self.end, self.end + self.finetune_steps
        return self.rewind, self.end

    def like(self, what: str) -> dict:
        """The structure, shapes and dtypes orbax restores a saved ``what`` to: ``ticket`` (mask and
        starting weights), ``trained`` (final weights), ``rewind_point`` (θk with its optimizer
        state), or ``copy_a`` / ``copy_b`` (an LMC measurement's two trained copies)."""
        weights = {"params": self.trainer.init_params, "batch_stats": self.trainer.init_batch_stats}
        return {
            "ticket": lambda: {"mask": pruning.full_mask(self.trainer.init_params), **weights},
            "trained": lambda: weights,
            "rewind_point": lambda: {**weights, "opt_state": self.trainer.tx.init(self.trainer.init_params)},
            "copy_a": lambda: weights,
            "copy_b": lambda: weights,
        }[what]()

    def load(self, directory: str, what: str) -> dict:
        """One saved checkpoint of a network's directory: ``<directory>/<what>`` (``like``)."""
        return load_tree(os.path.join(directory, what), self.like(what))

    def rewind_point(self, replicate: int) -> dict:
        """θk of ``replicate``: the dense level 0's state at the rewind step."""
        return self.load(self.level_dir(replicate, 0), "rewind_point")



MAX_NAME = 100  # characters of `name`: it names the results directory and the W&B runs


def check(cfg) -> None:
    """Every check of the config that needs no data: cheap enough to run on each job of a sweep
    before the first one starts."""
    pruning.check(cfg.pruning)
    models.check(cfg.model)
    training.make_optimizer(cfg.optimizer)
    criteria.check(cfg)
    transfer.check(cfg)
    if cfg.retrain not in RETRAIN:
        raise LotteryError(f"retrain={cfg.retrain!r} is not an option; choose one of: {', '.join(RETRAIN)}")
    for control in cfg.controls:
        if control not in CONTROLS:
            raise LotteryError(f"controls: {control!r} is not a control; choose from: {', '.join(CONTROLS)}")
    if cfg.levels < 0:
        raise LotteryError(f"levels={cfg.levels} must be 0 or more (pruning levels after the dense level 0)")
    if cfg.replicates < 1:
        raise LotteryError(f"replicates={cfg.replicates} must be 1 or more")
    if any(not 0 <= level <= cfg.levels for level in cfg.lmc.levels) or cfg.lmc.points < 2:
        raise LotteryError(f"lmc.levels={list(cfg.lmc.levels)} must be levels 0..{cfg.levels} and lmc.points >= 2")
    if not 0 <= cfg.seed < 2**32:  # jax.random.key keeps 32 bits: seed 2**32 would silently be seed 0
        raise LotteryError(f"seed={cfg.seed} must be between 0 and {2**32 - 1}")
    if not 0 < len(cfg.name) <= MAX_NAME:
        raise LotteryError(f"name is {len(cfg.name)} characters long; use 1 to {MAX_NAME} (it names the results "
                           "directory and the W&B runs)")
    objective.check(cfg)


def prepare(cfg) -> Experiment:
    """Check the whole config, load the data and build the model; writes nothing."""
    check(cfg)
    tx = training.make_optimizer(cfg.optimizer)
    data = datasets.load(cfg.dataset)
    batch_size = cfg.training.batch_size
    if not 1 <= batch_size <= len(data.train_x):
        raise LotteryError(f"training.batch_size={batch_size} must be between 1 and the {len(data.train_x)} training examples")
    if cfg.training.eval_batch_size < 1:
        raise LotteryError(f"training.eval_batch_size={cfg.training.eval_batch_size} must be positive")
    per_epoch = len(data.train_x) // batch_size

    def length(key: str, text: str) -> int:
        iterations = Step.parse(text, per_epoch, key).iteration
        if iterations <= 0:
            raise LotteryError(f"{key}={text} must be longer than 0 iterations")
        return iterations

    end = length("training.steps", cfg.training.steps)
    rewind = Step.parse(cfg.rewind, per_epoch, "rewind").iteration
    if rewind >= end:
        raise LotteryError(f"rewind={cfg.rewind} is at or past the end of training (training.steps={cfg.training.steps})")
    finetune_steps = end - rewind if cfg.finetune_steps is None else length("finetune_steps", cfg.finetune_steps)
    eval_every = length("training.eval_every", cfg.training.eval_every)
    checkpoint_every = length("checkpoint_every", cfg.checkpoint_every)
    schedule = training.make_schedule(cfg.optimizer, cfg.training, per_epoch)

    models.check_input(cfg.model, data.input_shape, cfg.dataset.name)
    model = models.build(cfg.model, data.input_shape, data.num_classes, jax.random.key(0))  # a template
    distributed.check(cfg.mesh, jax.device_count())
    trainer = training.Trainer(model, tx, schedule, data, batch_size, cfg.training.eval_batch_size,
                               cfg.dataset.augment, cfg.training.loop, mesh=cfg.mesh)
    prunable = pruning.prunable(trainer.init_params, cfg.pruning.ignore)
    source = None
    if cfg.transfer.source is not None:
        if rewind != 0:
            raise LotteryError(f"rewind={cfg.rewind}: a transfer experiment trains its tickets from step 0 (their start "
                               "weights are the source's); use rewind=0it")
        source = transfer.source_directory(cfg, data.fingerprint)
        cfg = OmegaConf.create(OmegaConf.to_container(cfg))  # a copy: the caller's config stays as given
        cfg.transfer.source = source  # hashed by its config.yaml, recorded as resolved
    directory = experiment_directory(cfg, data.fingerprint)
    tracker = tracking.Tracker(cfg, directory, enabled=distributed.primary())  # process 0 logs for all
    experiment = Experiment(cfg, trainer, prunable, end, rewind, finetune_steps, eval_every, checkpoint_every,
                            data.input_shape, data.num_classes, directory, tracker, data.fingerprint,
                            transfer_source=source)
    if source is not None:
        transfer.check_source(experiment)
    return experiment


def experiment_directory(cfg, data_fingerprint: str) -> str:
    """``<output_dir>/<name>-<hash>``: where an experiment keeps its results."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", cfg.name).lstrip(".") or "experiment"
    return os.path.join(os.path.expanduser(cfg.output_dir), f"{name}-{experiment_hash(cfg, data_fingerprint)}")


class Results(list):
    """The metrics of every trained network, ordered by level, replicate, kind (ticket first), and
    the value of the objective config ``objective`` names (None: none, or not process 0)."""

    objective: Optional[float] = None


def run(cfg, console: Console = None) -> Results:
    """Run (or continue) levels 0..cfg.levels of every replicate; print and return the results."""
    console = console or report.console()
    distributed.initialize(cfg.distributed)  # before JAX's first computation
    if cfg.compilation_cache:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(cfg.compilation_cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    experiment = prepare(cfg)
    cfg = experiment.cfg  # as prepared (a transfer's source resolved)
    if not distributed.primary():  # process 0 reports for all
        console = Console(quiet=True)
    if distributed.primary() and not os.path.isdir(experiment.directory):
        for older in record.older_versions(experiment.directory, cfg, experiment.data_fingerprint):
            console.print(f"note: {older} holds this experiment as an older version of lottery hashed it (with keys "
                          "since removed); its results stay there, and this one starts afresh in "
                          f"{experiment.directory}")
    identify = lambda: record.write_identity(experiment.directory, cfg, experiment.data_fingerprint)
    lock = layout.open_locked(experiment.directory, identify, "this experiment")
    try:
        return run_locked(experiment, console)
    finally:
        if lock is not None:
            lock.close()


def run_locked(experiment: Experiment, console: Console) -> Results:
    cfg = experiment.cfg
    invocation = experiment.invocation = record.Invocation(experiment.directory, cfg,
                                                           record.program(experiment.trainer.host_loop, cfg.mesh),
                                                           write=distributed.primary())
    if invocation.other_programs() and glob.glob(os.path.join(experiment.directory, "replicate_*", "level_*")):
        others = "; ".join(", ".join(f"{k} {v}" for k, v in p.items()) for p in invocation.other_programs())
        now = ", ".join(f"{k} {v}" for k, v in invocation.program.items())
        console.print(f"note: results in {experiment.directory} were also trained by another program ({others}); "
                      f"this invocation trains with {now}: their bits are not comparable (README: Reproducibility)")
    record_sweep_job(experiment.directory)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    trained = 0  # networks trained by this invocation
    try:
        with driver.PREEMPTION, Progress(*columns, console=console, disable=not cfg.progress or console.quiet) as progress:
            for level in range(cfg.levels + 1):
                distributed.barrier(f"level {level}")  # what process 0 finished is on disk for everyone
                if level == 0:
                    trained += dense_level(experiment, progress)
                else:
                    jobs = [job for r in range(cfg.replicates) for job in level_jobs(experiment, r, level)]
                    train_jobs(experiment, jobs, level, *experiment.segment(level), progress)
                    trained += len(jobs)
                if level in cfg.lmc.levels:
                    distributed.barrier(f"lmc {level}")
                    trained += run_lmc(experiment, level, progress)
                if driver.PREEMPTION.agreed() and level < cfg.levels:
                    raise driver.PREEMPTION.stop(f"stopped after level {level}")
    except Preempted:
        experiment.tracker.abort()
        invocation.end("preempted")
        driver.PREEMPTION.pass_on()  # under submitit: requeue the job and exit (SystemExit)
        raise
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, nothing failed
        experiment.tracker.abort()
        invocation.end("interrupted")
        raise
    except BaseException as error:
        experiment.tracker.abort()
        invocation.end(f"failed: {type(error).__name__}: {error}".splitlines()[0])
        raise
    invocation.end("finished")
    distributed.barrier("finished")
    results = Results(collect(experiment))
    if not distributed.primary():
        return results
    shutil.rmtree(os.path.join(experiment.directory, "checkpoints"), ignore_errors=True)  # all finished
    df = analysis.load_runs(experiment.directory)
    measured = objective.measure(cfg, df)  # config `objective`'s value (objective.py), or why the results lack it
    outcome = None  # the W&B summary: what a W&B sweep optimizes, or why it is missing
    if isinstance(measured, objective.Objective):
        outcome = {"objective": measured.value, "objective/spec": measured.key}
    elif measured is not None:
        outcome = {"objective/error": str(measured)}
    similarity = None  # how alike the masks are, for W&B (lottery/tickets.py; report shows it too)
    if experiment.tracker.enabled and cfg.levels > 0 and trained:  # a re-run of finished work: no new runs
        similarity = tickets.similarity_table(experiment.directory, ("replicates", "kinds"), kinds=None, layers=False)
    experiment.tracker.finish(df, summary=outcome, similarity=similarity)
    figure = os.path.join(experiment.directory, "accuracy_vs_sparsity.png")
    if trained or not os.path.exists(figure):  # a re-run of finished work rewrites nothing
        analysis.save_figures(df, experiment.directory)
    summary = analysis.summarize(df)
    console.print(report.table(summary, title=f"IMP results: {experiment.directory}", experiment_column=False))
    console.print(f"figures: {os.path.join(experiment.directory, '*.png')}")
    results.objective = objective.report(measured, experiment.directory, console)  # prints, writes; raises if missing
    return results


def record_sweep_job(directory: str) -> None:
    """Under a Hydra multirun, leave a pointer to the experiment in the job's directory, so that
    ``lottery.report`` and ``load_runs`` find a sweep's experiments from the sweep directory."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN and distributed.primary():
        job_dir = HydraConfig.get().runtime.output_dir
        os.makedirs(job_dir, exist_ok=True)
        with open(os.path.join(job_dir, analysis.POINTER), "w") as f:
            f.write(os.path.abspath(directory))


# --- what each level trains --------------------------------------------------------------------


def dense_level(experiment: Experiment, progress: Progress) -> int:
    """Level 0: each replicate's dense network, from the dense runs shared by every experiment that
    differs from this one only in how it prunes, rewinds and retrains (``lottery/dense.py``: trained
    there once, with θk for every k asked for). Returns the networks this experiment gained."""
    missing = []
    for r in range(experiment.cfg.replicates):
        directory = experiment.level_dir(r, 0)
        if os.path.isdir(directory):  # finished work must be readable before more is built on it
            read_json(os.path.join(directory, "metrics.json"), NETWORK_KEYS)
        else:
            missing.append(r)
    for metrics in dense.provide(experiment, missing, progress):
        if distributed.primary():
            experiment.invocation.add(level=0, replicate=metrics["replicate"], kind="ticket", dense=metrics["dense"])
            experiment.tracker.log_history(metrics["replicate"], "ticket", 0, metrics["history"])
            experiment.tracker.log_level(metrics)
            warn_at_chance(experiment, metrics)
    return len(missing)


def level_jobs(experiment: Experiment, replicate: int, level: int) -> List[Job]:
    """The ticket and controls of ``replicate`` still to train at ``level``."""
    cfg = experiment.cfg
    ticket_dir = experiment.level_dir(replicate, level)
    to_train = [c for c in cfg.controls if level > 0 and not os.path.isdir(os.path.join(ticket_dir, c))]
    ticket_done = os.path.isdir(ticket_dir)
    finished = [ticket_dir] if ticket_done else []
    finished += [os.path.join(ticket_dir, c) for c in cfg.controls if level > 0 and c not in to_train]
    for directory in finished:  # finished work must be readable before more is built on it or reported
        read_json(os.path.join(directory, "metrics.json"), NETWORK_KEYS)
    if ticket_done and not to_train:
        return []
    keys = experiment.keys(replicate)
    job = lambda kind, directory, state: Job(replicate, kind, directory, state, keys["data"], keys["augment"])
    state = ticket_start(experiment, replicate, level)
    jobs = [] if ticket_done else [job("ticket", ticket_dir, state)]
    from_theta_k = lambda mask: rewound(experiment, replicate, mask)
    for control in to_train:  # lottery/controls.py
        jobs.append(job(control, os.path.join(ticket_dir, control),
                        controls.start(experiment, replicate, level, control, state, from_theta_k)))
    return jobs


def ticket_start(experiment: Experiment, replicate: int, level: int) -> dict:
    """The ticket's training state at the start of ``level``: prune, then rewind (or keep)."""
    cfg, trainer = experiment.cfg, experiment.trainer
    this_level = experiment.level_dir(replicate, level)
    if os.path.isdir(this_level):  # finished; its controls and LMC copies need its start
        ticket = experiment.load(this_level, "ticket")
        if cfg.retrain != "rewind":
            return trainer.init_state(ticket["params"], ticket["batch_stats"], ticket["mask"])
        return rewound(experiment, replicate, ticket["mask"])

    if experiment.transfer_source is not None:  # no pruning: the mask of another experiment's ticket (transfer.py)
        return rewound(experiment, replicate, transfer.mask(experiment, replicate, level))
    if cfg.pruning.prune_at == "start":  # pruning before training: from θk, straight to this level's counts
        return rewound(experiment, replicate, pruned_at_start(experiment, replicate, level))

    # 1. Prune the previous level's trained weights (IMP: by magnitude; any criterion of criteria.py).
    previous = experiment.level_dir(replicate, level - 1)
    previous_mask = experiment.load(previous, "ticket")["mask"]
    trained = experiment.load(previous, "trained")
    scores = criteria.score(cfg.pruning.criterion, experiment.scoring_context(replicate, level, trained, previous_mask))
    mask = pruning.prune_by_scores(scores, previous_mask, cfg.pruning, experiment.prunable)
    if cfg.retrain != "rewind":  # Renda et al. 2020: keep the trained weights
        return trainer.init_state(trained["params"], trained["batch_stats"], mask)
    # 2. Rewind the survivors to θk.
    return rewound(experiment, replicate, mask)


def pruned_at_start(experiment: Experiment, replicate: int, level: int):
    """Pruning before training (``pruning.prune_at=start``): the mask of ``level`` scored on the
    weights training starts from (θk; θ0 with rewind=0), in ``pruning.rounds`` rounds whose counts
    shrink exponentially from dense to exactly IMP's counts at this level (one round: one shot;
    SynFlow's schedule with more), each round re-scoring under the mask so far."""
    cfg = experiment.cfg.pruning
    theta_k = experiment.rewind_point(replicate)
    full = pruning.full_mask(theta_k["params"])
    keep = pruning.level_counts(full, cfg, experiment.prunable, level)
    context = experiment.scoring_context(replicate, level, theta_k, full)
    return criteria.iterate_to_counts(cfg.criterion, context, pruning.groups(experiment.prunable, cfg.strategy), keep,
                                      cfg.rounds)


def rewound(experiment: Experiment, replicate: int, mask, dense: bool = False) -> dict:
    """A network that starts from θk under ``mask``: θk ⊙ mask, θk's batch statistics, and with
    ``rewind_optimizer`` θk's optimizer state with the moments of pruned weights zeroed (else a
    fresh one). The ticket, the random-prune control and the LMC copies all start this way, so
    they are trained alike. In a transfer experiment θk is the source's start weights
    (transfer.py); ``dense``: this experiment's own (level 0's LMC copies)."""
    trainer = experiment.trainer
    if experiment.transfer_source is not None and not dense:
        start = transfer.start_weights(experiment, replicate)
        return trainer.init_state(start["params"], start["batch_stats"], mask)
    theta_k = experiment.rewind_point(replicate)
    opt_state = None
    if experiment.cfg.rewind_optimizer:
        opt_state = training.mask_optimizer_state(trainer.tx, theta_k["opt_state"], mask)
    return trainer.init_state(theta_k["params"], theta_k["batch_stats"], mask, opt_state)


# --- training a level's jobs together -----------------------------------------------------------


def train_jobs(experiment: Experiment, jobs: List[Job], level: int, start: int, end: int, progress: Progress) -> None:
    """Train ``jobs`` over [start, end) as one group: chunk by chunk, each network by the
    single-member program (its bits do not depend on the others), checkpointed together."""
    if not jobs:
        return
    states = training.stack([job.state for job in jobs])
    density = pruning.density(pruning.counts(jobs[0].state["mask"], experiment.prunable))
    kinds = ", ".join(sorted({job.kind for job in jobs}))
    task = progress.add_task(f"level {level} ({density:.1%} of weights): {len(jobs)} x {kinds}", total=end - start)
    checkpoints = group_checkpoints(experiment.directory, "train", level, jobs, start, end)
    states, histories, _, seconds = train(experiment, states, jobs, level, start, end, lambda n: progress.advance(task, n),
                                          checkpoints=checkpoints, say=progress.console.print)
    for i, job in sorted(enumerate(jobs), key=lambda item: item[1].kind != "ticket"):  # tickets' dirs first
        save_job(experiment, job, level, start, training.unstack(states, i), histories[i], seconds, len(jobs))
    checkpoints.close()
    if distributed.primary():
        shutil.rmtree(checkpoints.directory, ignore_errors=True)



def save_job(experiment: Experiment, job: Job, level: int, start: int, finished, history, seconds, group_size: int):
    """Write a job's results to ``<directory>.partial`` and rename it into place."""
    work_dir = layout.fresh(job.directory + ".partial")
    start_state = jax.device_get(job.state)
    save_tree(os.path.join(work_dir, "ticket"), {key: start_state[key] for key in ("mask", "params", "batch_stats")})
    save_tree(os.path.join(work_dir, "trained"), {key: finished[key] for key in ("params", "batch_stats")})
    layer_counts = pruning.counts(start_state["mask"], experiment.prunable)
    metrics = layout.summarize(level, job.replicate, job.kind, start, history, layer_counts, seconds)
    metrics["data_fingerprint"] = experiment.data_fingerprint
    metrics["group_size"] = group_size  # networks trained one after another in wall_time_s
    origin = transfer.recorded(experiment, job.replicate, level)
    if origin is not None:
        metrics["transfer"] = origin
    write_json(os.path.join(work_dir, "metrics.json"), metrics)
    if distributed.primary():
        os.rename(work_dir, job.directory)
        experiment.invocation.add(level=level, replicate=job.replicate, kind=job.kind)
        experiment.tracker.log_level(metrics)
        warn_at_chance(experiment, metrics)
        warn_collapse(experiment, metrics, start_state["mask"])


def warn_collapse(experiment: Experiment, metrics: dict, mask) -> None:
    """Pruning that empties a layer, or cuts half its units off from every input, leaves a network
    that cannot learn past it (layer collapse, Tanaka et al. 2020): say so (lottery/tickets.py)."""
    found = tickets.collapse(pruning.flatten(mask), experiment.prunable)
    if found:
        cfg = experiment.cfg.pruning
        cause = "the layer's pruning rate empties it before the others"
        if cfg.strategy == "global":
            cause = "global ranking does this at high sparsity (pruning.strategy=layerwise keeps every layer" + \
                (", as pruning.rounds>1 does for data-free criteria at start)" if cfg.prune_at == "start" else ")")
        print(f"warning: level {metrics['level']}, replicate {metrics['replicate']}, {metrics['kind']}: layer collapse: "
              f"{tickets.describe_collapse(found)}; {cause}", file=sys.stderr)


def warn_at_chance(experiment: Experiment, metrics: dict) -> None:
    """A network that ends at chance accuracy learned nothing, without a NaN to stop it (Adam with
    lr=1e6 sits at ~10%): say so. Chance: 1/classes, plus three standard errors of the test set."""
    accuracy = metrics["final"].get("test_accuracy")
    tested = float(np.sum(experiment.trainer.eval_data["test"][2])) if experiment.trainer.eval_data["test"] else 0
    if accuracy is None or not tested:
        return
    chance = 1 / experiment.num_classes
    if accuracy <= chance + 3 * (chance * (1 - chance) / tested) ** 0.5:
        print(f"warning: level {metrics['level']}, replicate {metrics['replicate']}, {metrics['kind']}: test accuracy "
              f"{accuracy:.1%} is at chance ({chance:.0%} for {experiment.num_classes} classes): the network learned "
              f"nothing; a learning rate too large for it (optimizer.lr={experiment.cfg.optimizer.lr}) is the usual "
              "cause, or pruning emptied a layer", file=sys.stderr)


# --- linear mode connectivity -------------------------------------------------------------------


def run_lmc(experiment: Experiment, level: int, progress: Progress) -> int:
    """Instability analysis at ``level`` for every replicate that has not had it yet; returns the
    number of copies trained. A measurement with another ``lmc.points`` is re-measured from the
    copies it kept (``lmc/copy_a``, ``lmc/copy_b``); the copies are never retrained."""
    points, jobs = experiment.cfg.lmc.points, []
    for replicate in range(experiment.cfg.replicates):
        directory = os.path.join(experiment.level_dir(replicate, level), "lmc")
        if os.path.isdir(directory):
            remeasure_lmc(experiment, level, replicate, directory, progress.console.print)
            continue
        start_state = lmc_start(experiment, replicate, level)
        keys = experiment.keys(replicate)["lmc"]
        for copy, kind in enumerate(("lmc_a", "lmc_b")):
            data_key, augment_key = jax.random.split(jax.random.fold_in(jax.random.fold_in(keys, level), copy))
            jobs.append(Job(replicate, kind, directory, start_state, data_key, augment_key))
    if not jobs:
        return 0
    start, end = experiment.segment(level)
    start = experiment.rewind if level == 0 else start  # level 0: the copies start at θk
    states = training.stack([job.state for job in jobs])
    task = progress.add_task(f"level {level}: linear mode connectivity, {len(jobs)} copies", total=end - start)
    checkpoints = group_checkpoints(experiment.directory, "lmc", level, jobs, start, end)
    states, _, _, _ = train(experiment, states, jobs, level, start, end, lambda n: progress.advance(task, n),
                            evaluate=False, checkpoints=checkpoints, say=progress.console.print)
    for i in range(0, len(jobs), 2):
        copies = [training.unstack(states, j) for j in (i, i + 1)]
        a, b = ({key: c[key] for key in ("params", "batch_stats")} for c in copies)
        work_dir = layout.fresh(jobs[i].directory + ".partial")
        save_tree(os.path.join(work_dir, "copy_a"), a)
        save_tree(os.path.join(work_dir, "copy_b"), b)
        path = measure_lmc(experiment, level, jobs[i].replicate, start, a, b, work_dir)
        if distributed.primary():
            os.rename(work_dir, jobs[i].directory)
            experiment.invocation.add(level=level, replicate=jobs[i].replicate, kind="lmc", points=points)
            density = pruning.density(pruning.counts(jobs[i].state["mask"], experiment.prunable))
            experiment.tracker.log_lmc(jobs[i].replicate, level, density, path)
    checkpoints.close()
    if distributed.primary():
        shutil.rmtree(checkpoints.directory, ignore_errors=True)
    return len(jobs)


def measure_lmc(experiment: Experiment, level: int, replicate: int, start: int, a, b, directory: str) -> dict:
    """The error along the path between copies ``a`` and ``b`` at ``lmc.points`` points, written
    with the number of points to ``directory``/metrics.json, and its plot."""
    path = lmc.error_along_path(experiment.trainer, a, b, experiment.cfg.lmc.points)
    path.update(level=level, replicate=replicate, start_step=start, points=experiment.cfg.lmc.points)
    write_json(os.path.join(directory, "metrics.json"), path)
    if distributed.primary():
        lmc.plot([path], os.path.join(directory, "path.png"), f"level {level}, replicate {replicate}: from step {start}")
    return path


def remeasure_lmc(experiment: Experiment, level: int, replicate: int, directory: str, say) -> None:
    """A finished LMC measurement asked for at another number of points: measure the path again
    from its saved copies (the copies, trained once, are the result; the path records its points)."""
    points = experiment.cfg.lmc.points
    measured = read_json(os.path.join(directory, "metrics.json"), LMC_KEYS)
    had = measured.get("points", len(measured.get("alphas", [])))
    if had == points:
        return
    if not os.path.isdir(os.path.join(directory, "copy_a")):
        raise LotteryError(f"{directory} was measured at {had} points and its copies were not kept (an older "
                           f"version); ask for lmc.points={had}, or delete that directory to train the copies "
                           f"again and measure {points} points")
    a, b = (experiment.load(directory, what) for what in ("copy_a", "copy_b"))
    path = measure_lmc(experiment, level, replicate, measured["start_step"], a, b, directory)
    experiment.invocation.add(level=level, replicate=replicate, kind="lmc", points=points, remeasured_from=had)
    say(f"level {level}, replicate {replicate}: LMC path measured again at {points} points from its saved copies "
        f"(was {had}): barrier {100 * path['barrier']:.2f}% (was {100 * measured['barrier']:.2f}%)")
    density = pruning.density(pruning.counts(experiment.load(experiment.level_dir(replicate, level), "ticket")["mask"],
                                             experiment.prunable))
    experiment.tracker.log_lmc(replicate, level, density, path)


def lmc_start(experiment: Experiment, replicate: int, level: int) -> dict:
    """Where the copies start: θk on level 0, the level's ticket start otherwise."""
    if level == 0:
        return rewound(experiment, replicate, pruning.full_mask(experiment.trainer.init_params), dense=True)
    return ticket_start(experiment, replicate, level)


# --- results --------------------------------------------------------------------------------------


def collect(experiment: Experiment) -> List[dict]:
    """Every finished network's metrics (levels, replicates, kinds in order), with LMC results."""
    results = []
    for level in range(experiment.cfg.levels + 1):
        for replicate in range(experiment.cfg.replicates):
            level_dir = experiment.level_dir(replicate, level)
            lmc_file = os.path.join(level_dir, "lmc", "metrics.json")
            for kind, directory in [("ticket", level_dir)] + [(c, os.path.join(level_dir, c)) for c in CONTROLS]:
                metrics_file = os.path.join(directory, "metrics.json")
                if os.path.exists(metrics_file):
                    metrics = read_json(metrics_file, NETWORK_KEYS)
                    if kind == "ticket" and os.path.exists(lmc_file):
                        metrics["lmc"] = read_json(lmc_file, LMC_KEYS)
                    results.append(metrics)
    return results
