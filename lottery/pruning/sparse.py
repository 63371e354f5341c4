"""Sparse training from scratch beside IMP (config ``sparsity``): each level trains one network from
θ0 at IMP level L's density, so that one experiment gives a curve at IMP's densities for one training
each instead of L+1 (the field's "equal budget" comparison: Evci et al. 2020, Fig. 2).

Methods (``sparsity.method``), each one entry of ``METHODS``:

  imp     iterative magnitude pruning (lottery/imp/levels.py): the default; nothing here runs
  static  a random mask with the level's counts at θ0, fixed for the whole training (Evci et al.
          2020's "Static" baseline; with ``distribution=erk``, their ERK-random network)
  gmp     gradual magnitude pruning (Zhu & Gupta 2017, Eq. 1): dense start; after steps
          t0 + jΔt, j = 1..n, each group keeps its largest-magnitude weights at sparsity
          s_j = s_f + (s_i - s_f)(1 - j/n)^3 (s_i = 0, s_f the level's), so the last step keeps
          exactly the level's counts; layerwise, or one global ranking (``pruning.strategy``)
  set     sparse evolutionary training (Mocanu et al. 2018): a random start with the level's
          counts; every ΔT steps each layer drops its k smallest-magnitude weights and regrows k
          inactive ones at random
  rigl    rigged lottery (Evci et al. 2020, Sec. 3): as SET, but regrows the k inactive weights
          with the largest dense-gradient magnitude (the step's own batch)

SET and RigL as in Evci et al. 2020 (Sec. 4, their code's defaults): k = floor(α_t x the layer's
active count) with α_t = α/2 (1 + cos(π t / t_end)) (``decay=cosine``; ``constant``: α, SET's ζ),
ΔT = 100 steps, no update after t_end = 75% of training. A weight dropped and regrown in the same
update keeps its value (their code); a new connection starts at 0 with zero optimizer moments
(Evci et al. 2020, Sec. 3); a dropped weight is 0 and its moments are zeroed.

An update iteration is a mask update *instead of* an optimizer step (Evci et al. 2020, Algorithm 1:
"if t mod ΔT = 0 and t < T_end: update the mask, else θ ← θ - α∇L"): the iteration t with t steps
before it, for t = t_begin, t_begin + ΔT, ... <= t_end, ranks the weights as they are before it
(|θ_t|, drop) and the dense gradient of its own batch at θ_t (RigL, growth), then changes the mask;
the weights and the optimizer state stay those before it (Adam's count included), but for the
zeroed moments of dropped and new connections. The batch norm statistics of its forward pass are
kept (their code runs the batch norm updates before either branch). As rigl's
``SparseRigLOptimizerBase.apply_gradients`` (rigl/sparse_optimizers_base.py: ``tf.cond(
is_mask_update_iter, mask_update_op, apply_gradient_op)``, whose ``is_mask_update_iter`` is
``begin_step <= t <= end_step`` and ``last_update_step + frequency <= t`` from ``last_update_step =
-frequency``, so the first update is at t = begin_step, step 0 by default) and jaxpruner's
``wrap_optax`` (jaxpruner/base_updater.py: ``skip_gradients``, True for its SET and RigL,
algorithms/sparse_trainers.py). Two differences, both documented: rigl's TF SET
(``SparseSETOptimizerBase.apply_gradients``) still takes the optimizer step and updates the mask
after it; SET here skips it as RigL does (jaxpruner's SET), so the two differ only in growth. And
rigl's TF skip does not advance ``global_step`` (the optimizer's ``apply_gradients`` increments it),
so their update iterations take extra batches; here, as in jaxpruner, an update iteration is one of
training's steps (its batch, its step number), so every method trains the same steps on the same
batches. Results under the earlier rule (optimizer step, then a mask update ranking the stepped
weights after steps ΔT, 2ΔT, ...) are another experiment: SET and RigL are hashed with
``sparsity.update_step`` (lottery/results/identity.py). GMP is Zhu & Gupta's pruning after a step,
as before.

Counts are exact, as everywhere here: each update drops and grows exactly k per layer (ties by
position: the earlier weight is dropped first, as in masks.py, and the earlier inactive weight is
grown first); every count is computed on the host in exact arithmetic (``Schedule``) and handed to
the compiled step as a table, so an update is part of training's one compiled program (no
recompilation per update, per level or per replicate): for SET and RigL the masked steps between
two updates run as one inner loop with no branch, each update's step after them; GMP's step
carries its update by ``lax.cond`` on the step number (in an inner loop XLA fuses its steps
differently: other bits, so another experiment).

Layer densities (``sparsity.distribution``): ``imp``, IMP's own per-layer counts at the level (a
DST network then matches a ticket's layer densities exactly); ``uniform``, one density in every
prunable layer; ``erk``, Erdős-Rényi-Kernel (Evci et al. 2020, Sec. 3; Mocanu et al. 2018 for
dense layers): density ∝ (sum of the kernel's dimensions) / (their product), layers that would
exceed density 1 kept dense (their code). Every distribution keeps exactly IMP's total count at the
level, divided among layers by largest remainders.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Dict, List, Optional, Sequence

import numpy as np

from lottery import lazy
from lottery.errors import LotteryError
from lottery.pruning import masks

jax = lazy.module("jax")
jnp = lazy.module("jax.numpy")


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    sparse_start: bool  # starts from a random mask with the level's counts (else dense: GMP)
    updates: str  # none | prune (GMP) | drop_grow (SET, RigL)
    grow: Optional[str] = None  # random | gradient


METHODS: Dict[str, Method] = {
    m.name: m
    for m in (
        Method("imp", sparse_start=False, updates="none"),
        Method("static", sparse_start=True, updates="none"),
        Method("gmp", sparse_start=False, updates="prune"),
        Method("set", sparse_start=True, updates="drop_grow", grow="random"),
        Method("rigl", sparse_start=True, updates="drop_grow", grow="gradient"),
    )
}
DISTRIBUTIONS = ("imp", "uniform", "erk")
DECAYS = ("cosine", "constant")


def method(cfg) -> Optional[Method]:
    """The sparse-training method of config ``cfg`` (None: IMP)."""
    found = METHODS[cfg.sparsity.method]
    return None if found.name == "imp" else found


def dynamic(cfg) -> bool:
    """Whether the method changes masks during training (GMP, SET, RigL)."""
    found = method(cfg)
    return found is not None and found.updates != "none"


def check(cfg) -> None:
    """Every check of ``sparsity`` that needs no data."""
    s = cfg.sparsity
    if s.method not in METHODS:
        raise LotteryError(f"sparsity.method={s.method!r} is not a method; choose one of: {', '.join(METHODS)}")
    if s.method == "imp":  # its keys left over (sparsity.levels, distribution, ...): refused by config.check_unused
        return
    if s.distribution not in DISTRIBUTIONS:
        raise LotteryError(
            f"sparsity.distribution={s.distribution!r} is not a distribution; choose one of: {', '.join(DISTRIBUTIONS)}"
        )
    if s.decay not in DECAYS:
        raise LotteryError(f"sparsity.decay={s.decay!r} is not a decay; choose one of: {', '.join(DECAYS)}")
    if not 0 < s.drop_fraction < 1:
        raise LotteryError(f"sparsity.drop_fraction={s.drop_fraction} must be in (0, 1)")
    if not 0 <= s.begin < s.end <= 1:
        raise LotteryError(
            f"sparsity.begin={s.begin} and sparsity.end={s.end} must satisfy 0 <= begin < end <= 1 "
            "(fractions of training)"
        )
    # what it cannot be beside (retrain, criterion, another method): imp/method.py's check
    if METHODS[s.method].updates != "none" and any(level > 0 for level in cfg.lmc.levels):
        raise LotteryError(
            f"lmc.levels={list(cfg.lmc.levels)}: linear mode connectivity of {s.method} networks is not "
            "built; measure it at level 0 only"
        )
    if cfg.pruning.strategy == "global":
        if s.method == "gmp" and s.distribution != "imp":
            raise LotteryError(
                f"sparsity.distribution={s.distribution}: GMP with pruning.strategy=global ranks every "
                "layer together; use sparsity.distribution=imp or pruning.strategy=layerwise"
            )
        if s.method != "gmp" and s.distribution == "imp":
            raise LotteryError(
                "sparsity.distribution=imp: global IMP has no per-layer counts before it runs; use "
                "sparsity.distribution=erk or uniform, or pruning.strategy=layerwise"
            )
    if any(level < 1 for level in s.levels):
        raise LotteryError(f"sparsity.levels={list(s.levels)} must be pruned levels (1 or more)")
    skipped = [level for level in cfg.lmc.levels if level > 0 and s.levels and level not in s.levels]
    if skipped:
        raise LotteryError(
            f"lmc.levels={list(cfg.lmc.levels)}: level {skipped[0]} is not trained "
            f"(sparsity.levels={list(s.levels)}); measure LMC at trained levels"
        )


def trains(cfg, level: int) -> bool:
    """Whether ``level`` is trained: every level, or those of ``sparsity.levels`` (level 0 always)."""
    return level == 0 or method(cfg) is None or not cfg.sparsity.levels or level in cfg.sparsity.levels


# --- how many weights each layer keeps ----------------------------------------------------------


def largest_remainders(quotas: Sequence[Fraction], total: int) -> List[int]:
    """Integers summing exactly to ``total`` (the sum of the exact ``quotas``): each quota's floor,
    plus one for the quotas with the largest fractional parts (ties: the earlier layer)."""
    counts = [math.floor(q) for q in quotas]
    short = total - sum(counts)
    by_remainder = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in by_remainder[:short]:
        counts[i] += 1
    return counts


def erk_densities(shapes: Sequence[tuple], total: int) -> List[Fraction]:
    """Each layer's ERK density (exact) for ``total`` kept weights: ε (sum of dims)/(product of dims),
    with ε fixed by the total, and every layer whose density would exceed 1 kept dense (then ε is
    solved again for the others, until none exceeds 1: Evci et al.'s code)."""
    sizes = [math.prod(s) for s in shapes]
    dense = set()
    while True:
        free = [i for i in range(len(shapes)) if i not in dense]
        budget = total - sum(sizes[i] for i in dense)
        epsilon = Fraction(budget, sum(sum(shapes[i]) for i in free)) if free else Fraction(0)
        over = {i for i in free if epsilon * Fraction(sum(shapes[i]), sizes[i]) > 1}
        if not over:
            return [
                Fraction(1) if i in dense else epsilon * Fraction(sum(shapes[i]), sizes[i]) for i in range(len(shapes))
            ]
        dense |= over


def distribution_counts(
    distribution: str, shapes: Dict[str, tuple], total: int, imp_counts: Optional[List[int]] = None
) -> List[int]:
    """How many weights each prunable layer keeps at a level (``shapes``' order), ``total`` in all."""
    names = list(shapes)
    sizes = [math.prod(shapes[n]) for n in names]
    if not 0 <= total <= sum(sizes):
        raise ValueError(f"cannot keep {total} of {sum(sizes)} weights")
    if distribution == "imp":
        return list(imp_counts)
    if distribution == "uniform":
        quotas = [Fraction(total * size, sum(sizes)) for size in sizes]
    elif distribution == "erk":
        quotas = [d * size for d, size in zip(erk_densities([shapes[n] for n in names], total), sizes)]
    else:
        raise LotteryError(
            f"sparsity.distribution={distribution!r} is not a distribution; choose one of: {', '.join(DISTRIBUTIONS)}"
        )
    return largest_remainders(quotas, total)


def level_targets(cfg, mask, names: List[str], level: int) -> List[int]:
    """Each layer's (GMP global: the one group's) count at ``level``: the distribution's division of
    IMP's total count at that level (IMP's own per-layer counts for ``imp``)."""
    imp = masks.level_counts(mask, cfg.pruning, names, level)
    if cfg.sparsity.method == "gmp" and cfg.pruning.strategy == "global":
        return imp
    flat = masks.flatten(mask)
    shapes = {name: tuple(np.shape(flat[name])) for name in names}
    return distribution_counts(cfg.sparsity.distribution, shapes, sum(imp), imp)


def groups(cfg, names: List[str]) -> List[List[str]]:
    """The tensors that share one ranking in the compiled updates: one group each, or GMP's global one."""
    return masks.groups(names, cfg.pruning.strategy if cfg.sparsity.method == "gmp" else "layerwise")


def start_mask(cfg, mask, names: List[str], targets: List[int], rng: np.random.Generator):
    """The mask training starts from: dense (GMP), or each layer's target count at random positions."""
    if not method(cfg).sparse_start:
        return mask
    flat = {k: np.asarray(v) for k, v in masks.flatten(mask).items()}
    for name, keep in zip(names, targets):
        kept = np.zeros(flat[name].size, dtype=bool)
        kept[rng.permutation(kept.size)[:keep]] = True
        flat[name] = kept.reshape(flat[name].shape)
    return masks.unflatten(mask, flat)


# --- when updates happen, and their counts ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When the mask changes, the same at every level: GMP, after the step that makes ``events`` steps
    done; SET and RigL, at the iterations ``events`` (steps done before them), instead of their step."""

    method: Method
    events: np.ndarray  # int64, ascending: GMP, steps done before a pruning; SET/RigL, update iterations
    fractions: np.ndarray  # SET/RigL: the drop fraction α_t at each event; GMP: j/n

    @classmethod
    def of(cls, cfg, end: int, every: int) -> "Schedule":
        """The updates of training [0, end) with ΔT (Δt) = ``every`` steps."""
        s, found = cfg.sparsity, method(cfg)
        begin = math.floor(masks.decimal(s.begin) * end)
        last = math.floor(masks.decimal(s.end) * end)
        if found.updates == "prune":
            n = (last - begin) // every
            if n < 1:
                raise LotteryError(
                    f"sparsity.update_every={s.update_every}: no pruning step fits between "
                    f"sparsity.begin ({begin} steps) and sparsity.end ({last} steps); use a shorter interval"
                )
            events = begin + every * np.arange(1, n + 1)
            return cls(found, events, np.arange(1, n + 1) / n)
        if found.updates == "none":
            return cls(found, np.zeros(0, np.int64), np.zeros(0))
        # rigl's is_mask_update_iter: begin_step <= t <= end_step, every ΔT from begin_step (step 0
        # by default), t < end: an iteration of training
        events = np.arange(begin, min(last, end - 1) + 1, every, dtype=np.int64)
        if not len(events):
            raise LotteryError(
                f"sparsity.update_every={s.update_every}: no mask update fits between sparsity.begin "
                f"({begin} steps) and sparsity.end ({last} steps); use a shorter interval"
            )
        if s.decay == "cosine":  # Evci et al. 2020, Eq. 1's α_t (their code: cosine decay to t_end)
            fractions = s.drop_fraction / 2 * (1 + np.cos(np.pi * events / last))
        else:
            fractions = np.full(events.shape, float(s.drop_fraction))
        return cls(found, events, fractions)

    def counts(self, start: List[int], targets: List[int]) -> np.ndarray:
        """The table the compiled updates read, (events, groups) int32: GMP, how many each group keeps
        after event j (Zhu & Gupta's cubic from its size ``start`` to ``targets``, exactly: the pruned
        count (N - K)(1 - (1 - j/n)^3) rounded, halves up, in rationals); SET/RigL, how many each
        layer drops and grows (floor(α_t x its active count), as their code truncates)."""
        table = np.zeros((len(self.events), len(targets)), np.int32)
        n = len(self.events)
        for e in range(n):
            for g, (size, keep) in enumerate(zip(start, targets)):
                if self.method.updates == "prune":
                    j = e + 1
                    pruned = Fraction((size - keep) * (n**3 - (n - j) ** 3), n**3)
                    table[e, g] = size - math.floor(pruned + Fraction(1, 2))
                else:
                    table[e, g] = math.floor(self.fractions[e] * keep)
        return table


# --- the compiled updates ------------------------------------------------------------------------


def _crossing(histogram, k):
    """Where the running count of ``histogram`` (65536 buckets) reaches ``k`` (>= 1): the bucket and
    how many fall in the buckets before it. Two levels of 256 (row totals, then one row), so no
    65536-long running sum (slow on XLA:CPU)."""
    rows = histogram.reshape(256, 256)
    totals = jnp.sum(rows, axis=1)
    ends = jnp.cumsum(totals)
    r = jnp.minimum(jnp.sum(ends < k), 255)
    row = rows[r]
    within = ends[r] - totals[r] + jnp.cumsum(row)
    c = jnp.minimum(jnp.sum(within < k), 255)
    return r * 256 + c, within[c] - row[c]


def kth(keys, k):
    """The ``k``-th smallest of ``keys`` (flat uint32, 1 <= k <= size), how many keys are below it and
    how many equal it, exactly: a 65536-bucket histogram of the keys' top 16 bits finds the bucket
    holding it, a second one of the low 16 bits of that bucket's keys the key itself (two
    scatter-adds, no sort)."""
    top = (keys >> 16).astype(jnp.int32)
    high, before_high = _crossing(jnp.zeros(65536, jnp.int32).at[top].add(1), k)
    low = jnp.where(top == high, (keys & 0xFFFF).astype(jnp.int32), 65536)  # others: out of range, dropped
    within = jnp.zeros(65536, jnp.int32).at[low].add(1, mode="drop")
    rest, before_rest = _crossing(within, k - before_high)
    return (high.astype(jnp.uint32) << 16) | rest.astype(jnp.uint32), before_high + before_rest, within[rest]


def lowest(scores, k):
    """The ``k`` lowest of ``scores`` (flat float32) as a boolean mask, equal values taken from the
    earliest position: exact, and without a sort (XLA:CPU sorts 266K values in ~100 ms). A float's
    bits, sign-adjusted, order like the float, so the k-th lowest value is the k-th smallest 32-bit
    key (``kth``); if more keys tie at it than are still to be taken, the earliest of them are found
    the same way, as the smallest positions among the tied."""
    scores = jnp.where(scores == 0, jnp.zeros_like(scores), scores)  # -0.0 and 0.0 are one value
    bits = jax.lax.bitcast_convert_type(scores, jnp.uint32)
    keys = jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(0x80000000))  # unsigned order = float order
    k = jnp.asarray(k, jnp.int32)
    threshold, below, equal = kth(keys, jnp.maximum(k, 1))
    need = k - below
    tied = keys == threshold
    positions = jnp.arange(keys.size, dtype=jnp.uint32)

    def earliest():  # the ``need`` tied keys of the lowest positions
        last, _, _ = kth(jnp.where(tied, positions, jnp.uint32(0xFFFFFFFF)), jnp.maximum(need, 1))
        return tied & (positions <= last)

    taken = jax.lax.cond(equal <= need, lambda: tied, earliest)
    return ((keys < threshold) | taken) & (k > 0)


def prune_to(weights, mask, keep):
    """GMP's step on one group (flat): the ``keep`` largest-magnitude active weights stay; the
    others of the active go, smallest first, ties the earlier first (masks.py's rule)."""
    return ~lowest(jnp.where(mask, jnp.abs(weights), -jnp.inf), weights.size - keep)


def drop_and_grow(weights, mask, grow_scores, k):
    """SET's and RigL's step on one layer (flat): drop the ``k`` smallest-magnitude active weights,
    then grow the ``k`` highest-scored of the inactive (the just-dropped included). Returns the new
    mask and the new connections (inactive before the update)."""
    dropped = lowest(jnp.where(mask, jnp.abs(weights), jnp.inf), k)
    kept = mask & ~dropped
    grown = lowest(-jnp.where(kept, -jnp.inf, grow_scores), k)
    new = kept | grown
    return new, new & ~mask


class Updates:
    """A method's mask updates inside the compiled training step. The events and groups are fixed
    for the experiment (closed over: the step number alone picks an update, so under ``vmap`` the
    ``lax.cond`` stays a branch); each member's counts and random key come with its state
    (``state["sparse"]``), so one program serves every level and replicate."""

    def __init__(self, schedule: Schedule, groups: List[List[str]]):
        self.schedule, self.groups = schedule, groups
        self.events = np.asarray(schedule.events, np.int32)

    @property
    def replaces_step(self) -> bool:
        """Whether an update replaces the optimizer step (SET, RigL) rather than following it (GMP)."""
        return self.schedule.method.updates == "drop_grow"

    def next_step(self, step):
        """SET/RigL: the first update iteration at or after ``step`` (int32 max: none left)."""
        ends = jnp.asarray(np.append(self.events, np.iinfo(np.int32).max).astype(np.int32))
        return ends[jnp.searchsorted(ends, step)]

    def update_step(self, params, mask, opt_state, grads, step, sparse, mask_opt_state):
        """SET/RigL's update iteration ``step`` (one of the events), without the branch of ``step``:
        the mask update instead of the optimizer step."""
        return self._update(params, mask, opt_state, grads, step, sparse, self._row(step), mask_opt_state)

    def _row(self, at):
        """The events table's row of ``at`` (the next event's, if ``at`` is none)."""
        return jnp.minimum(jnp.searchsorted(jnp.asarray(self.events), at), len(self.events) - 1)

    def state(self, start: List[int], targets: List[int], key) -> dict:
        """A member's ``state["sparse"]``: its counts table and its key for random growth (SET)."""
        return {"counts": jnp.asarray(self.schedule.counts(start, targets)), "key": jax.random.key_data(key)}

    def step(self, optimizer_step, params, mask, opt_state, grads, step, sparse, mask_opt_state):
        """Training step ``step`` with the method's updates. ``optimizer_step()`` is the masked
        optimizer step from ``params`` and ``opt_state`` (the new params and state); ``grads`` the
        step's dense gradient at ``params``. Returns the params, mask and optimizer state after it."""
        if self.replaces_step:
            # Evci et al. 2020, Algorithm 1 (rigl's apply_gradients): the mask update replaces the
            # optimizer step, on the weights and gradient before it
            return self.apply(params, mask, opt_state, grads, step, sparse, mask_opt_state, otherwise=optimizer_step)
        params, opt_state = optimizer_step()  # GMP (Zhu & Gupta 2017) prunes after the step
        return self.apply(params, mask, opt_state, grads, step + 1, sparse, mask_opt_state)

    def apply(self, params, mask, opt_state, grads, at, sparse, mask_opt_state, otherwise=None):
        """At ``at`` (GMP: steps done; SET/RigL: the iteration): the update of that event if there is
        one, else ``otherwise()``'s params and optimizer state (None: everything as it is)."""
        unchanged = (lambda: (*otherwise(), mask)) if otherwise is not None else lambda: (params, opt_state, mask)
        if not len(self.events):
            params, opt_state, mask = unchanged()
            return params, mask, opt_state
        row = self._row(at)

        def update():
            new_params, new_mask, new_opt_state = self._update(
                params, mask, opt_state, grads, at, sparse, row, mask_opt_state
            )
            return new_params, new_opt_state, new_mask

        params, opt_state, mask = jax.lax.cond(jnp.asarray(self.events)[row] == at, update, unchanged)
        return params, mask, opt_state

    def _update(self, params, mask, opt_state, grads, done, sparse, row, mask_opt_state):
        flat_w, flat_m, flat_g = masks.flatten(params), masks.flatten(mask), masks.flatten(grads)
        key = jax.random.fold_in(jax.random.wrap_key_data(sparse["key"]), done)
        for g, group in enumerate(self.groups):
            count = sparse["counts"][row, g]
            w = jnp.concatenate([flat_w[n].ravel() for n in group])
            m = jnp.concatenate([flat_m[n].ravel() for n in group])
            if self.schedule.method.updates == "prune":
                new, grown = prune_to(w, m, count), jnp.zeros_like(m)
            else:
                scores = (
                    jnp.abs(jnp.concatenate([flat_g[n].ravel() for n in group]))
                    if self.schedule.method.grow == "gradient"
                    else jax.random.uniform(jax.random.fold_in(key, g), w.shape)
                )
                new, grown = drop_and_grow(w, m, scores, count)
            w = jnp.where(new & ~grown, w, jnp.zeros_like(w))  # dropped: 0; new connections start at 0
            offsets = np.cumsum([0] + [flat_m[n].size for n in group])
            for i, name in enumerate(group):
                flat_w[name] = w[offsets[i] : offsets[i + 1]].reshape(flat_w[name].shape)
                flat_m[name] = new[offsets[i] : offsets[i + 1]].reshape(flat_m[name].shape)
        new_mask = masks.unflatten(mask, flat_m)
        return masks.unflatten(params, flat_w), new_mask, mask_opt_state(opt_state, new_mask)
