"""The dense level 0, trained once and shared by every experiment it is the same for.

Level 0 -- the dense network trained from θ0 for T steps -- depends on the model, the data, the
optimizer, training and the seed (``config.DENSE``), not on how it is pruned, rewound or retrained
afterwards. A sweep over ``rewind``, ``pruning.*``, ``retrain`` or ``controls`` would otherwise
train the same dense network in every network. So it is a result of its own, named by the hash of
those keys (as open_lth's separate pretraining run):

  <output_dir>/dense/<model>-<dataset>-<hash>/
    dense.yaml          what it is: the keys of config.DENSE, with the data's fingerprint, and the
                        backend (gpu, tpu) unless it is the CPU: each backend trains its own
    invocations.jsonl   the invocations that trained something here, and what
    lock                held while an experiment trains or adds to it: another waits, then reuses it
    replicate_<r>/      metrics.json, ticket/ (θ0 and the full mask), trained/ (after T steps)
      rewind_points/<k>/  θk with its batch statistics and optimizer state, for every k any
                          experiment asked for
    checkpoints/        of a training in progress (any experiment that needs it resumes it)

An experiment's ``replicate_<r>/level_0/`` is made from it -- ticket/, trained/, metrics.json and
rewind_point/ (= rewind_points/<k>/ of its own k), hard-linked where the file system allows it,
else copied -- so experiment directories stay self-contained and read as before, and a dense
directory may be deleted once its experiments exist. Its ``linked.json`` records the digests of
what was linked (``damaged``): damage done to the store reaches the experiment through the links,
and is named there; once the store holds the same arrays again, level_0/ is linked to them anew.

A rewind step no experiment asked for before is computed by training the prefix from the nearest
kept step below it (θ0 at worst): the data order is a function of (key, step) and splitting
training into chunks changes no bit, so it is the θk the full run would have kept (tested bitwise).
"""

import os
import shutil
from typing import Dict, List, Optional, Tuple

import jax

from lottery import backend, hosts
from lottery.errors import LotteryError
from lottery.pruning import masks
from lottery.results import metrics as result_metrics
from lottery.results import paths
from lottery.results.identity import dense_identity, digest, write_once
from lottery.results.invocations import Invocation
from lottery.results.metrics import NETWORK_KEYS
from lottery.results.store import (
    files_digest,
    fresh,
    link_tree,
    load_tree,
    open_locked,
    read_json,
    save_tree,
    tree_digest,
    write_json,
)
from lottery.training import trainer as training
from lottery.training import loop
from lottery.training.loop import Network, group_checkpoints, remove_checkpoints

IDENTITY = "dense.yaml"


class Dense:
    """The dense runs of one experiment's (model, data, optimizer, training, seed)."""

    def __init__(self, experiment):
        self.experiment = experiment
        cfg = experiment.cfg
        self.identity = dense_identity(cfg, experiment.data_fingerprint, backend.kind())
        for method in experiment.methods:  # a data diet's pre-training (diet.py): a dense run of its own
            self.identity.update(method.dense_identity())
        self.directory = paths.dense_store(
            experiment.directory, f"{cfg.model.name}-{cfg.dataset.name}-{digest(self.identity)}"
        )

    def replicate_dir(self, replicate: int) -> str:
        return paths.replicate_dir(self.directory, replicate)

    def rewind_dir(self, replicate: int, step: int) -> str:
        return paths.rewind_point_dir(self.directory, replicate, step)

    def kept_steps(self, replicate: int) -> List[int]:
        """The steps whose states this replicate keeps (finished directories only)."""
        directory = os.path.dirname(self.rewind_dir(replicate, 0))
        return sorted(int(name) for name in os.listdir(directory) if name.isdigit()) if os.path.isdir(directory) else []


def link_level_0(
    experiment, replicates: List[int], progress, relink: Optional[Dict[int, Tuple[str, dict]]] = None
) -> List[dict]:
    """Level 0 of ``replicates`` in the experiment's directory, from the shared dense runs: trains
    the replicates the store lacks and the rewind point k where it lacks it (under the store's
    lock; another process working on it is waited for), then links them in. ``relink``: replicates
    whose level_0/ is there but damaged (``damaged``: the tree, and the digests recorded when it was
    linked), linked again where the store holds the same arrays. Returns the metrics of each
    replicate's level 0, now in the experiment."""
    relink = relink or {}
    replicates = sorted(set(replicates) | set(relink))
    if not replicates:
        return []
    dense, k, lock = Dense(experiment), experiment.rewind, None
    say = progress.console.print
    identity_file = os.path.join(dense.directory, IDENTITY)
    # Directories appear whole (one rename): what is there needs no lock, only what is missing does
    # (a missing dense.yaml too: written again under the lock).
    complete = os.path.isfile(identity_file) and all(
        os.path.isdir(dense.replicate_dir(r)) and k in dense.kept_steps(r) for r in replicates
    )
    trained = []  # replicates this invocation trains in the store
    if not all(hosts.agree(int(complete))):  # every process takes the same path
        lock = lock_store(dense, say)
        try:
            trained = [r for r in replicates if not os.path.isdir(dense.replicate_dir(r))]
            for r in replicates:
                if r not in trained:
                    verify(dense, r, relink.get(r))
            if trained or any(k not in dense.kept_steps(r) for r in replicates):
                invocation = Invocation(
                    dense.directory, experiment.cfg, experiment.invocation.program, write=hosts.primary()
                )
                announce_other_programs(dense, invocation, say)
                try:
                    train_dense(dense, trained, invocation, progress)
                    keep_rewind_point(
                        dense, [r for r in replicates if k not in dense.kept_steps(r)], invocation, progress
                    )
                except BaseException as error:
                    status = (
                        "interrupted"
                        if isinstance(error, KeyboardInterrupt)
                        else "preempted"
                        if loop.PREEMPTION.requested
                        else f"failed: {type(error).__name__}: {error}"
                    )
                    invocation.end(status.splitlines()[0])
                    raise
                invocation.end("finished")
        finally:
            if lock is not None:
                lock.close()
    else:  # no lock needed to read it: the store's identity must still be its directory's
        write_once(identity_file, dense.identity, "dense run")
    linked = []
    for r in replicates:
        digests = verify(dense, r, relink.get(r))
        if r in relink:
            same_arrays(dense, r, relink[r], digests, r in trained)
            linked.append(relink_replicate(dense, r, digests))
        else:
            linked.append(link_replicate(dense, r, digests))
    return linked


# What an experiment's level_0/ holds of the dense run: its trees, each named as it is there, and
# the record of what was linked (each tree's digests: of its files, of its arrays). Not in
# metrics.json, which is the same in every run: files hold the time orbax wrote them.
LINKED = ("ticket", "trained", "rewind_point")
LINKS = "linked.json"


def sources(dense: Dense, replicate: int) -> Dict[str, str]:
    """Where the store keeps the trees an experiment's level_0/ links (``LINKED``)."""
    return {
        "ticket": paths.ticket_dir(dense.replicate_dir(replicate)),
        "trained": paths.trained_dir(dense.replicate_dir(replicate)),
        "rewind_point": dense.rewind_dir(replicate, dense.experiment.rewind),
    }


def verify(dense: Dense, replicate: int, relink: Optional[Tuple[str, dict]] = None) -> Dict[str, dict]:
    """Every file of the dense run an experiment is about to link must be readable: a damaged one
    is named in the store (where deleting the replicate's directory trains it again), not only
    later through a link in the experiment. Returns each tree's digests (files and arrays), which
    the experiment's level_0/linked.json records: ``damaged`` compares with them later."""
    experiment, digests = dense.experiment, {}
    try:
        read_json(paths.metrics_file(dense.replicate_dir(replicate)), NETWORK_KEYS)
        for what, path in sources(dense, replicate).items():
            if what != "rewind_point" or os.path.isdir(path):  # θk may still be to compute
                owner = path if what == "rewind_point" else None  # deleting the step alone computes it again
                tree = load_tree(path, experiment.template(what), owner=owner)
                digests[what] = {"files": files_digest(path), "arrays": tree_digest(tree)}
    except LotteryError:
        if relink is None:
            raise
        level_0 = experiment.level_dir(replicate, 0)
        raise LotteryError(
            f"{level_0}/{relink[0]}: damaged, and so is the dense store's copy it links to: "
            f"delete {dense.replicate_dir(replicate)} and run this again (trained there, relinked "
            "here)"
        ) from None
    return digests


def damaged(experiment, replicate: int, say) -> Optional[Tuple[str, dict]]:
    """The first tree of an experiment's ``level_0/`` that no longer holds what was linked into it,
    with the digests recorded then (``LINKS``): damage done to the store reaches every experiment
    through the hard links, and outlives the store's files when they are trained again. The files
    are compared first; where they differ, the arrays they read as. None: all intact, or nothing
    recorded (linked by an older version)."""
    level_0 = experiment.level_dir(replicate, 0)
    if not os.path.isfile(os.path.join(level_0, LINKS)):
        return None
    recorded, changed = read_json(os.path.join(level_0, LINKS), LINKED), {}
    for what, digests in recorded.items():
        path = os.path.join(level_0, what)
        files = files_digest(path)
        if files == digests["files"]:
            continue
        try:
            same = tree_digest(load_tree(path, experiment.template(what))) == digests["arrays"]
        except LotteryError:
            same = False
        if not same:
            return what, recorded
        changed[what] = files
    if changed:  # a file orbax does not read, say: nothing to repair, said once
        say(
            f"note: {level_0}/{', '.join(changed)}: files changed since they were linked, the arrays they hold did "
            "not; their digest is recorded again"
        )
        write_json(
            os.path.join(level_0, LINKS),
            {what: {**digests, "files": changed.get(what, digests["files"])} for what, digests in recorded.items()},
        )
    return None


def same_arrays(
    dense: Dense, replicate: int, relink: Tuple[str, dict], digests: Dict[str, dict], trained: bool
) -> None:
    """A damaged level_0/ is linked again only to the arrays it was linked to: the store's own
    (untouched, a copy was damaged) or the same bits trained again (training is deterministic)."""
    what, recorded = relink
    if all(digests[w]["arrays"] == recorded[w]["arrays"] for w in recorded):
        return
    level_0 = dense.experiment.level_dir(replicate, 0)
    if trained:  # another loop, stack width or mesh rounds otherwise (docs/reproducibility.md)
        raise LotteryError(
            f"{level_0}/{what}: damaged, and the dense store trained it again with other bits (another "
            f"program?): delete {os.path.dirname(level_0)} to train this replicate again"
        )
    raise LotteryError(
        f"{level_0}/{what}: damaged, and the dense store's copy differs from what was linked "
        f"(damaged too?): delete {dense.replicate_dir(replicate)} and run this again (trained there, "
        "relinked here)"
    )


def announce_other_programs(dense: Dense, invocation, say) -> None:
    """As for an experiment (levels.run_locked): dense runs trained by another backend, loop placement
    or mesh round differently, and a rewind point computed now continues them with this one."""
    others = invocation.other_programs()
    if others and any(os.path.isdir(dense.replicate_dir(r)) for r in range(dense.experiment.cfg.replicates)):
        described = "; ".join(", ".join(f"{key} {value}" for key, value in p.items()) for p in others)
        now = ", ".join(f"{key} {value}" for key, value in invocation.program.items())
        say(
            f"note: the dense runs in {dense.directory} were also trained by another program ({described}); "
            f"this invocation trains with {now}: their bits are not comparable (docs/reproducibility.md)"
        )


def lock_store(dense: Dense, say):
    """Process 0 makes the store's directory, takes its lock (waiting while another process holds
    it, until a signal asks this run to stop) and checks its identity (written again, and said, if
    it was lost); every process learns whether it could."""

    def stop_if_asked():
        if loop.PREEMPTION.requested:
            raise loop.PREEMPTION.stop(f"stopped while waiting for {dense.directory}")

    def identify():
        path = os.path.join(dense.directory, IDENTITY)
        if not os.path.exists(path) and paths.replicates(dense.directory):
            say(f"note: {path} was missing; written again (the identity its directory's hash is of)")
        write_once(path, dense.identity, "dense run")

    return open_locked(
        dense.directory,
        identify,
        "the shared dense level 0",
        wait=lambda line: say(f"level 0: {line}"),
        stop=stop_if_asked,
    )


def train_dense(dense: Dense, replicates: List[int], invocation, progress) -> None:
    """Train the dense networks of ``replicates`` from θ0 for T steps, as one group, keeping the
    experiment's θk; each appears as ``replicate_<r>/`` when complete."""
    if not replicates:
        return
    experiment = dense.experiment
    k, end = experiment.rewind, experiment.end
    networks = []
    for r in replicates:
        keys = experiment.keys(r)
        networks.append(
            Network(r, "ticket", dense.replicate_dir(r), experiment.dense_start(r), keys["data"], keys["augment"])
        )
    states = training.stack([network.state for network in networks])
    task = progress.add_task(
        f"level 0 (dense, shared: {os.path.basename(dense.directory)}): {len(networks)} x ticket", total=end
    )
    checkpoints = group_checkpoints(dense.directory, "train", 0, networks, 0, end)
    states, histories, kept, seconds = experiment.train(
        states,
        networks,
        0,
        0,
        end,
        lambda n: progress.advance(task, n),
        trainer=experiment.level_0_trainer(dense.directory, progress.console.print),
        keep=[k],
        checkpoints=checkpoints,
        say=progress.console.print,
    )
    for i, network in enumerate(networks):
        work_dir = fresh(network.directory + ".partial")
        start = jax.device_get(network.state)
        save_tree(paths.ticket_dir(work_dir), {key: start[key] for key in ("mask", "params", "batch_stats")})
        finished = training.unstack(states, i)
        save_tree(paths.trained_dir(work_dir), {key: finished[key] for key in ("params", "batch_stats")})
        if hosts.primary():
            os.makedirs(os.path.join(work_dir, "rewind_points"))
        for step, snapshots in kept.items():
            save_tree(os.path.join(work_dir, "rewind_points", str(step)), training.unstack(snapshots, i))
        metrics = result_metrics.summarize(
            0, network.replicate, "ticket", 0, histories[i], masks.counts(start["mask"], experiment.prunable), seconds
        )
        metrics.update(
            data_fingerprint=experiment.data_fingerprint, examples=experiment.data_examples, group_size=len(networks)
        )
        write_json(paths.metrics_file(work_dir), metrics)
        if hosts.primary():
            os.rename(work_dir, network.directory)
        invocation.add(replicate=network.replicate, trained=end, kept=sorted(kept))
    remove_checkpoints(checkpoints)
    hosts.barrier(f"dense {dense.directory}")  # every process sees the new directories before it looks


def keep_rewind_point(dense: Dense, replicates: List[int], invocation, progress) -> None:
    """θk of ``replicates`` whose dense run did not keep it: train the prefix from the nearest
    kept step below k (θ0 at worst), grouped by that step."""
    experiment = dense.experiment
    trainer, k = experiment.trainer, experiment.rewind
    starts = {}
    for r in replicates:
        below = [s for s in dense.kept_steps(r) if s < k]
        starts.setdefault(below[-1] if below else 0, []).append(r)
    for start, group in sorted(starts.items()):
        networks = []
        for r in group:
            keys = experiment.keys(r)
            ticket = load_tree(paths.ticket_dir(dense.replicate_dir(r)), experiment.template("ticket"))
            opt_state = None
            if start in dense.kept_steps(r):
                kept = dense.rewind_dir(r, start)
                point = load_tree(kept, experiment.template("rewind_point"), owner=kept)
                ticket.update(params=point["params"], batch_stats=point["batch_stats"])
                opt_state = point["opt_state"]
            state = trainer.init_state(ticket["params"], ticket["batch_stats"], ticket["mask"], opt_state)
            networks.append(Network(r, "ticket", dense.rewind_dir(r, k), state, keys["data"], keys["augment"]))
        states = training.stack([network.state for network in networks])
        task = progress.add_task(
            f"level 0 (dense): rewind point {k} from step {start}, {len(networks)} networks", total=k - start
        )
        checkpoints = group_checkpoints(dense.directory, f"rewind_point_{k}", 0, networks, start, k)
        states, _, _, _ = experiment.train(
            states,
            networks,
            0,
            start,
            k,
            lambda n: progress.advance(task, n),
            trainer=experiment.level_0_trainer(dense.directory, progress.console.print),
            evaluate=False,
            checkpoints=checkpoints,
            say=progress.console.print,
        )
        for i, network in enumerate(networks):
            partial = network.directory + ".partial"
            if hosts.primary() and os.path.isdir(partial):  # an interrupted attempt
                shutil.rmtree(partial)
            hosts.barrier(f"rewind point {partial}")
            finished = training.unstack(states, i)
            save_tree(partial, {key: finished[key] for key in ("params", "batch_stats", "opt_state")})
            if hosts.primary():
                os.rename(partial, network.directory)
            invocation.add(replicate=network.replicate, rewind_point=k, from_step=start)
        remove_checkpoints(checkpoints)
    hosts.barrier(f"rewind points {dense.directory}")


def link_replicate(dense: Dense, replicate: int, digests: Dict[str, dict]) -> dict:
    """The experiment's ``replicate_<r>/level_0/`` from the dense run, by one rename, with the
    ``digests`` of what it links; its metrics."""
    experiment = dense.experiment
    source, destination = dense.replicate_dir(replicate), experiment.level_dir(replicate, 0)
    metrics = read_json(paths.metrics_file(source), NETWORK_KEYS)
    # Counted by this experiment's rule (pruning.ignore decides what is prunable, not the dense run).
    full = masks.full_mask(experiment.trainer.init_params)
    metrics.update(result_metrics.count_fields(masks.counts(full, experiment.prunable)))
    metrics["dense"] = os.path.relpath(dense.directory, os.path.dirname(experiment.directory))
    work_dir = fresh(destination + ".partial")
    if hosts.primary():
        for what, path in sources(dense, replicate).items():
            link_tree(path, os.path.join(work_dir, what))
        write_json(paths.metrics_file(work_dir), metrics)
        write_json(os.path.join(work_dir, LINKS), digests)
        os.rename(work_dir, destination)
    hosts.barrier(f"level 0 {destination}")
    return metrics


def relink_replicate(dense: Dense, replicate: int, digests: Dict[str, dict]) -> dict:
    """A damaged ``level_0/`` linked again (to the same arrays: ``same_arrays``): each tree replaced
    by the store's, one rename each, and linked.json last, so that a kill midway leaves what
    ``damaged`` finds again; the rest of level 0 (metrics.json, an LMC measurement) stays. Its metrics."""
    level_0 = dense.experiment.level_dir(replicate, 0)
    if hosts.primary():
        for what, path in sources(dense, replicate).items():
            tree = os.path.join(level_0, what)
            for leftover in (tree + ".partial", tree + ".damaged"):  # of an attempt a kill stopped
                if os.path.isdir(leftover):
                    shutil.rmtree(leftover)
            link_tree(path, tree + ".partial")
            if os.path.isdir(tree):
                os.rename(tree, tree + ".damaged")
            os.rename(tree + ".partial", tree)
            shutil.rmtree(tree + ".damaged")
        write_json(os.path.join(level_0, LINKS), digests)
    hosts.barrier(f"level 0 relinked {level_0}")
    return read_json(paths.metrics_file(level_0), NETWORK_KEYS)
