"""Pruning criteria: one score per prunable weight, the higher the more it deserves to stay.

A criterion is a function of a ``Context`` (the weights being scored, the current mask, the
prunable tensors' names, a seeded generator; for the criteria of pruning at initialization also the
model as a pure function and a batch of data) that returns ``{name: scores}`` with each tensor's
shape. ``masks.prune_by_scores`` turns scores into the next mask with the exact counts of the
strategy (``layerwise`` or ``global``), the ignore list, nested masks and ties by position, so a
criterion only ranks. Adding one is one function in this file under ``@criterion("name")``
(as open_lth's ``pruning/registry.py``).

The criteria of pruning at initialization (Frankle et al. 2021 compare them): ``snip`` (Lee et al.
2019), ``grasp`` (Wang et al. 2020), ``synflow`` (Tanaka et al. 2020), and ``magnitude`` applied to
θ0. They score the network the current mask leaves, θ = w ⊙ mask: a pruned weight scores as a zero
weight (0 for all three), and the ranking keeps it pruned anyway. ``iterate`` prunes by a criterion
over rounds of an exponential schedule, re-scoring under each round's mask (SynFlow's Algorithm 1).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from lottery import lazy
from lottery.errors import LotteryError
from lottery.pruning import masks
from lottery.pruning.masks import apply_mask, flatten, unflatten

jax = lazy.module("jax")
jnp = lazy.module("jax.numpy")
optax = lazy.module("optax")

Scores = Dict[str, np.ndarray]


@dataclasses.dataclass
class Context:
    params: dict  # the weights scored: trained (IMP) or the start weights (pruning before training)
    mask: dict  # the current mask: pruned weights stay pruned whatever their score
    names: List[str]  # the prunable tensors
    rng: Optional[np.random.Generator] = None  # for criteria that draw
    # The model as a pure function of the parameter dict, logits = apply(params, x), batch
    # statistics closed over (``model_apply``): for snip, grasp and synflow.
    apply: Optional[Callable] = None
    batch: Optional[Tuple[np.ndarray, np.ndarray]] = None  # (normalized inputs, integer labels): snip, grasp
    input_shape: Optional[Tuple[int, ...]] = None  # one example's shape (synflow's all-ones input); else the batch's


def model_apply(trainer, batch_stats, train: bool = False) -> Callable:
    """``Trainer``'s model as ``Context.apply``: logits of ``params`` with ``batch_stats`` closed over.

    ``train=False`` (the default) normalizes with the running statistics (batch norm in eval mode),
    as SynFlow's Algorithm 1 prescribes (step 0: eval mode) and Synaptic-Flow scores every criterion
    (``prune.py``: ``model.eval()`` unless ``--prune-train-mode``). SynFlow needs it: its input is
    one all-ones example, whose batch statistics would normalize every channel to its own constant; at
    initialization the running statistics are (0, 1), so batch norm is the affine map |γ| x + |β| of
    the |θ| network.
    ``train=True`` normalizes with the batch's statistics (GraSP's reference code scores the network in
    train mode), discarding the updated running statistics. Make it once per network and reuse it:
    the criteria compile one program per function."""
    return lambda params, x: trainer.apply(params, batch_stats, x, train)[0]


CRITERIA: Dict[str, Callable[[Context], Scores]] = {}
ON_DATA = set()  # the criteria that score the first ``pruning.examples`` training examples (``Context.batch``)


def criterion(name: str, data: bool = False):
    """Register a scoring function under ``name``; ``data``: it scores training examples."""

    def register(function: Callable[[Context], Scores]) -> Callable[[Context], Scores]:
        CRITERIA[name] = function
        if data:
            ON_DATA.add(name)
        return function

    return register


PRUNE_AT = ("trained", "start")


def check(cfg) -> None:
    """The criterion keys of the config (``pruning.*``), before anything runs."""
    p = cfg.pruning
    if p.criterion not in CRITERIA:
        raise LotteryError(
            f"pruning.criterion={p.criterion!r} is not a criterion; choose one of: {', '.join(sorted(CRITERIA))}"
        )
    if p.prune_at not in PRUNE_AT:
        raise LotteryError(
            f"pruning.prune_at={p.prune_at!r} is not an option; choose one of: {', '.join(PRUNE_AT)} "
            "(trained: IMP; start: pruning before training)"
        )
    if p.rounds < 1 or p.examples < 1:
        raise LotteryError(f"pruning.rounds={p.rounds} and pruning.examples={p.examples} must be 1 or more")
    if p.rounds > 1 and p.prune_at != "start":
        raise LotteryError(
            f"pruning.rounds={p.rounds} applies to pruning before training (pruning.prune_at=start); "
            "IMP's rounds are its levels"
        )


def score(name: str, context: Context) -> Scores:
    if name not in CRITERIA:
        raise LotteryError(f"pruning criterion {name!r} is not one; choose one of: {', '.join(sorted(CRITERIA))}")
    return CRITERIA[name](context)


def prune(params, mask, cfg, names: List[str]):
    """The next level's mask by magnitude (IMP): prune ``params`` (trained weights) under ``mask``."""
    return masks.prune_by_scores(score("magnitude", Context(params, mask, names)), mask, cfg, names)


@criterion("magnitude")
def magnitude(context: Context) -> Scores:
    """|w| (Han et al. 2015; Frankle & Carbin 2019's IMP). Applied to θ0 it is magnitude at
    initialization (Frankle et al. 2021)."""
    weights = flatten(context.params)
    return {name: np.abs(np.asarray(weights[name])) for name in context.names}


@criterion("random")
def random(context: Context) -> Scores:
    """Uniform random scores: a random mask with the strategy's exact counts, nested in the current one."""
    if context.rng is None:
        raise ValueError("the random criterion needs a seeded generator (Context.rng)")
    weights = flatten(context.params)
    return {name: context.rng.random(np.shape(weights[name])) for name in context.names}


# --- pruning at initialization: SNIP, GraSP, SynFlow ------------------------------------------
#
# Each is one compiled function of (params, mask, data), built once per model function and kept
# for the last few (``iterate`` re-scores up to 100 times with one compilation). The cache holds
# the model functions themselves (a trainer's, with its data): bounded, not weak, since each program
# closes over its function.

_COMPILED: Dict[tuple, Callable] = {}
_CACHED = 8


def _compiled(kind: str, apply: Callable, names: Sequence[str], build: Callable) -> Callable:
    key = (kind, apply, tuple(names))
    if key not in _COMPILED:
        if len(_COMPILED) >= _CACHED:
            del _COMPILED[next(iter(_COMPILED))]  # the oldest
        _COMPILED[key] = jax.jit(build(apply, list(names)))
    return _COMPILED[key]


def _loss(apply, params, x, y):
    """The training loss (lottery/training.py): softmax cross-entropy, mean over the batch."""
    return optax.softmax_cross_entropy_with_integer_labels(apply(params, x), y).mean()


def _needs(context: Context, name: str, data: bool) -> None:
    if context.apply is None or (data and context.batch is None):
        what = "the model (Context.apply) and a batch of data (Context.batch)" if data else "the model (Context.apply)"
        raise ValueError(f"the {name} criterion needs {what}")


def _build_snip(apply, names):
    def scores(params, mask, x, y):
        theta = apply_mask(params, mask)
        grads = flatten(jax.grad(lambda p: _loss(apply, p, x, y))(theta))
        flat = flatten(theta)
        return {n: jnp.abs(flat[n] * grads[n]) for n in names}

    return scores


@criterion("snip", data=True)
def snip(context: Context) -> Scores:
    """SNIP's connection sensitivity (Lee et al. 2019, Sec. 4.1): |∂L(c ⊙ θ)/∂c| at the current mask c,
    = |θ ⊙ g| with g = ∂L/∂θ of the masked network θ = w ⊙ mask on ``context.batch`` (L the training
    loss). Not divided by the sum of all scores, as the paper does: a common factor ranks alike."""
    _needs(context, "snip", data=True)
    program = _compiled("snip", context.apply, context.names, _build_snip)
    x, y = context.batch
    return {n: np.asarray(s) for n, s in program(context.params, context.mask, x, y).items()}


def _build_grasp(apply, names):
    def scores(params, mask, x, y):
        theta = flatten(apply_mask(params, mask))
        prunable = {n: theta[n] for n in names}

        def gradient(weights):  # ∂L/∂θ of the prunable weights, the others held
            full = unflatten(params, {**theta, **weights})
            return {n: g for n, g in flatten(jax.grad(lambda p: _loss(apply, p, x, y))(full)).items() if n in weights}

        # The masked network's parameters are the surviving weights (training zeroes the others'
        # gradients; Synaptic-Flow multiplies each weight by its mask in the forward pass): its
        # gradient is g ⊙ mask, its Hessian H's surviving rows and columns. So H is taken along
        # g ⊙ mask; the rows of pruned weights need no mask, as they meet θ = 0 in the score.
        flat_mask = flatten(mask)
        g = gradient(prunable)
        direction = {n: jnp.where(flat_mask[n], g[n], jnp.zeros_like(g[n])) for n in names}
        _, hg = jax.jvp(gradient, (prunable,), (direction,))  # H g: forward-over-reverse, no Hessian formed
        return {n: prunable[n] * hg[n] for n in names}

    return scores


@criterion("grasp", data=True)
def grasp(context: Context) -> Scores:
    """GraSP (Wang et al. 2020, Sec. 4): the paper's score S(-θ) = -θ ⊙ Hg, g = ∂L/∂θ and H = ∂²L/∂θ²
    over the prunable weights (the reference code's ``weights``: conv and linear kernels) of the
    masked network on ``context.batch`` (of its surviving weights: g ⊙ mask, and H along it), and it
    removes the weights with the *largest* S (Algorithm 1; alecwangcq/GraSP ``pruner/GraSP.py``
    computes -θ ⊙ Hg and keeps what is below its top-k). Here the higher
    score is kept, so this registers the negation, θ ⊙ Hg = -S(-θ): the weights it prunes first are
    those whose removal reduces the gradient norm the least, or increases it. Synaptic-Flow scores
    alike (``pruners.py``: ``p.grad * p.data`` with ``p.grad`` = Hg, lowest pruned; its commit
    e329c2e, "grasp sign of score", turned -Hg ⊙ θ into this).

    Both reference codes divide the logits by a temperature T = 200 before the loss; the paper's
    formula has none, nor has this. For T, pass ``apply = lambda p, x: f(p, x) / T``."""
    _needs(context, "grasp", data=True)
    program = _compiled("grasp", context.apply, context.names, _build_grasp)
    x, y = context.batch
    return {n: np.asarray(s) for n, s in program(context.params, context.mask, x, y).items()}


def _build_synflow(apply, names):
    def scores(params, mask, ones):
        linear = jax.tree.map(jnp.abs, apply_mask(params, mask))  # every parameter as |θ|, biases included
        grads = flatten(jax.grad(lambda p: jnp.sum(apply(p, ones)))(linear))
        flat = flatten(linear)
        return {n: jnp.abs(flat[n] * grads[n]) for n in names}

    return scores


@criterion("synflow")
def synflow(context: Context) -> Scores:
    """Synaptic flow (Tanaka et al. 2020, Sec. 6 and Algorithm 1), data-free: every parameter replaced
    by its absolute value (|θ|, θ = w ⊙ mask), R = 1ᵀ f(1; |θ|) the sum of the logits on one all-ones
    input, and the score |θ| ⊙ ∂R/∂|θ| (>= 0; = |θ ⊙ ∂R/∂θ| as Synaptic-Flow writes it). One call is
    single-shot SynFlow; the paper's method is ``iterate("synflow", ...)`` over 100 rounds.

    Computed in float64: R is a product over layers of sums of |θ| and grows geometrically with depth,
    which float32 can overflow on deep networks (Synaptic-Flow's commit 7de8b51 scored in double
    precision for this, commented out again a day later in de91de6; its released code is float32).
    Batch norm is whatever ``context.apply`` closes over: ``model_apply`` gives eval mode with the
    running statistics, as Synaptic-Flow; unlike it, running means are not made positive (they
    are 0 at initialization, where the two agree)."""
    _needs(context, "synflow", data=False)
    shape = context.input_shape
    if shape is None:
        if context.batch is None:
            raise ValueError("the synflow criterion needs the input's shape (Context.input_shape) or a batch")
        shape = np.shape(context.batch[0])[1:]
    program = _compiled("synflow", context.apply, context.names, _build_synflow)
    with jax.enable_x64(True):
        params = jax.tree.map(lambda w: np.asarray(w, np.float64), context.params)
        scores = program(params, context.mask, np.ones((1, *shape), np.float64))
        return {n: np.asarray(s) for n, s in scores.items()}


# --- iterative pruning -------------------------------------------------------------------------


def iterate_to_counts(name: str, context: Context, groups: List[List[str]], keep: List[int], rounds: int):
    """The mask that criterion ``name`` reaches in ``rounds`` rounds: each group (tensors ranked
    together, ``masks.groups``) goes from its remaining count to exactly ``keep`` by the counts of
    ``masks.exponential_counts``; every round re-scores the network under the current mask. From
    a full mask, round r keeps density d^(r/n) of each group (Tanaka et al. 2020, Algorithm 1;
    Synaptic-Flow's ``prune_loop``, schedule ``exponential``). ``rounds=1`` is single-shot."""
    flat = flatten(context.mask)
    remaining = [sum(int(np.sum(flat[n])) for n in group) for group in groups]
    schedules = [masks.exponential_counts(r, k, rounds) for r, k in zip(remaining, keep)]
    mask = context.mask
    for r in range(rounds):
        scores = score(name, dataclasses.replace(context, mask=mask))
        mask = masks.prune_to_counts(scores, mask, groups, [schedule[r] for schedule in schedules])
    return mask


def iterate(name: str, context: Context, strategy: str, density: float, rounds: int):
    """The mask of criterion ``name`` at ``density`` of each group's size (``layerwise``: every tensor;
    ``global``: all prunable tensors together), counted by ``masks.keep_at_density``, reached in
    ``rounds`` rounds of an exponential schedule (``iterate_to_counts``). SynFlow's paper runs 100."""
    groups = masks.groups(context.names, strategy)
    return iterate_to_counts(name, context, groups, masks.keep_at_density(context.mask, groups, density), rounds)
