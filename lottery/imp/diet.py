"""Data diets, config ``diet``: which examples the dense network pre-trains on before IMP rewinds to it.

Paul, Ganguli & Dziugaite ("Deep Learning on a Data Diet", NeurIPS 2021) score each training example
by how hard it is, early in the training of several independent dense networks, and average over
them (their Sec. 2; 10 networks in the paper, ``diet.networks`` here):

- EL2N, the error L2 norm: ``|| softmax(f(x)) - onehot(y) ||_2`` (their Eq. 2; at epoch 20 of 200
  on CIFAR-10);
- GraNd, the gradient norm: ``|| d loss(f(x), y) / d weights ||_2`` over every parameter (their
  Eq. 1; useful already at initialization, ``diet.score_at=0it``).

Both are taken with the model in evaluation mode (batch norm with its running statistics), on the
training split as stored (no augmentation), one example at a time. ``diet.score_at`` null scores at a
tenth of training (their epoch 20 of 200). ``diet.score=random`` draws uniform scores instead: the
easy (or hard) end is then a uniformly random subset of the same size, their control.

Paul, Larsen, Ganguli, Frankle & Dziugaite ("Lottery Tickets on a Data Diet", NeurIPS 2022) pre-train
the dense network on a subset for the rewind step's ``t_r`` steps and run IMP from there, every
level training on the whole set: holding the pre-training steps fixed, a small random fraction of
the data suffices for a good rewind point, and the easiest examples (lowest EL2N) reach one in
fewer steps than the whole set or a random subset. Here: the dense level 0 trains its first
``diet.pretrain`` steps (null: the rewind step k; at most k) on the ``diet.keep`` fraction of the
training set at the ``diet.subset`` end of the ranking (easy: lowest scores; hard: highest), after
leaving out the ``diet.offset`` fraction at that end (Paul et al. 2021, Sec. 4, keep the hardest
but the very hardest, which are often mislabelled); with ``diet.balance``, from each class's own
ranking, each class kept in its share of the set (an easy end is otherwise far from balanced: on
MNIST the easiest tenth by EL2N is half zeros). Then on the whole set from the step it reached.
The subset's epochs are its own (len(subset) // batch size steps, each a seeded permutation of the
subset); the whole set's epochs continue as if the pre-training had been on it,
so steps [pretrain, T) see the batches of the run without a diet. The learning-rate schedule is the
global step's, as everywhere.

Scores are a result of their own, shared like the dense level 0 (dense.py) by every experiment of
the same model, data, optimizer, training, seed and scoring (not keep, subset or pretrain):

  <output_dir>/diets/<model>-<dataset>-<score>-<hash>/
    diet.yaml      what they are: the dense keys with the data's fingerprint, score, score_at, networks
    scores.npy     one float32 per training example, in the stored order (NumPy's format, no pickle)
    metrics.json   how they were made: score, step, networks, each network's mean score, the steps,
                   and scores.npy's digest (``scores_digest``): a replaced or damaged scores.npy is
                   named, never used
    lock
    networks/      while scoring: each scoring network's trained weights (<i>/) and scores (<i>.npy)
                   as it finishes, so that an interrupted scoring resumes with them (bitwise);
                   removed once scores.npy is written

``diet.scores=<file.npy>`` uses any such file instead (another model's scores: Paul et al. 2021
find scores transfer across architectures), hashed by its content; where a ``metrics.json`` lies
beside it, its data must be this experiment's. The experiment records what its diet chose in
``diet.json`` (the scores used and their digest, the subset's size, classes and mean scores) and
``diet_subset.npy`` (the indices); ``lottery.analysis.diet`` reads them back. The subset is chosen
once per dense run and kept in its directory (``subset``): a resumed dense run, or one asked for
another rewind step, pre-trains on what it began with, even where the scores were computed again
since by another program (whose last bits may differ: the scores' ``metrics.json`` names the
program; asked again, an experiment whose ``diet.json`` records other scores than the store now
holds says so). One subset serves every replicate (random scores too: a control of the subset's size,
not of its draw).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import shutil
import time
from typing import Optional

import numpy as np

from lottery import lazy
from lottery import backend, hosts
from lottery.errors import LotteryError
from lottery.imp.method import Method, method
from lottery.results import paths
from lottery.results.identity import dense_identity, digest, file_digest, write_once
from lottery.results.invocations import program
from lottery.results.store import load_tree, open_locked, read_json, save_tree, write_json, write_whole
from lottery.step import Step
from lottery.training import loop
from lottery.training import trainer as training
from lottery.training.loop import Network

jax = lazy.module("jax")
jnp = lazy.module("jax.numpy")
optax = lazy.module("optax")

SCORES = ("el2n", "grand", "random")
SUBSETS = ("easy", "hard")
IDENTITY = "diet.yaml"
RECORD, SUBSET = paths.DIET_RECORD, paths.DIET_SUBSET  # in the experiment's directory
NPY_MAGIC = b"\x93NUMPY"  # how every .npy file begins (NumPy's format)
METRICS_KEYS = ("score", "score_at", "networks", "examples", "data_fingerprint")
# Scoring network i has the PRNG keys (θ0, data order, augmentation) of replicate FIRST + i: the
# same construction as the experiment's replicates, far from any replicate number in use.
FIRST = 2**22


def enabled(cfg) -> bool:
    return cfg.diet.score is not None or cfg.diet.scores is not None


def check(cfg) -> None:
    """The diet's settings that need no data."""
    d = cfg.diet
    if not enabled(cfg):  # its keys left over: refused by config.check_unused
        return
    if d.score is not None and d.scores is not None:
        raise LotteryError(
            f"diet.score={d.score} and diet.scores={d.scores}: set one (scores computed here, or read from a file)"
        )
    if d.score is not None and d.score not in SCORES:
        raise LotteryError(f"diet.score={d.score!r} is not a score; choose one of: {', '.join(SCORES)}")
    if d.subset not in SUBSETS:
        raise LotteryError(f"diet.subset={d.subset!r} is not a subset; choose one of: {', '.join(SUBSETS)}")
    if d.networks < 1:
        raise LotteryError(f"diet.networks={d.networks} must be 1 or more (scoring networks averaged over)")
    if not 0 < d.keep <= 1:
        raise LotteryError(f"diet.keep={d.keep} must be in (0, 1]: the fraction of the training set pre-trained on")
    if not 0 <= d.offset < 1 or d.keep + d.offset > 1:
        raise LotteryError(
            f"diet.offset={d.offset} must be in [0, 1) with diet.keep + diet.offset <= 1 (here "
            f"{d.keep + d.offset:g}): the fraction left out at the subset's end before keeping"
        )
    # the methods it works with: imp/method.py's check (Diet.works_with)


@dataclasses.dataclass
class Plan:
    """A diet as this experiment resolves it (``plan``)."""

    score: Optional[str]  # el2n, grand, random; None where read from ``file``
    file: Optional[str]
    score_at: int  # steps the scoring networks train before they score
    networks: int
    kept: int  # examples pre-trained on
    skipped: int  # examples left out at the subset's end first (offset)
    subset: str
    pretrain: int  # steps [0, pretrain) of level 0 on the subset
    examples: int  # in the training split
    balance: bool = False  # each class's share kept from each class's own ranking
    digest: Optional[str] = None  # of ``file``'s content when the run began (what its hash holds)

    @property
    def dense(self) -> dict:
        """What the diet adds to the dense level 0's identity (dense.py): pretrain as a step count
        (null there would depend on the rewind step, which is not part of it)."""
        scores = (
            {"scores": self.digest}
            if self.file
            else {"score": self.score}
            if self.score == "random"
            else {"score": self.score, "score_at": self.score_at, "networks": self.networks}
        )
        balance = {"balance": True} if self.balance else {}  # absent unless set, as in the experiment's hash
        return {
            **scores,
            "kept": self.kept,
            "skipped": self.skipped,
            "subset": self.subset,
            "pretrain": self.pretrain,
            **balance,
        }


def plan(
    cfg, examples: int, per_epoch: int, batch_size: int, end: int, rewind: int, data_fingerprint: str
) -> Optional[Plan]:
    """The diet's counts and steps, checked against the data and training (None without a diet);
    a scores file is read and checked now, before anything is written."""
    if not enabled(cfg):
        return None
    d = cfg.diet
    pretrain = rewind if d.pretrain is None else Step.parse(d.pretrain, per_epoch, "diet.pretrain").iteration
    if rewind == 0:
        raise LotteryError(
            "diet: pre-training on a subset needs a rewind step after it (rewind=0it rewinds to θ0); "
            "set rewind, e.g. rewind=1ep"
        )
    if not 0 < pretrain <= rewind:
        raise LotteryError(
            f"diet.pretrain={d.pretrain} must be between 1 iteration and the rewind step "
            f"(rewind={cfg.rewind}, {rewind} iterations): every level rewinds to a pre-trained point"
        )
    score_at = end // 10 if d.score_at is None else Step.parse(d.score_at, per_epoch, "diet.score_at").iteration
    if score_at > end:
        raise LotteryError(
            f"diet.score_at={d.score_at} is past the end of training (training.steps={cfg.training.steps})"
        )
    kept, skipped = math.floor(d.keep * examples + 1e-9), math.floor(d.offset * examples + 1e-9)
    if kept < batch_size:
        raise LotteryError(
            f"diet.keep={d.keep} keeps {kept} of the {examples} training examples, fewer than a batch "
            f"(training.batch_size={batch_size}); keep at least {math.ceil(batch_size / examples * 1000) / 1000}"
        )
    file = digest_now = None
    if d.scores is not None:
        file = os.path.abspath(os.path.expanduser(d.scores))
        read_scores(file, examples, data_fingerprint)
        digest_now = file_digest(file, "diet.scores")
    return Plan(d.score, file, score_at, d.networks, kept, skipped, d.subset, pretrain, examples, d.balance, digest_now)


# --- the scores ---------------------------------------------------------------------------------


def el2n(trainer, params, batch_stats, images, labels):
    """Each example's error L2 norm, || softmax(f(x)) - onehot(y) ||_2 (model in evaluation mode)."""
    logits, _ = trainer.apply(params, batch_stats, trainer.inputs(images), train=False)
    errors = jax.nn.softmax(logits) - jax.nn.one_hot(labels, logits.shape[-1])
    return jnp.sqrt(jnp.sum(errors**2, axis=-1))


def grand(trainer, params, batch_stats, images, labels):
    """Each example's gradient norm: of its own cross-entropy loss, over every parameter."""

    def loss(p, image, label):
        logits, _ = trainer.apply(p, batch_stats, trainer.inputs(image[None]), train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, label[None])[0]

    grads = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(params, images, labels)
    return jnp.sqrt(sum(jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1) for g in jax.tree.leaves(grads)))


SCORE_FUNCTIONS = {"el2n": el2n, "grand": grand}
BATCH = {"el2n": 1000, "grand": 100}  # examples scored at once
GRADIENTS_BYTES = 2**30  # GraNd holds a batch's per-example gradients at once: at most this much of them


def example_scores(trainer, weights: dict, score: str) -> np.ndarray:
    """``score`` of every training example under ``weights`` (params, batch_stats), float32."""
    images, labels = trainer.train_host
    size = min(BATCH[score], len(images))
    if score == "grand":  # VGG-16's 15M parameters: 18 examples a batch
        size = max(1, min(size, GRADIENTS_BYTES // (4 * sum(np.size(a) for a in jax.tree.leaves(weights["params"])))))
    function = _scorer(trainer, score)
    out = []
    for first in range(0, len(images), size):  # the last batch padded to the same shape, then cut
        x, y = images[first : first + size], labels[first : first + size]
        pad = size - len(x)
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
        y = np.concatenate([y, np.zeros(pad, y.dtype)]) if pad else y
        out.append(np.asarray(function(weights["params"], weights["batch_stats"], x, y))[: size - pad])
    return np.concatenate(out).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _scorer(trainer, score: str):
    """``score`` of a batch, compiled once per trainer: every scoring network reuses the program."""
    return jax.jit(lambda p, b, x, y: SCORE_FUNCTIONS[score](trainer, p, b, x, y))


def random_scores(cfg, examples: int) -> np.ndarray:
    """Uniform scores from the experiment's seed: either end is a uniformly random subset."""
    key = jax.random.fold_in(jax.random.key(cfg.seed), FIRST - 1)
    return np.asarray(jax.random.uniform(key, (examples,)), np.float32)


class Store:
    """The shared scores of one (model, data, optimizer, training, seed, score, step, networks)."""

    def __init__(self, d: "Diet"):
        cfg, p = d.context.cfg, d.plan
        self.identity = {
            **dense_identity(cfg, d.context.data_fingerprint, backend.kind()),
            "diet": {"score": p.score, "score_at": p.score_at, "networks": p.networks},
        }
        name = f"{cfg.model.name}-{cfg.dataset.name}-{p.score}-{digest(self.identity)}"
        self.directory = paths.diet_store(d.context.directory, name)
        self.scores = os.path.join(self.directory, "scores.npy")
        self.metrics = paths.metrics_file(self.directory)
        self.networks = os.path.join(self.directory, "networks")  # scoring in progress (``compute``)

    def complete(self) -> bool:
        return os.path.isfile(self.metrics) and os.path.isfile(self.scores)


def scores(d: "Diet", say=print) -> np.ndarray:
    """The experiment's scores: read from ``diet.scores``, drawn (random), or the shared store's
    (computed there first where it has none, under its lock)."""
    p = d.plan
    if p.file is not None:
        if file_digest(p.file, "diet.scores") != p.digest:  # the experiment's hash holds the content it began with
            raise LotteryError(
                f"diet.scores: {p.file}: changed since this run began (its content is part of the "
                "experiment's hash); run again to use the new scores as another experiment"
            )
        return read_scores(p.file, p.examples, d.context.data_fingerprint)
    if p.score == "random":
        return random_scores(d.context.cfg, p.examples)
    store = Store(d)
    if not all(hosts.agree(int(store.complete()))):
        lock = open_locked(
            store.directory,
            lambda: write_once(os.path.join(store.directory, IDENTITY), store.identity, "data diet's scores"),
            "the data diet's scores",
            wait=lambda line: say(f"diet: {line}"),
            stop=stop_if_asked,
        )
        try:
            if not all(hosts.agree(int(store.complete()))):
                compute(d, store, say)
        finally:
            if lock is not None:
                lock.close()
    else:
        write_once(os.path.join(store.directory, IDENTITY), store.identity, "data diet's scores")
    verify(store)
    return read_scores(store.scores, p.examples, d.context.data_fingerprint)


def verify(store: Store) -> Optional[str]:
    """The store's scores.npy must be the file its metrics.json recorded (as the dense store's
    arrays are checked against their digests): a replaced or damaged one is named, never used.
    Returns its digest (None where the store was written before digests were recorded)."""
    recorded = read_json(store.metrics, METRICS_KEYS).get("scores_digest")
    if recorded is None:
        return None
    now = file_digest(store.scores, "diet scores")
    if now != recorded:
        raise LotteryError(
            f"{store.scores}: replaced or damaged since it was computed (digest {now}; "
            f"{store.metrics} records {recorded}); delete {store.directory} to compute the scores again"
        )
    return now


def stop_if_asked():
    if loop.PREEMPTION.requested:
        raise loop.PREEMPTION.stop("stopped while waiting for the data diet's scores")


def compute(d: "Diet", store: Store, say) -> None:
    """Train ``networks`` dense networks for ``score_at`` steps, score every example with each, and
    write their mean (scores.npy, then metrics.json: the store is complete once that exists). Each
    network's trained weights and then its scores are kept in ``networks/`` as they are done, and
    training is checkpointed: an interrupted scoring (Ctrl-C, kill -9) resumes from what it kept,
    and the mean is bitwise the one an uninterrupted scoring writes."""
    p, began = d.plan, time.time()
    trained_dir = lambda i: os.path.join(store.networks, str(i))
    scored = lambda i: os.path.join(store.networks, f"{i}.npy")
    kept = [i for i in range(p.networks) if os.path.isfile(scored(i)) or os.path.isdir(trained_dir(i))]
    resuming = f"; resuming with {len(kept)} networks already trained" if kept else ""
    say(
        f"diet: scoring the {p.examples} training examples by {p.score} with {p.networks} dense networks at step "
        f"{p.score_at} ({os.path.basename(store.directory)}){resuming}"
    )
    train_networks(d, store, [i for i in range(p.networks) if i not in kept], trained_dir, say)
    each = []
    for i in range(p.networks):
        if not all(hosts.agree(int(os.path.isfile(scored(i))))):
            weights = load_tree(trained_dir(i), d.context.template("trained"), owner=trained_dir(i))
            values = example_scores(d.context.trainer, weights, p.score)
            if hosts.primary():
                write_whole(scored(i), lambda partial: _save(partial, values))
            hosts.barrier(f"diet network {scored(i)}")
        each.append(read_scores(scored(i), p.examples))
    mean = np.mean(np.stack(each).astype(np.float64), axis=0).astype(np.float32)
    if hosts.primary():
        write_whole(store.scores, lambda partial: _save(partial, mean))
    hosts.barrier(f"diet scores.npy {store.directory}")
    write_json(
        store.metrics,
        {
            "score": p.score,
            "score_at": p.score_at,
            "networks": p.networks,
            "examples": p.examples,
            "data_fingerprint": d.context.data_fingerprint,
            "network_means": [float(np.mean(s)) for s in each],
            "scoring_steps": p.networks * p.score_at,
            "seconds": time.time() - began,
            "program": program(
                d.context.trainer.host_loop, d.context.cfg.mesh, d.context.trainer.width, backend.deterministic_ops()
            ),
            "scores_digest": file_digest(store.scores, "diet scores"),
        },
    )
    if hosts.primary():  # complete: what scoring kept on the way is not needed any more
        shutil.rmtree(store.networks, ignore_errors=True)
    hosts.barrier(f"diet scores {store.directory}")


def train_networks(d: "Diet", store: Store, numbers, trained_dir, say) -> None:
    """The scoring networks ``numbers`` trained ``score_at`` steps as one group (checkpointed in the
    store), each kept as ``networks/<i>/`` (its weights and batch statistics), which appears whole."""
    if not numbers:
        return
    p = d.plan
    networks = []
    for i in numbers:
        keys = d.context.keys(FIRST + i)
        networks.append(
            Network(
                FIRST + i, "ticket", trained_dir(i), d.context.dense_start(FIRST + i), keys["data"], keys["augment"]
            )
        )
    states, checkpoints = training.stack([network.state for network in networks]), None
    if p.score_at > 0:
        checkpoints = loop.group_checkpoints(store.directory, "scoring", 0, networks, 0, p.score_at)
        states, _, _, _ = loop.train(
            d.context.trainer,
            states,
            networks,
            0,
            0,
            p.score_at,
            lambda n: None,
            eval_every=p.score_at,
            checkpoint_every=d.context.checkpoint_every,
            evaluate=False,
            checkpoints=checkpoints,
            say=say,
        )
    for j, network in enumerate(networks):
        partial = network.directory + ".partial"
        if hosts.primary() and os.path.isdir(partial):  # an interrupted attempt
            shutil.rmtree(partial)
        hosts.barrier(f"diet network {partial}")
        finished = training.unstack(states, j)
        save_tree(partial, {key: finished[key] for key in ("params", "batch_stats")})
        if hosts.primary():
            os.rename(partial, network.directory)
    if checkpoints is not None:
        loop.remove_checkpoints(checkpoints)
    hosts.barrier(f"diet networks {store.directory}")


def _save(partial: str, array: np.ndarray) -> None:
    with open(partial, "wb") as f:  # np.save(path) would add .npy to the partial name
        np.save(f, array, allow_pickle=False)


def read_scores(path: str, examples: int, data_fingerprint: Optional[str] = None) -> np.ndarray:
    """A scores file: one finite number per training example (NumPy's .npy, no pickled objects);
    with ``data_fingerprint``, a ``metrics.json`` beside it must name the same data."""
    try:
        with open(path, "rb") as f:
            magic = f.read(len(NPY_MAGIC))
        if magic != NPY_MAGIC:  # np.load would try it as a pickle, and advise trusting it
            raise LotteryError(
                f"{path}: not a NumPy .npy file (it does not begin as one: text, a pickle or another "
                "format?); give a scores.npy saved by numpy.save, one number per training example"
            )
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise LotteryError(
            f"diet.scores: {path}: no such file; give a scores.npy (a diet store's, "
            "<output_dir>/diets/*/scores.npy, or one number per training example)"
        ) from None
    except ValueError as error:
        if "allow_pickle" not in str(error):
            raise LotteryError(
                f"{path}: cannot be read as a NumPy .npy array of scores (ValueError: "
                f"{str(error).splitlines()[0]}); delete it or give another"
            ) from None
        raise LotteryError(
            f"{path}: holds Python objects (a pickled object array), not numbers; give one real "
            "score per training example"
        ) from None
    except (OSError, EOFError) as error:
        raise LotteryError(
            f"{path}: cannot be read as a NumPy .npy array of scores ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'truncated'}); delete it or give another"
        ) from None
    if (
        not isinstance(array, np.ndarray)
        or array.ndim != 1
        or not np.issubdtype(array.dtype, np.number)
        or np.issubdtype(array.dtype, np.complexfloating)
    ):
        raise LotteryError(
            f"{path}: holds {getattr(array, 'dtype', type(array).__name__)} of shape "
            f"{getattr(array, 'shape', '?')}, not one real score per training example"
        )
    if len(array) != examples:
        raise LotteryError(
            f"{path}: holds {len(array)} scores; the training split has {examples} examples (scores of "
            "another data set?)"
        )
    if not np.all(np.isfinite(array)):
        raise LotteryError(f"{path}: holds {int(np.sum(~np.isfinite(array)))} scores that are not finite numbers")
    beside = paths.metrics_file(os.path.dirname(path))
    if data_fingerprint is not None and os.path.isfile(beside):
        made = read_json(beside, METRICS_KEYS)
        if made["data_fingerprint"] != data_fingerprint:
            raise LotteryError(
                f"{path}: scores of other data ({beside}: data_fingerprint {made['data_fingerprint']}, "
                f"this experiment's {data_fingerprint}); give scores of this data set"
            )
    return array.astype(np.float32)


# --- the subset -----------------------------------------------------------------------------------


def choose(scores: np.ndarray, p: Plan, labels: Optional[np.ndarray] = None) -> np.ndarray:
    """The indices pre-trained on, ascending: ``kept`` examples from the ``subset`` end of the
    ranking after ``skipped`` (ties broken by index, the lower first). Balanced (``labels`` given):
    each class's share of ``kept`` (its fraction of the set; the rounding's leftovers to the largest
    remainders, the lower class first on a tie) from its own ranking, after its share of ``skipped``
    (rounded down)."""
    if not p.balance:
        return np.sort(_ranking(scores, p.subset)[p.skipped : p.skipped + p.kept]).astype(np.int32)
    classes, counts = np.unique(labels, return_counts=True)
    share = p.kept * counts / len(scores)
    quota = np.floor(share + 1e-9).astype(int)
    leftover = np.lexsort((classes, -(share - quota)))[: p.kept - int(quota.sum())]
    quota[leftover] += 1
    chosen = []
    for c, count, q in zip(classes, counts, quota):
        members = np.flatnonzero(labels == c)
        skip = min(int(np.floor(p.skipped * count / len(scores) + 1e-9)), count - q)
        chosen.append(members[_ranking(scores[members], p.subset)[skip : skip + q]])
    return np.sort(np.concatenate(chosen)).astype(np.int32)


def _ranking(scores: np.ndarray, subset: str) -> np.ndarray:
    """Positions from the ``subset`` end (easy: lowest first; hard: highest), ties by position."""
    return np.lexsort((np.arange(len(scores)), scores if subset == "easy" else -scores.astype(np.float64)))


def subset(d: "Diet", directory: str, say=print) -> np.ndarray:
    """The examples the dense run in ``directory`` pre-trains on: chosen from the scores the first
    time and kept there (``SUBSET``), read from there after, so that a dense run resumed, or asked
    for another rewind step, pre-trains on what it began with whatever happened to the scores since
    (recomputed by another program, say). Not kept where ``directory`` does not exist."""
    path = os.path.join(directory, SUBSET)
    if all(hosts.agree(int(os.path.isfile(path)))):
        return read_subset(path, d.plan)
    chosen = choose(scores(d, say), d.plan, d.context.trainer.train_host[1])
    if hosts.primary() and os.path.isdir(directory):
        write_whole(path, lambda partial: _save(partial, chosen))
    hosts.barrier(f"diet subset {path}")
    return chosen


def read_subset(path: str, p: Plan) -> np.ndarray:
    """A kept subset: ``kept`` distinct training examples, ascending."""
    try:
        chosen = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        chosen, reason = None, f"cannot be read as a NumPy .npy array ({type(error).__name__})"
    if chosen is not None:
        valid = (
            chosen.ndim == 1
            and np.issubdtype(chosen.dtype, np.integer)
            and len(chosen) == p.kept
            and np.all(np.diff(chosen) > 0)
            and chosen[0] >= 0
            and chosen[-1] < p.examples
        )
        reason = None if valid else f"holds no subset of {p.kept} of the {p.examples} training examples"
    if reason is not None:
        raise LotteryError(
            f"{path}: {reason}; it is the subset the dense run beside it pre-trained on: delete "
            f"{os.path.dirname(path)} to train that dense run again"
        )
    return chosen.astype(np.int32)


def record(d: "Diet", dense_directory: str, say=print) -> None:
    """``diet.json`` and ``diet_subset.npy`` in the experiment's directory, once: what its diet chose
    (the subset its dense run in ``dense_directory`` kept)."""
    path = os.path.join(d.context.directory, RECORD)
    if all(hosts.agree(int(os.path.isfile(path)))):  # every process takes the same path (scores may train)
        built_on_other_scores(d, path, say)
        return
    p = d.plan
    values = scores(d, say)
    labels = np.asarray(d.context.trainer.train_host[1])
    chosen = subset(d, dense_directory, say)
    if hosts.primary():  # the indices first: diet.json, written last, says both are there
        write_whole(os.path.join(d.context.directory, SUBSET), lambda partial: _save(partial, chosen))
    source = p.file if p.file is not None else None if p.score == "random" else Store(d).scores
    trained = source is not None and p.file is None  # scoring networks trained for these scores
    write_json(
        path,
        {
            "score": p.score,
            "scores": None if source is None else os.path.relpath(source, os.path.dirname(d.context.directory)),
            "scores_digest": None if source is None else file_digest(source, "diet scores"),
            "score_at": p.score_at if trained else None,
            "networks": p.networks if trained else None,
            "subset": p.subset,
            "balance": p.balance,
            "examples": p.kept,
            "skipped": p.skipped,
            "of": p.examples,
            "pretrain": p.pretrain,
            "classes": {str(c): int(n) for c, n in zip(*np.unique(labels[chosen], return_counts=True))},
            "mean_score": {"subset": float(np.mean(values[chosen])), "all": float(np.mean(values))},
            "scoring_steps": p.networks * p.score_at if trained else 0,
        },
    )


def built_on_other_scores(d: "Diet", path: str, say) -> None:
    """Asked again: where the shared store now holds other scores than those this experiment's
    diet chose from (computed again since, by another program, or replaced), say so once a run."""
    recorded = read_json(path, ("scores_digest",))
    p = d.plan
    if p.file is not None or p.score == "random" or recorded["scores_digest"] is None:
        return  # a scores file is in the experiment's hash; random scores are the seed's
    store = Store(d)
    if not os.path.isfile(store.scores):
        return
    now = file_digest(store.scores, "diet scores")
    if now != recorded["scores_digest"]:
        say(
            f"note: {path}: this experiment's diet chose its subset from scores {recorded['scores_digest']}; "
            f"{store.scores} now holds others ({now}): its results are of the former"
        )


def of(experiment) -> "Diet":
    """The diet of an experiment that has one (its method: ``context`` and ``plan``)."""
    return next(m for m in experiment.methods if isinstance(m, Diet))


def plan_of(experiment) -> Plan:
    """The plan of an experiment that has a diet."""
    return of(experiment).plan


@method
class Diet(Method):
    """A data diet: level 0's first steps on a subset (``diet.score`` or ``diet.scores``)."""

    label = "a data diet"
    makes_tickets = False  # it changes the dense network the tickets rewind to
    works_with = ("IMP", "AtStart", "EarlyBird")  # those that rewind to the dense network's θk

    check_settings = staticmethod(check)  # its settings' checks that need no data

    @staticmethod
    def switch(cfg) -> str:
        return f"diet.score={cfg.diet.score}" if cfg.diet.score is not None else f"diet.scores={cfg.diet.scores}"

    def __init__(self, context):
        super().__init__(context)
        trainer = context.trainer
        self.plan = plan(
            context.cfg,
            len(trainer.train_host[0]),
            trainer.iterations_per_epoch,
            trainer.batch_size,
            context.end,
            context.rewind,
            context.data_fingerprint,
        )
        self.trainer = None

    @staticmethod
    def check_data(cfg, checked) -> None:
        data, batch_size = checked.data, cfg.training.batch_size
        plan(cfg, len(data.train_x), checked.per_epoch, batch_size, checked.end, checked.rewind, data.fingerprint)

    @staticmethod
    def chosen(cfg) -> bool:
        return enabled(cfg)

    def dense_identity(self) -> dict:
        return {"diet": self.plan.dense}

    def level_0_trainer(self, trainer, dense_directory: str, say):
        """Its pre-training steps on the subset the dense run keeps (chosen the first time)."""
        if self.trainer is None:
            self.trainer = trainer.with_diet(subset(self, dense_directory, say), self.plan.pretrain)
        return self.trainer

    def level_0(self, dense_directory: str, say) -> None:
        record(self, dense_directory, say)  # what the dense runs pre-trained on: diet.json
