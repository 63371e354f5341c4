"""Iterative magnitude pruning (IMP) with weight rewinding: the story of an experiment, level by level.

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
pruning/controls.py) are trained as one group,
stacked along a leading axis and checkpointed together, each by the same single-network compiled
program, so that a network's bits never depend on what it was trained beside. At the levels in
``lmc.levels``, two more copies per replicate train from the level's start with different data
orders, and the test error along the line between them gives the level's instability (``lmc.py``).

Results go to ``<output_dir>/<name>-<hash>/replicate_<r>/level_<L>/``:
  metrics.json  test accuracy (final and at early stop), densities, the evaluation history
  ticket/       orbax: the mask and the weights training started from (θk ⊙ mask)
  trained/      orbax: the weights and batch statistics after training
  rewind_point/ (level 0) orbax: θk with its batch statistics and optimizer state (level 0 is linked
                from the shared dense run, ``<output_dir>/dense/``: dense.py, which records what in
                linked.json)
  random_reinit/, random_prune/   the controls, laid out the same way
  lmc/          copy_a/, copy_b/ (orbax: the two trained copies), metrics.json (error along the
                path at lmc.points points, barrier) and path.png
Each of these directories appears, by one rename, only when it is complete: re-running the command
skips finished work and redoes interrupted work; asking for more levels, replicates, controls or
LMC levels adds to the same experiment. ``config.yaml`` holds the experiment's identity (what the
hash is of: results/identity.py) and ``invocations.jsonl`` what each invocation asked for, ran on and
added (results/invocations.py); ``objectives.json`` the values config ``objective`` asked of the
finished results (analysis/objective.py). The layout is results/paths.py's.
"""

import errno
import os
import shutil
import sys
from typing import List, Optional

import jax
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lottery import backend, hosts
from lottery.analysis import figures, objective, runs, tables, tickets
from lottery.errors import LotteryError, Preempted
from lottery.imp import dense, diet, early_bird, lmc, swamp
from lottery.imp.experiment import Experiment, prepare
from lottery.pruning import controls, criteria, masks, sparse
from lottery.results import identity, metrics as result_metrics, paths
from lottery.results.invocations import Invocation, program
from lottery.results.metrics import LMC_KEYS, NETWORK_KEYS
from lottery.results.store import fresh, open_locked, read_json, save_tree, write_json
from lottery.training import trainer as training
from lottery.training import loop
from lottery.training.loop import Network, group_checkpoints, remove_checkpoints


class Results(list):
    """The metrics of every trained network, ordered by level, replicate, kind (ticket first), and
    the value of the objective config ``objective`` names (None: none, or not process 0)."""

    objective: Optional[float] = None


def run(cfg, console: Console = None) -> Results:
    """Run (or continue) levels 0..cfg.levels of every replicate; print and return the results."""
    console = console or tables.console()
    backend.deterministic(cfg.deterministic)  # before JAX's first computation, as:
    hosts.initialize(cfg.distributed)
    if cfg.compilation_cache:
        jax.config.update("jax_compilation_cache_dir", compilation_cache(cfg.compilation_cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    backend.announce(console.print)  # what the run computes on; a warning when a GPU machine computes on its CPU
    experiment = prepare(cfg)
    cfg = experiment.cfg  # as prepared (a transfer's source resolved)
    if not hosts.primary():  # process 0 reports for all
        console = Console(quiet=True)
    if hosts.primary() and not os.path.isdir(experiment.directory):
        for older in identity.older_versions(experiment.directory, cfg, experiment.data_fingerprint):
            console.print(f"note: {older} holds this experiment as an older version of lottery hashed it (with keys "
                          "since removed); its results stay there, and this one starts afresh in "
                          f"{experiment.directory}")
    identify = lambda: identity.write_identity(experiment.directory, cfg, experiment.data_fingerprint)
    lock = open_locked(experiment.directory, identify, "this experiment")
    try:
        return run_locked(experiment, console)
    finally:
        if lock is not None:
            lock.close()


def compilation_cache(setting: str) -> str:
    """The directory of JAX's persistent compilation cache, made if missing: one that cannot be
    written is refused here, where JAX would warn at every compilation and carry on without it."""
    directory = os.path.abspath(os.path.expanduser(setting))
    try:
        os.makedirs(directory, exist_ok=True)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "not writable")
    except OSError as error:
        reason = "a file, not a directory" if os.path.isfile(directory) else error.strerror or str(error)
        raise LotteryError(f"compilation_cache={setting}: {reason}; choose a writable directory, or "
                           "compilation_cache='' to compile without the cache") from None
    return directory


def run_locked(experiment: Experiment, console: Console) -> Results:
    """Every level in turn, under the experiment's lock, then the results: table, figures, objective."""
    cfg = experiment.cfg
    trainer, deterministic = experiment.trainer, backend.deterministic_ops()  # set by run, before JAX started
    invocation = experiment.invocation = Invocation(experiment.directory, cfg,
                                                    program(trainer.host_loop, cfg.mesh, trainer.width, deterministic),
                                                    write=hosts.primary())
    if invocation.other_programs() and paths.replicates(experiment.directory):
        others = "; ".join(", ".join(f"{k} {v}" for k, v in p.items()) for p in invocation.other_programs())
        now = ", ".join(f"{k} {v}" for k, v in invocation.program.items())
        console.print(f"note: results in {experiment.directory} were also trained by another program ({others}); "
                      f"this invocation trains with {now}: their bits are not comparable (docs/reproducibility.md)")
    record_sweep_job(experiment.directory)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    trained = 0  # networks trained by this invocation
    try:
        with loop.PREEMPTION, Progress(*columns, console=console, disable=not cfg.progress or console.quiet) as progress:
            for level in range(cfg.levels + 1):
                hosts.barrier(f"level {level}")  # what process 0 finished is on disk for everyone
                if level == 0:
                    trained += dense_level(experiment, progress)
                elif sparse.trains(cfg, level):
                    networks = [n for r in range(cfg.replicates) for n in level_networks(experiment, r, level)]
                    updating = [n for n in networks if n.kind == "ticket"]  # (not `tickets`: the module)
                    if sparse.dynamic(cfg) and updating:  # its mask is known once it has trained: controls after it
                        train_networks(experiment, updating, level, *experiment.segment(level), progress,
                                       trainer=experiment.sparse_trainer)
                        trained += len(updating)
                        networks = [n for r in range(cfg.replicates) for n in level_networks(experiment, r, level)]
                    train_networks(experiment, networks, level, *experiment.segment(level), progress)
                    trained += len(networks)
                if cfg.lmc.between_levels and level > 0 and sparse.trains(cfg, level):
                    hosts.barrier(f"lmc levels {level}")
                    lmc.between_levels(experiment, level, progress.console.print)
                if level in cfg.lmc.levels:
                    hosts.barrier(f"lmc {level}")
                    trained += lmc.run(experiment, level, progress, lambda r: lmc_start(experiment, r, level))
                if loop.PREEMPTION.agreed() and level < cfg.levels:
                    raise loop.PREEMPTION.stop(f"stopped after level {level}")
    except Preempted:
        experiment.tracker.abort()
        invocation.end("preempted")
        loop.PREEMPTION.pass_on()  # under submitit: requeue the job and exit (SystemExit)
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
    hosts.barrier("finished")
    results = Results(collect(experiment))
    if not hosts.primary():
        return results
    shutil.rmtree(os.path.join(experiment.directory, paths.CHECKPOINTS), ignore_errors=True)  # all finished
    df = runs.load_runs(experiment.directory)
    measured = objective.measure(cfg, df)  # config `objective`'s value (objective.py), or why the results lack it
    outcome = None  # the W&B summary: what a W&B sweep optimizes, or why it is missing
    if isinstance(measured, objective.Objective):
        outcome = {"objective": measured.value, "objective/spec": measured.key}
    elif measured is not None:
        outcome = {"objective/error": str(measured)}
    similarity = None  # how alike the masks are, for W&B (analysis/tickets.py; report shows it too)
    if experiment.tracker.enabled and cfg.levels > 0 and trained:  # a re-run of finished work: no new runs
        similarity = tickets.similarity_table(experiment.directory, ("replicates", "kinds"), kinds=None, layers=False)
    experiment.tracker.finish(df, summary=outcome, similarity=similarity)
    figure = os.path.join(experiment.directory, "accuracy_vs_sparsity.png")
    if trained or not os.path.exists(figure):  # a re-run of finished work rewrites nothing
        figures.save_figures(df, experiment.directory)
    summary = runs.summarize(df)
    console.print(tables.results(summary, title=f"{tables.method(cfg)} results: {experiment.directory}",
                                 experiment_column=False))
    console.print(f"figures: {os.path.join(experiment.directory, '*.png')}")
    results.objective = objective.report(measured, experiment.directory, console)  # prints, writes; raises if missing
    return results


def record_sweep_job(directory: str) -> None:
    """Under a Hydra multirun, leave a pointer to the experiment in the job's directory, so that
    ``lottery.report`` and ``load_runs`` find a sweep's experiments from the sweep directory."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN and hosts.primary():
        job_dir = HydraConfig.get().runtime.output_dir
        os.makedirs(job_dir, exist_ok=True)
        with open(os.path.join(job_dir, runs.POINTER), "w") as f:
            f.write(os.path.abspath(directory))


# --- what each level trains --------------------------------------------------------------------


def dense_level(experiment: Experiment, progress: Progress) -> int:
    """Level 0: each replicate's dense network, from the dense runs shared by every experiment that
    differs from this one only in how it prunes, rewinds and retrains (``dense.py``: trained
    there once, with θk for every k asked for). Returns the networks this experiment gained."""
    missing, relink = [], {}
    for r in range(experiment.cfg.replicates):
        directory = experiment.level_dir(r, 0)
        if os.path.isdir(directory):  # finished work must be readable before more is built on it
            read_json(os.path.join(directory, "metrics.json"), NETWORK_KEYS)
            found = dense.damaged(experiment, r, progress.console.print)  # through its links to the store
            if found is not None:
                relink[r] = found
        else:
            missing.append(r)
    for metrics in dense.link_level_0(experiment, missing, progress, relink):
        r = metrics["replicate"]
        if r in relink:
            progress.console.print(f"note: {experiment.level_dir(r, 0)}/{relink[r][0]} was damaged; linked again from "
                                   f"the dense store ({metrics['dense']}), which holds the same arrays")
            if hosts.primary():
                experiment.invocation.add(level=0, replicate=r, kind="ticket", dense=metrics["dense"], relinked=True)
            continue
        if hosts.primary():
            experiment.invocation.add(level=0, replicate=metrics["replicate"], kind="ticket", dense=metrics["dense"])
            experiment.tracker.log_history(metrics["replicate"], "ticket", 0, metrics["history"])
            experiment.tracker.log_level(metrics)
            warn_at_chance(experiment, metrics)
    if experiment.diet is not None:  # what the dense runs pre-trained on: diet.json (diet.py)
        diet.record(experiment, dense.Dense(experiment).directory, progress.console.print)
    return len(missing)


def level_networks(experiment: Experiment, replicate: int, level: int) -> List[Network]:
    """The ticket and controls of ``replicate`` still to train at ``level``."""
    cfg = experiment.cfg
    directory = lambda kind: paths.network_dir(experiment.directory, replicate, level, kind)
    ticket_done = os.path.isdir(directory("ticket"))
    to_train = [c for c in cfg.controls if not os.path.isdir(directory(c))]
    for kind in ["ticket"] * ticket_done + [c for c in cfg.controls if c not in to_train]:
        read_json(os.path.join(directory(kind), "metrics.json"), NETWORK_KEYS)  # finished work must be readable
    if ticket_done and not to_train:
        return []
    keys = experiment.keys(replicate)
    network = lambda kind, state: Network(replicate, kind, directory(kind), state, keys["data"], keys["augment"])
    ticket = ticket_start(experiment, replicate, level)
    if not ticket_done and sparse.dynamic(cfg):  # the controls need the mask it ends with
        return [network("ticket", ticket)]
    networks = [] if ticket_done else [network("ticket", ticket)]
    if networks and cfg.swamp.particles > 1:  # SWAMP: copies of the ticket, averaged when trained (swamp.py)
        networks += swamp.particles(experiment, replicate, level, networks[0])
    return networks + [network(c, control_start(experiment, replicate, level, c, ticket)) for c in to_train]


def ticket_start(experiment: Experiment, replicate: int, level: int) -> dict:
    """The ticket's training state at the start of ``level``: 1. prune, 2. rewind the survivors to
    θk -- or, with ``retrain`` (Renda et al. 2020: lr_rewind, finetune), keep the trained weights."""
    if sparse.method(experiment.cfg) is not None and not os.path.isdir(experiment.level_dir(replicate, level)):
        return sparse_start(experiment, replicate, level)
    mask = ticket_mask(experiment, replicate, level)
    if experiment.cfg.retrain == "rewind":
        return rewound(experiment, replicate, mask)
    this_level = experiment.level_dir(replicate, level)
    kept = experiment.load(this_level, "ticket") if os.path.isdir(this_level) else \
        experiment.load(experiment.level_dir(replicate, level - 1), "trained")
    return experiment.trainer.init_state(kept["params"], kept["batch_stats"], mask)


def ticket_mask(experiment: Experiment, replicate: int, level: int):
    """The ticket's mask at ``level``. IMP: of the previous level's survivors, the weights its
    trained values rank highest (by ``pruning.criterion``; magnitude), at the next level's counts."""
    cfg = experiment.cfg
    this_level = experiment.level_dir(replicate, level)
    if os.path.isdir(this_level):  # finished; its controls and LMC copies need its start
        return experiment.load(this_level, "ticket")["mask"]
    if experiment.transfer is not None:  # no pruning: the mask of another experiment's ticket (transfer.py)
        return experiment.transfer.mask(replicate, level, experiment.template("ticket"))
    if cfg.pruning.prune_at == "start":  # pruning before training: from θk, straight to this level's counts
        return pruned_at_start(experiment, replicate, level)
    if cfg.early_bird.enabled:  # drawn during the previous level's training, once its masks settled
        return early_bird_mask(experiment, replicate, level)
    scores, survivors = ranking(experiment, replicate, level)
    return experiment.structure.prune(scores, survivors, level)


def early_bird_mask(experiment: Experiment, replicate: int, level: int):
    """Level ``level``'s mask as the previous level drew it (early_bird.py); level 0's by a probe of
    the dense training, run here the first time it is asked for."""
    previous = experiment.level_dir(replicate, level - 1)
    mask = early_bird.load(experiment, previous)
    if mask is None and level == 1:
        early_bird.probe_level_0(experiment, replicate, dense.Dense(experiment).directory)
        mask = early_bird.load(experiment, previous)
    if mask is None:
        raise LotteryError(f"{previous}: has no early_bird/ draw (trained without early_bird.enabled); delete it and "
                           "run this again to train it with the draw")
    return mask


def ranking(experiment: Experiment, replicate: int, level: int):
    """The scores that make ``level``'s mask and the mask they rank: IMP's previous level's trained
    weights under its mask; pruning before training's θk, dense (its first round: the invert control)."""
    if experiment.cfg.pruning.prune_at == "start":
        weights = experiment.rewind_point(replicate)
        survivors = masks.full_mask(weights["params"])
    else:
        previous = experiment.level_dir(replicate, level - 1)
        survivors = experiment.load(previous, "ticket")["mask"]
        weights = experiment.load(previous, "trained")
    scores = criteria.score(experiment.cfg.pruning.criterion,
                            experiment.scoring_context(replicate, level, weights, survivors))
    return scores, survivors


def pruned_at_start(experiment: Experiment, replicate: int, level: int):
    """Pruning before training (``pruning.prune_at=start``): the mask of ``level`` scored on the
    weights training starts from (θk; θ0 with rewind=0), in ``pruning.rounds`` rounds whose counts
    shrink exponentially from dense to exactly IMP's counts at this level (one round: one shot;
    SynFlow's schedule with more), each round re-scoring under the mask so far."""
    cfg = experiment.cfg.pruning
    theta_k = experiment.rewind_point(replicate)
    full = masks.full_mask(theta_k["params"])
    keep = masks.level_counts(full, cfg, experiment.prunable, level)
    context = experiment.scoring_context(replicate, level, theta_k, full)
    return criteria.iterate_to_counts(cfg.criterion, context, masks.groups(experiment.prunable, cfg.strategy), keep,
                                      cfg.rounds)


def sparse_start(experiment: Experiment, replicate: int, level: int) -> dict:
    """Sparse training from scratch at ``level`` (``sparsity``, pruning/sparse.py): θ0 under the
    method's start mask (dense for GMP; the level's counts at random positions for the others), with
    what its mask updates read: each group's counts at every update and its random key. Once trained,
    its ticket is the mask it ended with, on θ0 (``save_network``)."""
    cfg = experiment.cfg
    full = masks.full_mask(experiment.trainer.init_params)
    targets = sparse.level_targets(cfg, full, experiment.prunable, level)
    key = experiment.sparse_key(replicate, level)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(jax.random.fold_in(key, 0))))
    mask = sparse.start_mask(cfg, full, experiment.prunable, targets, rng)
    state = rewound(experiment, replicate, mask)
    if sparse.dynamic(cfg):
        flat = masks.flatten(mask)
        start = [int(sum(np.sum(flat[name]) for name in group)) for group in experiment.updates.groups]
        state["sparse"] = experiment.updates.state(start, targets, jax.random.fold_in(key, 1))
    return state


def rewound(experiment: Experiment, replicate: int, mask, dense: bool = False) -> dict:
    """A network that starts from θk under ``mask``: θk ⊙ mask, θk's batch statistics, and with
    ``rewind_optimizer`` θk's optimizer state with the moments of pruned weights zeroed (else a
    fresh one). The ticket, the random-prune control and the LMC copies all start this way, so
    they are trained alike. In a transfer experiment θk is the source's start weights
    (transfer.py); ``dense``: this experiment's own (level 0's LMC copies)."""
    trainer = experiment.trainer
    if experiment.transfer is not None and not dense:
        templates = {"params": trainer.init_params, "batch_stats": trainer.init_batch_stats,
                     "ticket": experiment.template("ticket")}
        start = experiment.transfer.start_weights(replicate, templates)
        return trainer.init_state(start["params"], start["batch_stats"], mask)
    theta_k = experiment.rewind_point(replicate)
    opt_state = None
    if experiment.cfg.rewind_optimizer:
        opt_state = training.mask_optimizer_state(trainer.tx, theta_k["opt_state"], mask)
    return trainer.init_state(theta_k["params"], theta_k["batch_stats"], mask, opt_state)


def control_start(experiment: Experiment, replicate: int, level: int, name: str, ticket: dict) -> dict:
    """The training state control ``name`` starts ``level`` from, given the ticket's start state
    (pruning/controls.py): its own PRNG stream, the model's initializer, θk as the ticket rewinds to."""
    key = controls.stream_key(experiment.keys(replicate)["controls"], level, name)
    context = controls.Context(
        ticket=jax.device_get({k: ticket[k] for k in ("mask", "params", "batch_stats")}),
        names=experiment.prunable, key=key,
        rng=np.random.default_rng(np.asarray(jax.random.key_data(key))),
        fresh_weights=experiment.initial_weights, rewound=lambda mask: rewound(experiment, replicate, mask),
        init_state=experiment.trainer.init_state, ranking=lambda: ranking(experiment, replicate, level),
        structure=experiment.structure)
    return controls.start(name, context)


def lmc_start(experiment: Experiment, replicate: int, level: int) -> dict:
    """Where an LMC measurement's copies start: θk on level 0, the level's ticket start otherwise."""
    if level == 0:
        return rewound(experiment, replicate, masks.full_mask(experiment.trainer.init_params), dense=True)
    return ticket_start(experiment, replicate, level)


# --- training a level's networks together, and recording them -----------------------------------


def train_networks(experiment: Experiment, networks: List[Network], level: int, start: int, end: int,
                   progress: Progress, trainer=None) -> None:
    """Train ``networks`` over [start, end) as one group: chunk by chunk, each network by the
    single-member program (its bits do not depend on the others), checkpointed together
    (``trainer``: another than the experiment's, e.g. with sparse training's mask updates)."""
    if not networks:
        return
    states = training.stack([n.state for n in networks])
    density = masks.density(masks.counts(networks[0].state["mask"], experiment.prunable))
    kinds = ", ".join(sorted({n.kind for n in networks}))
    task = progress.add_task(f"level {level} ({density:.1%} of weights): {len(networks)} x {kinds}", total=end - start)
    checkpoints = group_checkpoints(experiment.directory, "train", level, networks, start, end)
    averaging = any(n.kind.startswith(swamp.PARTICLE) for n in networks)
    keep = swamp.snapshot_steps(experiment, start, end) if averaging else []
    drawing = experiment.cfg.early_bird.enabled  # the next level's mask (at the last level too: levels may grow)
    if drawing:
        keep = early_bird.check_steps(experiment, start, end)
    states, histories, kept, seconds = experiment.train(states, networks, level, start, end,
                                                        lambda n: progress.advance(task, n), trainer=trainer, keep=keep,
                                                        checkpoints=checkpoints, say=progress.console.print)
    averaged = swamp.average(experiment, networks, states, kept, histories) if averaging else {}
    for i, network in sorted(enumerate(networks), key=lambda item: item[1].kind != "ticket"):  # tickets' dirs first
        if network.kind.startswith(swamp.PARTICLE):
            continue  # averaged into the ticket
        finished, history = training.unstack(states, i), histories[i]
        if network.kind == "ticket" and network.replicate in averaged:
            finished = {**finished, **averaged[network.replicate]["trained"]}
            history = averaged[network.replicate]["history"]
        drawn = None
        if drawing and network.kind == "ticket":  # the ticket's weights at each check, then at the end
            weights = [(s, training.unstack(kept[s], i)["params"]) for s in sorted(kept)] + [(end, finished["params"])]
            drawn = early_bird.draw(experiment, network.state["mask"], weights, end)
        save_network(experiment, network, level, start, finished, history, seconds, len(networks),
                     averaged.get(network.replicate) if network.kind == "ticket" else None, drawn)
    remove_checkpoints(checkpoints)


def save_network(experiment: Experiment, network: Network, level: int, start: int, finished, history, seconds,
                 group_size: int, averaged: Optional[dict] = None, drawn=None):
    """Write a network's results to ``<directory>.partial`` and rename it into place (``averaged``:
    a SWAMP ticket's particles, kept beside it: swamp.py)."""
    work_dir = fresh(network.directory + ".partial")
    start_state = jax.device_get(network.state)
    sparse_record = sparse_training_record(experiment, start_state, finished) if network.kind == "ticket" else None
    if "sparse" in start_state:  # trained with mask updates: its ticket is the mask it ended with, on θ0
        start_state = {**start_state, "mask": finished["mask"],
                       "params": masks.apply_mask(start_state["params"], finished["mask"])}
    save_tree(os.path.join(work_dir, "ticket"), {key: start_state[key] for key in ("mask", "params", "batch_stats")})
    save_tree(os.path.join(work_dir, "trained"), {key: finished[key] for key in ("params", "batch_stats")})
    layer_counts = masks.counts(start_state["mask"], experiment.prunable)
    metrics = result_metrics.summarize(level, network.replicate, network.kind, start, history, layer_counts, seconds)
    metrics["data_fingerprint"] = experiment.data_fingerprint
    metrics["examples"] = experiment.data_examples
    metrics["group_size"] = group_size  # networks trained one after another in wall_time_s
    metrics["cost_steps"] = experiment.cost(level)
    if sparse_record is not None:
        metrics["sparse_training"] = sparse_record
    if drawn is not None:  # the next level's early-bird mask (early_bird.py)
        early_bird.save(work_dir, *drawn)
        metrics["early_bird"] = drawn[1]
    if averaged is not None:
        metrics["swamp"] = averaged["record"]
        swamp.save_particles(work_dir, averaged)
    structured = experiment.structure.record(start_state["mask"])
    if structured is not None:
        metrics["structure"] = structured
    origin = experiment.transfer.recorded(network.replicate, level) if experiment.transfer else None
    if origin is not None:
        metrics["transfer"] = origin
    write_json(os.path.join(work_dir, "metrics.json"), metrics)
    if hosts.primary():
        os.rename(work_dir, network.directory)
        experiment.invocation.add(level=level, replicate=network.replicate, kind=network.kind)
        experiment.tracker.log_level(metrics)
        warn_at_chance(experiment, metrics)
        warn_collapse(experiment, metrics, start_state["mask"])


def sparse_training_record(experiment: Experiment, start_state: dict, finished: dict) -> Optional[dict]:
    """What metrics.json says of a sparse-training network: the method, its distribution, its counts
    at the start and the number of mask updates (None under IMP)."""
    cfg = experiment.cfg
    if sparse.method(cfg) is None:
        return None
    remaining = lambda mask: sum(c["remaining"] for c in masks.counts(mask, experiment.prunable).values())
    events = experiment.updates.schedule.events
    return {"method": cfg.sparsity.method, "distribution": cfg.sparsity.distribution,
            "start_remaining": remaining(start_state["mask"]), "final_remaining": remaining(finished["mask"]),
            "updates": len(events) if sparse.dynamic(cfg) else 0, "update_steps": [int(e) for e in events]}


def warn_collapse(experiment: Experiment, metrics: dict, mask) -> None:
    """Pruning that empties a layer, or cuts half its units off from every input, leaves a network
    that cannot learn past it (layer collapse, Tanaka et al. 2020): say so (analysis/tickets.py).
    Under a unit structure (neurons, channels, heads) units without inputs are what was pruned."""
    found = tickets.collapse(masks.flatten(mask), experiment.prunable)
    if experiment.structure.layers:  # units pruned whole are the structure, not a collapse: only empty layers
        found = [c for c in found if c["empty"]]
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


def collect(experiment: Experiment) -> List[dict]:
    """Every finished network's metrics (levels, replicates, kinds in order), with LMC results."""
    results = []
    for level in range(experiment.cfg.levels + 1):
        for replicate in range(experiment.cfg.replicates):
            lmc_file = os.path.join(paths.lmc_dir(experiment.directory, replicate, level), "metrics.json")
            for kind in controls.kinds():
                metrics_file = os.path.join(paths.network_dir(experiment.directory, replicate, level, kind), "metrics.json")
                if os.path.exists(metrics_file):
                    metrics = read_json(metrics_file, NETWORK_KEYS)
                    if kind == "ticket" and os.path.exists(lmc_file):
                        metrics["lmc"] = read_json(lmc_file, LMC_KEYS)
                    results.append(metrics)
    return results
