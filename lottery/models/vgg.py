"""CIFAR VGG-11/13/16/19 with batch norm (Simonyan & Zisserman 2015), as open_lth's cifar_vgg.

3x3 convolutions (with bias) + batch norm + ReLU, 2x2 max-pooling ('M'), global average pooling and
one fc layer 512 -> classes.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from lottery.models.resnet import batch_norm

PLANS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}


class VGG(nnx.Module):
    def __init__(self, plan, channels_in: int, num_classes: int, init, rngs: nnx.Rngs):
        convs, norms, channels = [], [], channels_in
        for entry in plan:
            if entry != "M":
                convs.append(nnx.Conv(channels, entry, (3, 3), padding="SAME", kernel_init=init, rngs=rngs))
                norms.append(batch_norm(entry, rngs))
                channels = entry
        self.plan = tuple(plan)
        self.convs = nnx.List(convs)
        self.norms = nnx.List(norms)
        self.output = nnx.Linear(channels, num_classes, kernel_init=init, rngs=rngs)

    def __call__(self, x, train: bool = False):
        layers = iter(zip(self.convs, self.norms))
        for entry in self.plan:
            if entry == "M":
                x = nnx.max_pool(x, (2, 2), strides=(2, 2))
            else:
                conv, norm = next(layers)
                x = jax.nn.relu(norm(conv(x), use_running_average=not train))
        return self.output(jnp.mean(x, axis=(1, 2)))


def build(cfg, input_shape, num_classes, init, rngs):
    return VGG(PLANS[cfg.depth], input_shape[-1], num_classes, init, rngs)
