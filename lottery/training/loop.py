"""The training loop: a group of networks trained together over a range of steps, checkpointed.

A level's networks (a replicate's ticket, its controls, LMC copies; the dense network of the shared
level 0) are stacked along a leading axis and trained by one single-network compiled program each
(``trainer.Trainer``), in chunks that end at evaluations, kept steps and checkpoints. A signal
(``Preemption``) stops the group at the end of a chunk with a checkpoint; the same command resumes
it bitwise. What the loop reports (each evaluation, the histories of a resumed group) goes to a
``Log`` it is handed (W&B: lottery/tracking.py); it knows nothing of experiments.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import signal
import sys
import threading
import time
from typing import List, Optional, Protocol, Sequence, Union

import numpy as np

from lottery import lazy
from lottery import hosts
from lottery.errors import LotteryError, Preempted
from lottery.results import paths
from lottery.results.store import LevelCheckpoints
from lottery.step import Every
from lottery.training import mesh

jax = lazy.module("jax")


@dataclasses.dataclass
class Network:
    """One network to train at a level: a replicate's ticket, one of its controls, or an LMC copy."""

    replicate: int
    kind: str  # ticket | a control | lmc_a | lmc_b
    directory: str  # where its results go (LMC copies: the level's lmc/)
    state: dict  # its training state at the start of the level
    data_key: jax.Array
    augment_key: jax.Array


class Log(Protocol):
    """Where the loop reports as it goes (lottery.tracking.Tracker)."""

    def log_evaluation(self, replicate: int, kind: str, level: int, record: dict) -> None: ...

    def log_history(self, replicate: int, kind: str, level: int, history: List[dict]) -> None: ...


class NoLog:
    def log_evaluation(self, replicate, kind, level, record):
        pass

    def log_history(self, replicate, kind, level, history):
        pass


class Preemption:
    """SIGTERM (a cluster scheduler's preemption notice), SIGUSR2 (SLURM's and submitit's warning
    before a time limit) or Ctrl-C (SIGINT) asks the run to write a checkpoint at the end of the
    current compiled chunk and stop; the same command then continues from there. A second Ctrl-C
    stops without one, at the training loop's next known point (``check``, between the compiled
    loops of epochs), with KeyboardInterrupt; a third is the operating system's (the process ends at
    once). Finished results and the last checkpoint are intact in every case: each appears by a rename.

    The handlers never raise. Python runs a handler between any two bytecodes of the main thread,
    also inside library code that swallows exceptions: JAX's gc callback (``_xla_gc_callback``)
    printed a KeyboardInterrupt raised there as a traceback and the run went on to the end of the
    chunk. A flag read at known points has no such place.

    In a multi-process run the processes agree at every chunk end (``agreed``): a signal to any one
    of them stops all of them at the same step, with the same checkpoint. This is the one mechanism:
    these Python handlers replace the preemption notifier ``jax.distributed`` installs for SIGTERM."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)
    requested = None  # the name of the signal that asked, once one did
    received = ()  # the numbers of the signals that asked, in order
    at_once = False  # a second Ctrl-C came: stop at the next known point, without a checkpoint

    def __enter__(self):
        self.requested, self.previous, self.received, self.at_once = None, {}, [], False
        if threading.current_thread() is threading.main_thread():
            for number in self.SIGNALS:
                self.previous[number] = signal.signal(number, self._request)
        return self

    def agreed(self):
        """The signal that asked any process to stop (every process calls this at the same points)."""
        asked = hosts.agree(signal.Signals[self.requested].value if self.requested else 0)
        if self.requested is None and any(asked):
            number = int(next(a for a in asked if a))
            self.requested = signal.Signals(number).name
            self.received.append(number)  # as if it came here too: process 0 passes it on (pass_on)
        return self.requested

    def check(self) -> None:
        """A known point of the training loop: after a second Ctrl-C, stop here (KeyboardInterrupt,
        which levels.run_locked records as "interrupted" and run.py reports in one line)."""
        if self.at_once:
            raise KeyboardInterrupt

    def _request(self, signum, frame):
        name = signal.Signals(signum).name
        if signum == signal.SIGINT:
            if self.requested == "SIGINT":  # the second Ctrl-C
                self.at_once = True
                signal.signal(signal.SIGINT, signal.SIG_DFL)  # a third ends the process, whatever it is doing
                return
            with contextlib.suppress(RuntimeError):  # print's, when this interrupts a write to stderr
                print(
                    "\nCtrl-C: stopping at the end of the current chunk with a checkpoint (Ctrl-C again to stop at "
                    "once)",
                    file=sys.stderr,
                    flush=True,
                )
        self.requested = name
        if signum not in self.received:
            self.received.append(signum)

    def pass_on(self) -> None:
        """Once the checkpoint is written, hand each signal that stopped the run (but Ctrl-C) to the
        Python handler this run displaced. In a submitit job (hydra/launcher=slurm or local) SIGUSR2's
        is submitit's, and it is what requeues the job (``scontrol requeue``; locally, exit code 144)
        and exits: without this call the job would end with our exit code and never come back.
        Outside submitit there is no such handler and nothing happens; nor is the command line's own
        handler for signals outside training (``outside_training``: run.py), which would stop the
        run a second time, as if the signal had come outside training."""
        for number in self.received:
            handler = self.previous.get(number)
            if number != signal.SIGINT and callable(handler) and not getattr(handler, "outside_training", False):
                handler(number, None)

    def stop(self, message: str) -> Preempted:
        """The exception that ends the run after a requested stop."""
        number = signal.Signals[self.requested]
        return Preempted(
            f"{message} ({'Ctrl-C' if number == signal.SIGINT else self.requested}); run the same command to continue",
            self.requested,
            128 + number,
        )

    def __exit__(self, *exc):
        for number, previous in self.previous.items():
            signal.signal(number, previous)
        self.at_once = False  # training outside this block (tests, benchmarks) is never stopped by it


PREEMPTION = Preemption()


def group_checkpoints(
    root: str, what: str, level: int, networks: List[Network], start: int, end: int
) -> LevelCheckpoints:
    """The checkpoints of one group of networks, below ``root`` (an experiment's directory, or
    the dense store's): named by who is in it, so that a group with other members (controls added,
    some finished) never resumes from it."""
    members = ",".join(f"{n.replicate}:{n.kind}" for n in networks) + f"|{start}-{end}"
    name = f"{what}-{hashlib.sha256(members.encode()).hexdigest()[:10]}"
    return LevelCheckpoints(paths.checkpoint_dir(root, level, name))


def remove_checkpoints(checkpoints) -> None:
    """A finished group's checkpoints, and the directories above them that are left empty."""
    checkpoints.close()
    if hosts.primary():
        shutil.rmtree(checkpoints.directory, ignore_errors=True)
        try:
            os.removedirs(os.path.dirname(checkpoints.directory))  # up to the first that is not empty
        except OSError:
            pass


def now() -> float:
    """The clock of ``checkpoint_every``'s durations."""
    return time.monotonic()


def train(
    trainer,
    states,
    networks: List[Network],
    level: int,
    start: int,
    end: int,
    advance,
    *,
    eval_every: int,
    checkpoint_every: Union[Every, int],
    keep: Sequence[int] = (),
    evaluate: bool = True,
    checkpoints: Optional[LevelCheckpoints] = None,
    say=print,
    log: Log = NoLog(),
):
    """Train stacked states over [start, end) in compiled chunks that end at each evaluation and
    at each step of ``keep`` (level 0 keeps θk there). Returns the final states, each network's
    evaluation history, the stacked states (params, batch_stats, opt_state) at each step of
    ``keep`` in [start, end) (``{step: states}``) and the training time. Without ``evaluate``, no
    evaluation and chunks only at ``keep`` and checkpoints.

    With ``checkpoints``, the run resumes from the newest checkpoint of this group, writes one
    every ``checkpoint_every`` (``step.Every``: steps, or a duration of training; an int: steps) at
    chunk ends, and on SIGTERM writes one and stops. The data
    order and augmentation are functions of (key, step), the running loss sum is saved, and
    splitting a range into chunks changes no bit, so a resumed run is bitwise the run that was not
    interrupted. The seconds returned last are the training time of [start, end), summed over the
    processes that took part (checkpoints carry it).
    """
    every = eval_every
    keep = sorted({s for s in keep if start <= s < end})
    data_keys = jax.numpy.stack([network.data_key for network in networks])
    augment_keys = jax.numpy.stack([network.augment_key for network in networks])
    evaluations = set(range((start // every + 1) * every, end + 1, every)) | {end} if evaluate else set()
    every = checkpoint_every if isinstance(checkpoint_every, Every) else Every(steps=checkpoint_every)
    checkpoint_stops = every.stops(start, end, trainer.iterations_per_epoch) if checkpoints or every.steps else set()
    stops = sorted(evaluations | {end} | checkpoint_stops | {s for s in keep if s > start})
    snapshot = lambda s: jax.device_get({key: s[key] for key in ("params", "batch_stats", "opt_state")})
    kept = {start: snapshot(states)} if start in keep else {}
    histories, step, loss_sum, record_from = [[] for _ in networks], start, None, start
    began, earlier = time.time(), 0.0
    elapsed = lambda: earlier + time.time() - began  # this level's training time, over every process

    resumed = checkpoints.latest(lambda meta: checkpoint_tree(states, meta.get("kept", []))) if checkpoints else None
    if resumed is not None:
        step, arrays, meta = resumed
        states, loss_sum = arrays["states"], arrays["loss_sum"]
        kept = {int(s): jax.device_get(arrays["kept"][str(s)]) for s in meta.get("kept", [])}
        histories, record_from, earlier = meta["histories"], meta["record_from"], meta.get("seconds", 0.0)
        advance(step - start)
        say(f"level {level}: resuming {len(networks)} networks from the checkpoint at step {step}")
        for network, history in zip(networks, histories):  # W&B may have lost them with the killed process
            log.log_history(network.replicate, network.kind, level, history)

    last_save = now()  # a duration counts from here, then from each checkpoint
    for stop in [s for s in stops if s > step]:
        states, loss_sum = trainer.train(states, data_keys, augment_keys, step, stop, loss_sum, check=PREEMPTION.check)
        jax.block_until_ready(loss_sum)  # dispatch is asynchronous: count steps when they are done
        PREEMPTION.check()  # a second Ctrl-C in the chunk's last epoch: no evaluation, no checkpoint
        advance(stop - step)
        step = stop
        if step in keep:
            kept[step] = snapshot(states)
        if step in evaluations:
            train_loss = np.asarray(loss_sum) / (step - record_from)  # mean since the last record
            loss_sum, record_from = None, step
            for network, loss in zip(networks, train_loss):
                if not np.isfinite(loss):
                    raise LotteryError(
                        f"level {level}, replicate {network.replicate}, {network.kind}: training loss is {loss} "
                        f"at step {step}; earlier levels are intact"
                    )
            evaluated = {split: trainer.evaluate(states, split) for split in ("val", "test")}
            for i, (network, history) in enumerate(zip(networks, histories)):
                record = {"step": step, "train_loss": float(train_loss[i])}
                for split, result in evaluated.items():
                    if result is not None:
                        record[f"{split}_loss"], record[f"{split}_accuracy"] = float(result[0][i]), float(result[1][i])
                history.append(record)
                log.log_evaluation(network.replicate, network.kind, level, record)
        stopping = PREEMPTION.agreed() if checkpoints and step < end else None  # by every process, at every chunk end
        at_stop = checkpoints is not None and step in checkpoint_stops  # the same on every process
        due = at_stop and every.due(now() - last_save)
        if at_stop and every.seconds:  # a duration: each process reads its own clock, so they agree
            due = bool(hosts.agree(int(due)).any())
        if checkpoints and step < end and (due or stopping):
            if loss_sum is None:
                loss_sum = jax.numpy.zeros(len(networks), jax.numpy.float32)
            arrays = {"states": states, "loss_sum": loss_sum}
            if kept:
                arrays["kept"] = {str(s): snapshot for s, snapshot in kept.items()}
            meta = {"histories": histories, "record_from": record_from, "kept": sorted(kept), "seconds": elapsed()}
            checkpoints.save(step, arrays, meta)
            last_save = now()
            if stopping:
                checkpoints.close()
                raise PREEMPTION.stop(f"checkpoint written at level {level}, step {step}")
    return mesh.settled(states), histories, kept, elapsed()


def checkpoint_tree(states, kept: Sequence[int]):
    """The structure of a group's checkpoint (with the states kept at the steps ``kept``), for restoring it."""
    tree = {"states": states, "loss_sum": jax.numpy.zeros(jax.tree.leaves(states)[0].shape[0], jax.numpy.float32)}
    if kept:
        tree["kept"] = {str(s): {key: states[key] for key in ("params", "batch_stats", "opt_state")} for s in kept}
    return tree
