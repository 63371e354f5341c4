"""Iterative magnitude pruning (IMP) with weight rewinding: the story of an experiment, level by level.

Level 0 trains the dense network from θ0 for T steps and keeps θk, its weights at the rewind step k
(once for every experiment that differs only in how it prunes, rewinds and retrains: dense.py).
Each later level L
  1. prunes: magnitude pruning of level L-1's trained weights, under its mask, gives mask_L (IMP;
     another method makes it otherwise, behind the seams of imp/method.py: pruning before training,
     a transferred ticket, sparse training from scratch, an Early-Bird draw);
  2. rewinds: the surviving weights are reset to θk (k = 0 is the original reset to θ0 of
     Frankle & Carbin 2019; k > 0 is weight rewinding, Frankle et al. 2020) -- or, with
     ``retrain``, keeps the trained weights (Renda et al. 2020: ``lr_rewind``, ``finetune``);
  3. trains from step k to T, the learning-rate schedule continuing from k, the data order the
     same as every other level's (SWAMP trains particles beside the ticket and averages them);
  4. records each network's results, with what its method adds (imp/finish.py ends the run).

Every replicate is its own IMP trajectory (initialization, data order, masks). At each level the
tickets of all replicates and their controls (``random_reinit``: the ticket's mask on fresh initial
weights; ``random_prune``: a random mask with the ticket's counts, from θk; the ablations of
pruning/controls.py) are trained as one group,
stacked along a leading axis and checkpointed together, each by the same single-network compiled
program, so that a network's bits never depend on what it was trained beside. At the levels in
``lmc.levels``, two more copies per replicate train from the level's start with different data
orders, and the test error along the line between them gives the level's instability (``lmc.py``).

Results go to ``<output_dir>/<name>-<hash>/replicate_<r>/level_<L>/`` (the layout is results/paths.py's):
metrics.json, the ticket's start (ticket/: mask and θk ⊙ mask) and end (trained/), each control and
LMC measurement laid out alike. Each directory appears, by one rename, only when it is complete:
re-running the command skips finished work and redoes interrupted work; asking for more levels,
replicates, controls or LMC levels adds to the same experiment. ``config.yaml`` holds its identity
(results/identity.py), ``invocations.jsonl`` what each invocation asked for, ran on and added.
"""

import os
from typing import List

import jax
import numpy as np
from rich.console import Console
from rich.progress import Progress

from lottery import backend, hosts
from lottery.analysis import figures, tables
from lottery.errors import Preempted
from lottery.imp import dense, finish, lmc
from lottery.imp.experiment import Experiment, prepare
from lottery.imp.finish import Results
from lottery.imp.method import Outcome, theta_k_start
from lottery.pruning import controls, masks
from lottery.results import identity, metrics as result_metrics, paths
from lottery.results.metrics import NETWORK_KEYS
from lottery.results.store import fresh, open_locked, read_json, save_tree, write_json
from lottery.training import trainer as training
from lottery.training import loop
from lottery.training.loop import Network, group_checkpoints, remove_checkpoints


def run(cfg, console: Console = None, checked=None) -> Results:
    """Run (or continue) levels 0..cfg.levels of every replicate; print and return the results
    (``checked``: the config already checked with its data before JAX started, imp/checks.py)."""
    console = console or tables.console()
    backend.deterministic(cfg.deterministic)  # before JAX's first computation, as:
    hosts.initialize(cfg.distributed)
    backend.use_compilation_cache(cfg)
    backend.announce(console.print)  # what the run computes on; a warning when a GPU machine computes on its CPU
    experiment = prepare(cfg, checked)
    cfg = experiment.cfg  # as prepared (a transfer's source resolved)
    if not hosts.primary():  # process 0 reports for all
        console = Console(quiet=True)
    if hosts.primary():
        experiment.announce_other_directories(console.print)
    identify = lambda: identity.write_identity(experiment.directory, cfg, experiment.data_fingerprint)
    new = not os.path.isdir(experiment.directory)
    lock = open_locked(experiment.directory, identify, "this experiment")
    try:
        return run_locked(experiment, console)
    except Exception as error:  # failed; stopped (Ctrl-C, preempted) it keeps the record of its invocation
        if new and not isinstance(error, Preempted):  # under the lock still: no other process writes there
            experiment.remove_if_empty()
        raise
    finally:
        if lock is not None:
            lock.close()


def run_locked(experiment: Experiment, console: Console) -> Results:
    """Every level in turn, under the experiment's lock, then the results: table, figures, objective."""
    cfg = experiment.cfg
    trained = 0  # networks trained by this invocation
    experiment.tracker.begin()  # W&B imported beside level 0
    if hosts.primary():
        figures.preload()  # and pyplot, for the figures at the end
    with finish.recorded(experiment, console), loop.PREEMPTION, finish.progress(console, cfg.progress) as progress:
        for level in range(cfg.levels + 1):
            hosts.barrier(f"level {level}")  # what process 0 finished is on disk for everyone
            if level == 0:
                trained += dense_level(experiment, progress)
            elif experiment.trains(level):
                trained += train_level(experiment, level, progress)
            if cfg.lmc.between_levels and level > 0 and experiment.trains(level):
                hosts.barrier(f"lmc levels {level}")
                lmc.between_levels(experiment, level, progress.console.print)
            if level in cfg.lmc.levels:
                hosts.barrier(f"lmc {level}")
                trained += lmc.run(experiment, level, progress, lambda r: lmc_start(experiment, r, level))
            if loop.PREEMPTION.agreed() and level < cfg.levels:
                raise loop.PREEMPTION.stop(f"stopped after level {level}")
        experiment.tracker.wait()  # every row logged: a W&B failure ends the invocation as failed
    hosts.barrier("finished")
    return finish.finish(experiment, console, trained)


# --- what each level trains --------------------------------------------------------------------


def dense_level(experiment: Experiment, progress: Progress) -> int:
    """Level 0: each replicate's dense network, from the dense runs shared by every experiment that
    differs from this one only in how it prunes, rewinds and retrains (``dense.py``: trained
    there once, with θk for every k asked for). Returns the networks this experiment gained."""
    missing, relink = [], {}
    for r in range(experiment.cfg.replicates):
        directory = experiment.level_dir(r, 0)
        if os.path.isdir(directory):  # finished work must be readable before more is built on it
            read_json(paths.metrics_file(directory), NETWORK_KEYS)
            found = dense.damaged(experiment, r, progress.console.print)  # through its links to the store
            if found is not None:
                relink[r] = found
        else:
            missing.append(r)
    for metrics in dense.link_level_0(experiment, missing, progress, relink):
        r = metrics["replicate"]
        if r in relink:
            progress.console.print(
                f"note: {experiment.level_dir(r, 0)}/{relink[r][0]} was damaged; linked again from "
                f"the dense store ({metrics['dense']}), which holds the same arrays"
            )
            if hosts.primary():
                experiment.invocation.add(level=0, replicate=r, kind="ticket", dense=metrics["dense"], relinked=True)
            continue
        if hosts.primary():
            experiment.invocation.add(level=0, replicate=metrics["replicate"], kind="ticket", dense=metrics["dense"])
            experiment.tracker.log_history(metrics["replicate"], "ticket", 0, metrics["history"])
            experiment.tracker.log_level(metrics)
            finish.warn_at_chance(experiment, metrics)
    for method in experiment.methods:  # what a method did to the dense runs (a diet: diet.json)
        method.level_0(dense.Dense(experiment).directory, progress.console.print)
    return len(missing)


def train_level(experiment: Experiment, level: int, progress: Progress) -> int:
    """Train a pruned level's tickets and controls; returns the networks trained. A method whose
    steps move the mask trains each ticket alone first: its controls need the mask it ends with."""
    cfg = experiment.cfg
    networks = [n for r in range(cfg.replicates) for n in level_networks(experiment, r, level)]
    trained = 0
    updating = [n for n in networks if n.kind == "ticket"] if experiment.method.updating is not None else []
    if updating:
        train_networks(
            experiment, updating, level, *experiment.segment(level), progress, trainer=experiment.method.updating
        )
        trained += len(updating)
        networks = [n for r in range(cfg.replicates) for n in level_networks(experiment, r, level)]
    train_networks(experiment, networks, level, *experiment.segment(level), progress)
    return trained + len(networks)


def level_networks(experiment: Experiment, replicate: int, level: int) -> List[Network]:
    """The ticket and controls of ``replicate`` still to train at ``level`` (with what a method
    trains beside its ticket: SWAMP's particles)."""
    cfg = experiment.cfg
    directory = lambda kind: paths.network_dir(experiment.directory, replicate, level, kind)
    ticket_done = os.path.isdir(directory("ticket"))
    to_train = [c for c in cfg.controls if not os.path.isdir(directory(c))]
    for kind in ["ticket"] * ticket_done + [c for c in cfg.controls if c not in to_train]:
        read_json(paths.metrics_file(directory(kind)), NETWORK_KEYS)  # finished work must be readable
    if ticket_done and not to_train:
        return []
    keys = experiment.keys(replicate)
    network = lambda kind, state: Network(replicate, kind, directory(kind), state, keys["data"], keys["augment"])
    ticket = ticket_start(experiment, replicate, level)
    if not ticket_done and experiment.method.updating is not None:  # the controls need the mask it ends with
        return [network("ticket", ticket)]
    networks = [] if ticket_done else [network("ticket", ticket)]
    if networks:
        networks += [n for m in experiment.methods for n in m.extra_networks(replicate, level, networks[0])]
    return networks + [network(c, control_start(experiment, replicate, level, c, ticket)) for c in to_train]


def ticket_start(experiment: Experiment, replicate: int, level: int) -> dict:
    """The ticket's training state at the start of ``level``: 1. prune, 2. rewind the survivors to
    θk -- or what the method starts from instead (imp/method.py)."""
    this_level = experiment.level_dir(replicate, level)
    if os.path.isdir(this_level):  # finished; its controls and LMC copies need its start
        return experiment.method.start(replicate, level, experiment.load(this_level, "ticket")["mask"])
    return experiment.method.ticket(replicate, level)


def control_start(experiment: Experiment, replicate: int, level: int, name: str, ticket: dict) -> dict:
    """The training state control ``name`` starts ``level`` from, given the ticket's start state
    (pruning/controls.py): its own PRNG stream, the model's initializer, θk as the ticket rewinds to."""
    key = controls.stream_key(experiment.keys(replicate)["controls"], level, name)
    method = experiment.method
    context = controls.Context(
        ticket=jax.device_get({k: ticket[k] for k in ("mask", "params", "batch_stats")}),
        names=experiment.prunable,
        key=key,
        rng=np.random.default_rng(np.asarray(jax.random.key_data(key))),
        fresh_weights=experiment.initial_weights,
        rewound=lambda mask: method.rewound(replicate, mask),
        init_state=experiment.trainer.init_state,
        ranking=lambda: method.ranking(replicate, level),
        structure=experiment.structure,
    )
    return controls.start(name, context)


def lmc_start(experiment: Experiment, replicate: int, level: int) -> dict:
    """Where an LMC measurement's copies start: θk on level 0, the level's ticket start otherwise."""
    if level == 0:
        return theta_k_start(experiment.context, replicate, masks.full_mask(experiment.trainer.init_params))
    return ticket_start(experiment, replicate, level)


# --- training a level's networks together, and recording them -----------------------------------


def train_networks(
    experiment: Experiment, networks: List[Network], level: int, start: int, end: int, progress: Progress, trainer=None
) -> None:
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
    keep = sorted({s for m in experiment.methods for s in m.keep_steps(networks, start, end)})
    states, histories, kept, seconds = experiment.train(
        states,
        networks,
        level,
        start,
        end,
        lambda n: progress.advance(task, n),
        trainer=trainer,
        keep=keep,
        checkpoints=checkpoints,
        say=progress.console.print,
    )
    outcomes = [m.after_training(networks, states, kept, histories, end) for m in experiment.methods]
    recorded = ("ticket", *experiment.cfg.controls)  # a method's networks beside a ticket are folded into it
    for i, network in sorted(enumerate(networks), key=lambda item: item[1].kind != "ticket"):  # tickets' dirs first
        if network.kind not in recorded:
            continue
        finished, history = training.unstack(states, i), histories[i]
        found = [o[i] for o in outcomes if i in o]
        for outcome in found:
            finished = {**finished, **outcome.trained} if outcome.trained is not None else finished
            history = outcome.history if outcome.history is not None else history
        save_network(experiment, network, level, start, finished, history, seconds, len(networks), found)
    remove_checkpoints(checkpoints)


def save_network(
    experiment: Experiment,
    network: Network,
    level: int,
    start: int,
    finished,
    history,
    seconds,
    group_size: int,
    outcomes: List[Outcome] = (),
):
    """Write a network's results to ``<directory>.partial`` and rename it into place, with what
    its methods add (``outcomes`` of training: an early-bird draw, SWAMP's particles)."""
    work_dir = fresh(network.directory + ".partial")
    start_state = jax.device_get(network.state)
    method_records = [m.record(network, level, start_state, finished) for m in experiment.methods]
    start_state = experiment.method.saved_start(start_state, finished)
    save_tree(paths.ticket_dir(work_dir), {key: start_state[key] for key in ("mask", "params", "batch_stats")})
    save_tree(paths.trained_dir(work_dir), {key: finished[key] for key in ("params", "batch_stats")})
    layer_counts = masks.counts(start_state["mask"], experiment.prunable)
    metrics = result_metrics.summarize(level, network.replicate, network.kind, start, history, layer_counts, seconds)
    metrics["data_fingerprint"] = experiment.data_fingerprint
    metrics["examples"] = experiment.data_examples
    metrics["group_size"] = group_size  # networks trained one after another in wall_time_s
    metrics["cost_steps"] = experiment.cost(level)
    for outcome in outcomes:
        metrics.update(outcome.record)
        if outcome.save is not None:
            outcome.save(work_dir)
    structured = experiment.structure.record(start_state["mask"])
    if structured is not None:
        metrics["structure"] = structured
    for record in method_records:
        metrics.update(record)
    write_json(paths.metrics_file(work_dir), metrics)
    if hosts.primary():
        os.rename(work_dir, network.directory)
        experiment.invocation.add(level=level, replicate=network.replicate, kind=network.kind)
        experiment.tracker.log_level(metrics)
        finish.warn_at_chance(experiment, metrics)
        finish.warn_collapse(experiment, metrics, start_state["mask"])
