"""CIFAR VGG-11/13/16/19 with batch norm (Simonyan & Zisserman 2015), as open_lth's cifar_vgg.

Read against open_lth's ``models/cifar_vgg.py`` (commit 2ce732f): each number of the plan is a 3x3
convolution (stride 1, padding 1, with bias) - BN - ReLU; each 'M' a 2x2 max-pool of stride 2; then
``nn.AvgPool2d(2)`` and one fully connected layer 512 -> classes, with bias. On a 32x32 input the
four pools leave a 2x2 map, which that average pool reduces to 1x1: the global mean used here is the
same on CIFAR-10 (on other input sizes open_lth's fixed ``nn.Linear(512, ...)`` would not fit).

Initialization (open_lth's defaults for cifar_vgg_*: ``model_init='kaiming_normal'``,
``batchnorm_init='uniform'``): conv and output kernels from ``model.init``; conv and output biases
keep torch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (fan_in = 9 x input channels for a conv,
512 for the output), because open_lth's initializers set only the weights; BN weight U[0, 1), bias
0, with torch's momentum, eps and running-variance update (``layers.BatchNorm``).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from lottery.models import plans
from lottery.models.layers import PAD_3X3, BatchNorm, torch_bias_init
from lottery.units import Units

PLANS = plans.VGG


class VGG(nnx.Module):
    def __init__(self, plan, channels_in: int, num_classes: int, init, rngs: nnx.Rngs):
        convs, norms, channels = [], [], channels_in
        for entry in plan:
            if entry != "M":
                convs.append(
                    nnx.Conv(
                        channels,
                        entry,
                        (3, 3),
                        padding=PAD_3X3,
                        kernel_init=init,
                        bias_init=torch_bias_init(9 * channels),
                        rngs=rngs,
                    )
                )
                norms.append(BatchNorm(entry, rngs))
                channels = entry
        self.plan = tuple(plan)
        self.convs = nnx.List(convs)
        self.norms = nnx.List(norms)
        self.output = nnx.Linear(
            channels, num_classes, kernel_init=init, bias_init=torch_bias_init(channels), rngs=rngs
        )

    def __call__(self, x, train: bool = False):
        layers = iter(zip(self.convs, self.norms))
        for entry in self.plan:
            if entry == "M":
                x = nnx.max_pool(x, (2, 2), strides=(2, 2))
            else:
                conv, norm = next(layers)
                x = jax.nn.relu(norm(conv(x), use_running_average=not train))
        return self.output(jnp.mean(x, axis=(1, 2)))


def units(shapes):
    """Each conv layer's output channels with their bias and batch-norm entries: its filters, and the
    next conv's input channels (the last conv's: the output layer's rows, after the mean pooling)."""
    convs = sorted(
        (n for n in shapes if n.startswith("convs/") and n.endswith("/kernel")), key=lambda n: int(n.split("/")[1])
    )
    chain = convs + ["output/kernel"]
    return [
        Units(
            "channels",
            (name,),
            (following,),
            shapes[name][-1],
            companions=(name[: -len("kernel")] + "bias", f"norms/{name.split('/')[1]}/"),
        )
        for name, following in zip(chain, chain[1:])
    ]


def build(cfg, input_shape, num_classes, init, rngs):
    return VGG(PLANS[cfg.depth], input_shape[-1], num_classes, init, rngs)
