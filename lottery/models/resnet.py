"""CIFAR ResNet of depth 6n+2 and width W (He et al. 2016, Sec. 4.2), as open_lth's cifar_resnet.

Read against open_lth's ``models/cifar_resnet.py`` (commit 2ce732f), layer by layer:

- a 3x3 convolution W channels (stride 1, padding 1, no bias), batch norm, ReLU;
- three stages of n basic blocks with W, 2W, 4W channels. A block is conv 3x3 (padding 1, no bias,
  stride 2 in the first block of stages 2 and 3) - BN - ReLU - conv 3x3 (stride 1, padding 1, no
  bias) - BN, plus the shortcut, then ReLU. Where the block downsamples (or changes the width) the
  shortcut is a 1x1 convolution of stride 2 without padding or bias (it reads the even positions
  (2i, 2j)) and a BN; otherwise the identity;
- global average pooling and a fully connected output layer 4W -> classes, with bias.

Padding is written out as (1, 1) on each side (``layers.PAD_3X3``): Flax's "SAME" pads (0, 1) at
stride 2 and would shift the stride-2 convolutions' sampling grid by one pixel against torch's.
Initialization (open_lth's defaults for cifar_resnet_*: ``model_init='kaiming_normal'``,
``batchnorm_init='uniform'``): conv and output kernels from ``model.init`` (kaiming_normal: N(0,
2/fan_in), torch's ``kaiming_normal_`` defaults); the output bias keeps torch's default
U(-1/sqrt(64), 1/sqrt(64)) at W=16; BN weight U[0, 1), bias 0 (``layers.BatchNorm``, which also has
torch's momentum, eps and running-variance update). ResNet-20 at W=16 has 272,474 parameters.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from lottery.models.layers import PAD_3X3, BatchNorm, torch_bias_init
from lottery.units import Units


class Block(nnx.Module):
    def __init__(self, channels_in: int, channels_out: int, downsample: bool, init, rngs: nnx.Rngs):
        stride = (2, 2) if downsample else (1, 1)
        conv3x3 = lambda a, b, s: nnx.Conv(
            a, b, (3, 3), strides=s, padding=PAD_3X3, use_bias=False, kernel_init=init, rngs=rngs
        )
        self.conv1 = conv3x3(channels_in, channels_out, stride)
        self.bn1 = BatchNorm(channels_out, rngs)
        self.conv2 = conv3x3(channels_out, channels_out, (1, 1))
        self.bn2 = BatchNorm(channels_out, rngs)
        if downsample or channels_in != channels_out:
            self.shortcut_conv = nnx.Conv(
                channels_in,
                channels_out,
                (1, 1),
                strides=stride,
                padding="VALID",
                use_bias=False,
                kernel_init=init,
                rngs=rngs,
            )
            self.shortcut_bn = BatchNorm(channels_out, rngs)
        else:
            self.shortcut_conv = None

    def __call__(self, x, train: bool):
        out = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=not train))
        out = self.bn2(self.conv2(out), use_running_average=not train)
        if self.shortcut_conv is not None:
            x = self.shortcut_bn(self.shortcut_conv(x), use_running_average=not train)
        return jax.nn.relu(out + x)


class ResNet(nnx.Module):
    def __init__(self, depth: int, width: int, channels_in: int, num_classes: int, init, rngs: nnx.Rngs):
        n = (depth - 2) // 6
        self.conv = nnx.Conv(channels_in, width, (3, 3), padding=PAD_3X3, use_bias=False, kernel_init=init, rngs=rngs)
        self.bn = BatchNorm(width, rngs)
        blocks, channels = [], width
        for stage in range(3):
            for i in range(n):
                out = width * 2**stage
                blocks.append(Block(channels, out, downsample=stage > 0 and i == 0, init=init, rngs=rngs))
                channels = out
        self.blocks = nnx.List(blocks)
        self.output = nnx.Linear(
            channels, num_classes, kernel_init=init, bias_init=torch_bias_init(channels), rngs=rngs
        )

    def __call__(self, x, train: bool = False):
        x = jax.nn.relu(self.bn(self.conv(x), use_running_average=not train))
        for block in self.blocks:
            x = block(x, train)
        return self.output(jnp.mean(x, axis=(1, 2)))


def units(shapes):
    """The output channels of each block's first conv (with their batch-norm entries), read by the
    block's second conv only. Every other conv's channels meet the residual sum, where a pruned
    channel would still carry the shortcut: they are not units (Li et al. 2017, Sec. 3.3)."""
    firsts = sorted(
        (n for n in shapes if n.startswith("blocks/") and n.endswith("/conv1/kernel")),
        key=lambda n: int(n.split("/")[1]),
    )
    return [
        Units(
            "channels",
            (name,),
            (name.replace("conv1", "conv2"),),
            shapes[name][-1],
            companions=(name.replace("conv1/kernel", "bn1/"),),
        )
        for name in firsts
    ]


def build(cfg, input_shape, num_classes, init, rngs):
    return ResNet(cfg.depth, cfg.width, input_shape[-1], num_classes, init, rngs)
