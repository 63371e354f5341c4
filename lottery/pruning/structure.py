"""Structured tickets (config ``pruning.structure``): what a level prunes, beside single weights.

  weights   single weights (IMP as always; the default, every hash unchanged)
  neurons   whole units of fully connected hidden layers: a unit's incoming weights (its column
            of the kernel) and its outgoing ones (its row of the next layer's) go together
  channels  whole output channels of conv layers (their filter, and the next layer's input
            channel: every row of it, after a flatten too) and the neurons of fc hidden layers: every
            unit a layer computes. A network's units are its model's to declare (``Units`` of
            lottery/units.py, each model's ``units``): where a channel feeds a residual sum it is not a unit
            (ResNet: the first conv of each block only, Li et al. 2017, Sec. 3.3)
  heads     whole attention heads: their query, key and value columns and their rows of the
            output projection (Michel et al. 2019; Chen et al. 2021's structured ViT tickets)
  N:M       N of every M consecutive weights along a kernel's input axis (e.g. 2:4, the pattern
            Ampere/Hopper tensor cores run at twice the dense rate: Mishra et al. 2021; Zhou et
            al. 2021). A kernel whose input size M does not divide stays dense (e.g. an RGB conv)

Units are ranked by the sum of their weights' scores (any criterion of criteria.py: magnitude gives
the L1 norm of the unit's incoming weights, Li et al. 2017), counted by masks.py's rule on units
instead of weights (``pruning.rate`` of a layer's remaining units per level, ``conv_rate`` for conv
layers; the output layer's units are its classes, never pruned), ties by position, already-pruned
units ranked below every surviving one, so masks nest. The masks stay per weight: training,
controls, LMC, transfer and export read them as any mask; a unit is pruned when all its incoming
weights are. N:M follows the counting rule on N itself: each level keeps N_L = N_{L-1} -
max(1, round(rate x N_{L-1})), never below the target's N, so 2:4 at the default rate 0.2 is
3:4 at level 1 and 2:4 at level 2; ``pruning.rate=0.5`` reaches 2:4 in one level (NVIDIA's ASP
recipe: prune once by magnitude, retrain). Within each block the highest-scored survivors stay.
"""

import re
from typing import Dict, List, Optional

import numpy as np

from lottery.errors import LotteryError
from lottery.pruning import masks
from lottery.units import Units  # its home before lottery/units.py; still importable from here

UNIT_KINDS = {"neurons": ("neurons",), "channels": ("neurons", "channels"), "heads": ("heads",)}
_N_M = re.compile(r"^(\d+):(\d+)$")


def parse(text: str):
    """``pruning.structure`` as (kind, N, M): N and M for N:M, else None."""
    match = _N_M.match(str(text))
    if match:
        n, m = int(match.group(1)), int(match.group(2))
        if not 0 < n < m:
            raise LotteryError(f"pruning.structure={text}: N:M needs 0 < N < M, e.g. 2:4")
        return "n:m", n, m
    if text not in ("weights", *UNIT_KINDS):
        raise LotteryError(
            f"pruning.structure={text!r} is not a structure; choose one of: weights, "
            f"{', '.join(UNIT_KINDS)}, or N:M (e.g. 2:4)"
        )
    return text, None, None


def check(cfg) -> None:
    """What a structure needs of the rest of the config (no data)."""
    kind, n, m = parse(cfg.pruning.structure)
    if kind == "weights":
        return
    # which methods prune structures (IMP, transfer): imp/method.py's check
    if kind == "n:m":
        reached = n_schedule(n, m, cfg.pruning.rate, cfg.levels)
        if cfg.levels > len(reached):
            raise LotteryError(
                f"levels={cfg.levels}: pruning.structure={n}:{m} is reached at level {len(reached)} "
                f"(pruning.rate={cfg.pruning.rate}); use levels={len(reached)}"
            )


def n_schedule(n: int, m: int, rate, levels: int) -> List[int]:
    """N of each level 1, 2, ... until the target's N (at most ``levels`` of them)."""
    out, current = [], m
    while current > n and len(out) < max(levels, 1) + m:
        current = max(n, current - max(1, masks.number_to_prune(rate, current)))
        out.append(current)
    return out


class Structure:
    """An experiment's pruning structure: the next level's mask from scores, the random and
    inverted masks of the controls, and what metrics.json records of the units."""

    def __init__(self, cfg, prunable: List[str], units: List[Units], shapes: Optional[Dict[str, tuple]] = None):
        self.cfg, self.prunable = cfg, prunable
        self.kind, self.n, self.m = parse(cfg.structure)
        if (
            self.kind == "n:m"
            and shapes is not None
            and not self.n_m_kernels({n: np.broadcast_to(np.False_, shapes[n]) for n in prunable})
        ):
            raise LotteryError(
                f"pruning.structure={cfg.structure}: no prunable kernel's input size is a multiple of "
                f"{self.m} ({', '.join(f'{n} {shapes[n][-2]}' for n in prunable)}); choose another M"
            )
        kinds = UNIT_KINDS.get(self.kind, ())
        self.layers = [u for u in units if u.kind in kinds and all(p in prunable for p in u.producers)]
        if kinds and not self.layers:
            raise LotteryError(
                f"pruning.structure={cfg.structure}: this model has no {cfg.structure} to prune "
                f"(its prunable parameters: {', '.join(prunable)})"
            )

    # --- units ---------------------------------------------------------------------------------

    def alive(self, flat_mask, layer: Units) -> np.ndarray:
        """Which units of ``layer`` survive in a mask: those with an incoming weight left."""
        return np.any(layer.produced(flat_mask[layer.producers[0]]), axis=(0, 2))

    def with_units(self, flat_mask: Dict[str, np.ndarray], keep: Dict[int, np.ndarray]) -> Dict[str, np.ndarray]:
        """``flat_mask`` with the units not kept (per layer index) cut: incoming and outgoing weights."""
        out = {k: np.array(v, dtype=bool) for k, v in flat_mask.items()}
        for i, kept in keep.items():
            layer = self.layers[i]
            for name in layer.producers:
                view = layer.produced(out[name])
                view[:, ~kept, :] = False
                out[name] = view.reshape(out[name].shape)
            for name in layer.consumers:
                view = layer.consumed(out[name])
                view[:, ~kept] = False
                out[name] = view.reshape(out[name].shape)
        return out

    def unit_scores(self, flat_scores, layer: Units) -> np.ndarray:
        """A unit's score: the sum of its incoming weights' scores (over every producer)."""
        return sum(np.sum(layer.produced(np.asarray(flat_scores[p], np.float64)), axis=(0, 2)) for p in layer.producers)

    def rate(self, layer: Units):
        rates = masks.layerwise_rates(self.cfg)
        return rates["conv"] if layer.kind == "channels" else rates["fc"]

    def _keep_units(self, scores: Dict[int, np.ndarray], alive: Dict[int, np.ndarray], keep: Dict[int, int]):
        """Per layer index, the ``keep`` highest-scored of its alive units (ties: the earlier pruned first)."""
        out = {}
        for i in alive:
            (kept,) = masks._keep_group([scores[i]], [alive[i]], keep[i])
            out[i] = kept
        return out

    # --- the next level ---------------------------------------------------------------------------

    def prune(self, scores, survivors, level: int):
        """The next level's mask from ``scores`` of the weights under ``survivors`` (IMP's step)."""
        if self.kind == "weights":
            return masks.prune_by_scores(scores, survivors, self.cfg, self.prunable)
        flat_scores, flat = masks.flatten(scores), {k: np.asarray(v) for k, v in masks.flatten(survivors).items()}
        if self.kind == "n:m":
            keep_n = n_schedule(self.n, self.m, self.cfg.rate, level)[level - 1]
            return masks.unflatten(survivors, self._n_of_m(flat_scores, flat, keep_n))
        alive = {i: self.alive(flat, layer) for i, layer in enumerate(self.layers)}
        unit_scores = {i: self.unit_scores(flat_scores, layer) for i, layer in enumerate(self.layers)}
        if self.cfg.strategy == "global":  # one ranking of every layer's units together
            order = list(alive)
            sizes = np.cumsum([alive[i].size for i in order])[:-1]
            remaining = int(sum(alive[i].sum() for i in order))
            (kept,) = masks._keep_group(
                [np.concatenate([unit_scores[i] for i in order])],
                [np.concatenate([alive[i] for i in order])],
                remaining - masks.number_to_prune(self.cfg.rate, remaining),
            )
            keep = dict(zip(order, np.split(kept, sizes)))
        else:
            counts = {
                i: int(a.sum()) - masks.number_to_prune(self.rate(self.layers[i]), int(a.sum()))
                for i, a in alive.items()
            }
            keep = self._keep_units(unit_scores, alive, counts)
        return masks.unflatten(survivors, self.with_units(flat, keep))

    def _n_of_m(self, flat_scores, flat_mask, keep_n: int):
        """Of every M consecutive weights along each kernel's input axis, the ``keep_n`` highest-scored
        survivors (ties: the earlier pruned first); kernels whose input size M does not divide stay."""
        out = dict(flat_mask)
        for name in self.n_m_kernels(flat_mask):
            mask = np.asarray(flat_mask[name], bool)
            scores = np.where(mask, np.asarray(flat_scores[name], np.float64), -np.inf)
            blocks = _blocks(scores, self.m)
            ranks = np.argsort(np.argsort(blocks, axis=-2, kind="stable"), axis=-2, kind="stable")
            kept = np.reshape(ranks >= self.m - keep_n, mask.shape) & mask
            out[name] = kept
        return out

    def n_m_kernels(self, flat_mask) -> List[str]:
        return [name for name in self.prunable if np.shape(flat_mask[name])[-2] % self.m == 0]

    # --- the controls ---------------------------------------------------------------------------

    def random(self, mask, rng: np.random.Generator, strategy: Optional[str] = None):
        """A random mask with ``mask``'s counts, in this structure: random weights (``strategy``: per
        layer or overall), random units per layer, or random N of every M."""
        if self.kind == "weights":
            return masks.random_mask(mask, self.prunable, strategy or self.cfg.strategy, rng)
        flat = {k: np.asarray(v) for k, v in masks.flatten(mask).items()}
        full = {k: np.ones(v.shape, bool) for k, v in flat.items()}
        if self.kind == "n:m":
            out = dict(flat)
            for name in self.n_m_kernels(flat):
                keep_n = int(_blocks(flat[name], self.m).sum(axis=-2).max())
                ranks = _blocks(rng.random(flat[name].shape), self.m).argsort(axis=-2).argsort(axis=-2)
                out[name] = np.reshape(ranks >= self.m - keep_n, flat[name].shape)
            return masks.unflatten(mask, out)
        keep = {}
        for i, layer in enumerate(self.layers):
            count = int(self.alive(flat, layer).sum())
            kept = np.zeros(layer.count, bool)
            kept[rng.permutation(layer.count)[:count]] = True
            keep[i] = kept
        return masks.unflatten(mask, self.with_units(full, keep))

    def inverted(self, scores, survivors, ticket_mask):
        """The invert control's mask: of ``survivors``, the lowest-scored units (N:M: weights of
        each block), as many per layer as the ticket kept."""
        if self.kind == "weights":  # in each tensor, as many as the ticket kept there (under global too)
            keep = [int(c["remaining"]) for c in masks.counts(ticket_mask, self.prunable).values()]
            return masks.prune_to_counts(
                {n: -np.asarray(s) for n, s in scores.items()}, survivors, [[name] for name in self.prunable], keep
            )
        negated = {k: -np.asarray(v) for k, v in masks.flatten(scores).items()}
        flat, ticket = {k: np.asarray(v) for k, v in masks.flatten(survivors).items()}, masks.flatten(ticket_mask)
        if self.kind == "n:m":
            keep_n = max(int(_blocks(np.asarray(ticket[n]), self.m).sum(axis=-2).max()) for n in self.n_m_kernels(flat))
            return masks.unflatten(survivors, self._n_of_m(negated, flat, keep_n))
        alive = {i: self.alive(flat, layer) for i, layer in enumerate(self.layers)}
        counts = {i: int(self.alive(ticket, layer).sum()) for i, layer in enumerate(self.layers)}
        keep = self._keep_units(
            {i: self.unit_scores(negated, layer) for i, layer in enumerate(self.layers)}, alive, counts
        )
        return masks.unflatten(survivors, self.with_units(flat, keep))

    def record(self, mask) -> Optional[dict]:
        """metrics.json's ``structure``: its name and each unit layer's remaining units (None: weights)."""
        if self.kind == "weights":
            return None
        flat = masks.flatten(mask)
        if self.kind == "n:m":
            kept = {
                name: int(_blocks(np.asarray(flat[name]), self.m).sum(axis=-2).max()) for name in self.n_m_kernels(flat)
            }
            return {"structure": self.cfg.structure, "n_of_m": kept, "m": self.m}
        return {
            "structure": self.cfg.structure,
            "units": {
                layer.producers[0]: {"remaining": int(self.alive(flat, layer).sum()), "total": layer.count}
                for layer in self.layers
            },
        }


def compact(mask: Dict[str, np.ndarray], trees: Dict[str, Dict[str, np.ndarray]], units: List[Units]):
    """A ticket as the smaller network it is: each layer's units that neither read nor are read by
    any kept weight removed (producer kernels' columns, their companions' entries, consumer kernels'
    input rows); its logits are the masked network's. Every pruned unit of a unit-structured ticket. ``mask``
    and each tree of ``trees`` (e.g. params, batch statistics of start and trained) are flat by
    '/'-paths. Returns the new mask, trees and, per layer (its first producer), the kept units."""
    mask = {k: np.asarray(v) for k, v in mask.items()}
    trees = {group: {k: np.asarray(v) for k, v in tree.items()} for group, tree in trees.items()}
    kept = {}
    for layer in units:  # a unit goes if nothing reads it and it reads nothing (then it cannot matter)
        alive = np.any(layer.produced(mask[layer.producers[0]]), axis=(0, 2))
        for name in layer.consumers:
            alive |= np.any(layer.consumed(mask[name]), axis=(0, 2, 3))
        index = np.flatnonzero(alive)
        kept[layer.producers[0]] = index.tolist()
        for arrays in [mask, *trees.values()]:
            for name in list(arrays):
                array = arrays[name]
                if name in layer.producers:
                    arrays[name] = np.ascontiguousarray(  # (fancy indexing may leave another memory order)
                        layer.produced(array)[:, index, :].reshape(*array.shape[:-1], index.size * layer.width)
                    )
                elif name in layer.consumers:
                    rows = array.shape[-2] // (layer.count * layer.width) * index.size * layer.width
                    arrays[name] = np.ascontiguousarray(
                        layer.consumed(array)[:, index].reshape(*array.shape[:-2], rows, array.shape[-1])
                    )
                elif (
                    array.ndim == 1
                    and array.size == layer.count * layer.width
                    and any(name == c or name.startswith(c) for c in layer.companions)
                ):
                    arrays[name] = array.reshape(layer.count, layer.width)[index].reshape(-1)
    return mask, trees, kept


def _blocks(array, m: int):
    """A kernel (..., in, out) as (..., in / m, m, out): the blocks of M along the input axis."""
    shape = np.shape(array)
    return np.reshape(array, (*shape[:-2], shape[-2] // m, m, shape[-1]))
