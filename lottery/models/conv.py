"""Conv-2, Conv-4 and Conv-6 of Frankle & Carbin 2019 (VGG-like nets for CIFAR-10, Fig. 2).

What the paper states (Fig. 2 and its caption): convolutions 64, 64, pool (Conv-2); then 128, 128,
pool (Conv-4); then 256, 256, pool (Conv-6); fully connected 256, 256, 10; convolutions are 3x3;
Gaussian Glorot initialization; 4.3M / 2.4M / 1.7M weights. Frankle & Carbin's own code for these
nets is not public (open_lth has none of them), so the rest is assumed here:

- padding 1 on each side (stride 1: the same as 'same'). Inferred from the weight counts: padded,
  Conv-2 and Conv-4 have 4,300,992 and 2,425,024 weights (the paper's 4.3M and 2.4M); unpadded
  they would have 3.3M and 1.1M. (Conv-6 padded has 2,261,184, not the paper's 1.7M, and unpadded
  is impossible: the map vanishes before the third pool.)
- 'pool' is a 2x2 max-pool of stride 2, as in VGG;
- every layer has a bias, initialized to 0 (TensorFlow's default, which Frankle's TF
  re-implementation of the LeNet experiments keeps: google-research/lottery-ticket-hypothesis,
  ``foundations/model_base.py``, ``tf.zeros_initializer``); Zhou et al. 2019, who re-implemented
  Conv-2/4/6 to reproduce the paper (uber-research/deconstructing-lottery-tickets,
  ``network_builders.py``), have the same layers: 'same' 3x3 convs with zero-initialized biases,
  2x2 max-pools of stride 2, Glorot normal kernels;
- Gaussian Glorot as an untruncated normal of variance 2 / (fan_in + fan_out), fans counting the
  3x3 receptive field (``models.initializer('glorot_normal')``);
- ReLU after every conv and hidden fc layer; the feature map is flattened in (H, W, C) order
  (Keras's; torch's would be (C, H, W): with i.i.d. weights only a fixed permutation of fc rows).
"""

import math

import jax
from flax import nnx

from lottery.models import plans
from lottery.models.layers import PAD_3X3
from lottery.units import Units

PLANS = plans.CONV
FC_WIDTHS = (256, 256)


class ConvNet(nnx.Module):
    def __init__(self, plan, input_shape, num_classes: int, init, rngs: nnx.Rngs):
        height, width, channels = input_shape
        convs = []
        for entry in plan:
            if entry == "M":
                height, width = height // 2, width // 2
            else:
                convs.append(nnx.Conv(channels, entry, (3, 3), padding=PAD_3X3, kernel_init=init, rngs=rngs))
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


def units(shapes):
    """Each conv layer's output channels (its filters; the next conv's input channels, or after the
    flatten every position's copy in the first fc layer) and each fc hidden layer's neurons."""
    order = lambda prefix: sorted(
        (n for n in shapes if n.startswith(prefix) and n.endswith("/kernel")), key=lambda n: int(n.split("/")[1])
    )
    convs, fcs = order("convs/"), order("fc/")
    chain = convs + fcs + ["output/kernel"]
    return [
        Units(
            "channels" if name in convs else "neurons",
            (name,),
            (following,),
            shapes[name][-1],
            companions=(name[: -len("kernel")] + "bias",),
        )
        for name, following in zip(chain, chain[1:])
    ]


def build(cfg, input_shape, num_classes, init, rngs):
    if len(input_shape) != 3:
        raise ValueError(f"{cfg.name} needs image input (H, W, C), got shape {input_shape}")
    assert math.prod(input_shape) > 0
    return ConvNet(PLANS[cfg.name], input_shape, num_classes, init, rngs)
