"""Conv-2, Conv-4 and Conv-6 of Frankle & Carbin 2019 (VGG-like nets for CIFAR-10, Fig. 2).

3x3 convolutions with 'same' padding and ReLU, 2x2 max-pooling ('M'), then fc 256, 256 and the
output layer.
"""

import math

import jax
from flax import nnx

PLANS = {
    "conv2": [64, 64, "M"],
    "conv4": [64, 64, "M", 128, 128, "M"],
    "conv6": [64, 64, "M", 128, 128, "M", 256, 256, "M"],
}
FC_WIDTHS = (256, 256)


class ConvNet(nnx.Module):
    def __init__(self, plan, input_shape, num_classes: int, init, rngs: nnx.Rngs):
        height, width, channels = input_shape
        convs = []
        for entry in plan:
            if entry == "M":
                height, width = height // 2, width // 2
            else:
                convs.append(nnx.Conv(channels, entry, (3, 3), padding="SAME", kernel_init=init, rngs=rngs))
                channels = entry
        self.plan = tuple(plan)
        self.convs = nnx.List(convs)
        widths = [height * width * channels, *FC_WIDTHS]
        self.fc = nnx.List([nnx.Linear(a, b, kernel_init=init, rngs=rngs) for a, b in zip(widths, widths[1:])])
        self.output = nnx.Linear(widths[-1], num_classes, kernel_init=init, rngs=rngs)

    def __call__(self, x, train: bool = False):
        convs = iter(self.convs)
        for entry in self.plan:
            if entry == "M":
                x = nnx.max_pool(x, (2, 2), strides=(2, 2))
            else:
                x = jax.nn.relu(next(convs)(x))
        x = x.reshape(x.shape[0], -1)
        for layer in self.fc:
            x = jax.nn.relu(layer(x))
        return self.output(x)


def build(cfg, input_shape, num_classes, init, rngs):
    if len(input_shape) != 3:
        raise ValueError(f"{cfg.name} needs image input (H, W, C), got shape {input_shape}")
    assert math.prod(input_shape) > 0
    return ConvNet(PLANS[cfg.name], input_shape, num_classes, init, rngs)
