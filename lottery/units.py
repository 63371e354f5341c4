"""What a model declares of its prunable units (neurons, channels, heads) for structured pruning.

Below both models and pruning: each model says which of its kernels make up a unit (lottery/models,
``units``), and pruning/structure.py ranks and prunes them, without models importing pruning.
"""

import dataclasses
from typing import Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class Units:
    """One layer's units as a model declares them: unit j is columns [j w, (j+1) w) of the last axis
    of each producer kernel (w = ``width``: 1, or a head's size), and the entries that read it along
    each consumer kernel's input axis (the second-to-last; after a channels-last flatten, every
    position's copy). ``companions`` are the per-unit parameters and batch statistics that go with it
    in a compact network (biases, batch-norm entries), by path."""

    kind: str  # neurons | channels | heads
    producers: Tuple[str, ...]
    consumers: Tuple[str, ...]
    count: int
    width: int = 1
    companions: Tuple[str, ...] = ()

    def produced(self, kernel):
        """A producer kernel as (everything else, unit, width)."""
        return np.reshape(kernel, (-1, self.count, self.width))

    def consumed(self, kernel):
        """A consumer kernel as (positions, unit, width, outputs)."""
        return np.reshape(kernel, (-1, self.count, self.width, np.shape(kernel)[-1]))


# --- the units of a transformer layer (models/vit.py, models/bert.py) ------------------------------


def attention_heads(attention: str, heads: int, shapes, biases: bool = False) -> Units:
    """The heads of the attention layer at ``attention``: head h is columns [h w, (h + 1) w) of its
    query, key and value kernels (w: their width / ``heads``) and the same rows of ``out/kernel``;
    with ``biases``, the query, key and value biases' entries go with them."""
    projections = ("query", "key", "value")
    kernels = tuple(f"{attention}/{p}/kernel" for p in projections)
    companions = tuple(f"{attention}/{p}/bias" for p in projections) if biases else ()
    width = shapes[kernels[0]][-1] // heads
    return Units("heads", kernels, (f"{attention}/out/kernel",), heads, width, companions=companions)


def hidden_neurons(hidden: str, out: str, shapes) -> Units:
    """The hidden units of an MLP: columns of ``hidden``'s kernel (and its bias), rows of ``out``'s."""
    kernel = f"{hidden}/kernel"
    return Units("neurons", (kernel,), (f"{out}/kernel",), shapes[kernel][-1], companions=(f"{hidden}/bias",))
