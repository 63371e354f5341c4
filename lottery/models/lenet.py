"""LeNet-300-100 and other fully connected nets (Frankle & Carbin 2019, Sec. 2).

As the paper gives it (Fig. 2): fc 300, 100, 10 with ReLU, Gaussian Glorot initialization
(``model.init=glorot_normal``: an untruncated normal of variance 2 / (fan_in + fan_out)). Biases are
initialized to 0: the paper says nothing about them; Frankle's TF re-implementation
(google-research/lottery-ticket-hypothesis, ``foundations/model_base.py`` ``dense_layer``) uses
``tf.zeros_initializer``. Known differences from the sources, kept on purpose:

- that re-implementation draws the kernels with ``tf.contrib.layers.xavier_initializer(uniform=False)``
  (``foundations/model_fc.py``), a normal of standard deviation sqrt(1.3 x 2 / (fan_in + fan_out))
  truncated at 2 of them (variance 1.006 x the Glorot one; no weight beyond 2.28 Glorot standard
  deviations). The paper's words, "Gaussian Glorot", are what is implemented here.
- open_lth's ``mnist_lenet_300_100`` is the same layer list but defaults to ``kaiming_normal``
  kernels and keeps torch's default biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the experiments that
  use this model cite Frankle & Carbin, so they follow the paper instead.
"""

import math

import jax
from flax import nnx

from lottery.units import Units


class LeNet(nnx.Module):
    def __init__(self, in_features: int, hidden, num_classes: int, init, rngs: nnx.Rngs):
        widths = [in_features, *hidden]
        self.hidden = nnx.List([nnx.Linear(a, b, kernel_init=init, rngs=rngs) for a, b in zip(widths, widths[1:])])
        self.output = nnx.Linear(widths[-1], num_classes, kernel_init=init, rngs=rngs)

    def __call__(self, x, train: bool = False):
        x = x.reshape(x.shape[0], -1)
        for layer in self.hidden:
            x = jax.nn.relu(layer(x))
        return self.output(x)


def units(shapes):
    """Each hidden layer's neurons: its kernel's columns and the next layer's rows (pruning/structure.py)."""
    hidden = sorted(
        (name for name in shapes if name.startswith("hidden/") and name.endswith("/kernel")),
        key=lambda name: int(name.split("/")[1]),
    )
    after = hidden[1:] + ["output/kernel"]
    return [
        Units("neurons", (name,), (following,), shapes[name][-1], companions=(name[: -len("kernel")] + "bias",))
        for name, following in zip(hidden, after)
    ]


def build(cfg, input_shape, num_classes, init, rngs):
    return LeNet(math.prod(input_shape), list(cfg.hidden), num_classes, init, rngs)
