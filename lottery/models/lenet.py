"""LeNet-300-100 and other fully connected nets (Frankle & Carbin 2019, Sec. 2)."""

import math

import jax
from flax import nnx


class LeNet(nnx.Module):
    def __init__(self, in_features: int, hidden, num_classes: int, init, rngs: nnx.Rngs):
        widths = [in_features, *hidden]
        self.hidden = nnx.List(
            [nnx.Linear(a, b, kernel_init=init, rngs=rngs) for a, b in zip(widths, widths[1:])]
        )
        self.output = nnx.Linear(widths[-1], num_classes, kernel_init=init, rngs=rngs)

    def __call__(self, x, train: bool = False):
        x = x.reshape(x.shape[0], -1)
        for layer in self.hidden:
            x = jax.nn.relu(layer(x))
        return self.output(x)


def build(cfg, input_shape, num_classes, init, rngs):
    return LeNet(math.prod(input_shape), list(cfg.hidden), num_classes, init, rngs)
