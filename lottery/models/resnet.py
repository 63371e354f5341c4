"""CIFAR ResNet of depth 6n+2 and width W (He et al. 2016, Sec. 4.2), as open_lth's cifar_resnet.

Three stages of n basic blocks with W, 2W, 4W channels; the first block of stages 2 and 3 halves the
resolution and projects the shortcut with a 1x1 convolution + batch norm. Convolutions have no
bias. ResNet-20 at W=16 has 272,474 parameters.
"""

import jax
import jax.numpy as jnp
from flax import nnx

BN_MOMENTUM = 0.9  # torch's momentum=0.1 in Flax's convention
BN_SCALE_INIT = nnx.initializers.uniform(1.0)  # open_lth: BatchNorm weight ~ U[0, 1)


def batch_norm(channels, rngs):
    return nnx.BatchNorm(channels, momentum=BN_MOMENTUM, epsilon=1e-5, scale_init=BN_SCALE_INIT, rngs=rngs)


class Block(nnx.Module):
    def __init__(self, channels_in: int, channels_out: int, downsample: bool, init, rngs: nnx.Rngs):
        stride = (2, 2) if downsample else (1, 1)
        conv = lambda a, b, k, s: nnx.Conv(a, b, k, strides=s, padding="SAME" if k == (3, 3) else "VALID",
                                           use_bias=False, kernel_init=init, rngs=rngs)
        self.conv1 = conv(channels_in, channels_out, (3, 3), stride)
        self.bn1 = batch_norm(channels_out, rngs)
        self.conv2 = conv(channels_out, channels_out, (3, 3), (1, 1))
        self.bn2 = batch_norm(channels_out, rngs)
        if downsample or channels_in != channels_out:
            self.shortcut_conv = conv(channels_in, channels_out, (1, 1), stride)
            self.shortcut_bn = batch_norm(channels_out, rngs)
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
        self.conv = nnx.Conv(channels_in, width, (3, 3), padding="SAME", use_bias=False, kernel_init=init, rngs=rngs)
        self.bn = batch_norm(width, rngs)
        blocks, channels = [], width
        for stage in range(3):
            for i in range(n):
                out = width * 2**stage
                blocks.append(Block(channels, out, downsample=stage > 0 and i == 0, init=init, rngs=rngs))
                channels = out
        self.blocks = nnx.List(blocks)
        self.output = nnx.Linear(channels, num_classes, kernel_init=init, rngs=rngs)

    def __call__(self, x, train: bool = False):
        x = jax.nn.relu(self.bn(self.conv(x), use_running_average=not train))
        for block in self.blocks:
            x = block(x, train)
        return self.output(jnp.mean(x, axis=(1, 2)))


def build(cfg, input_shape, num_classes, init, rngs):
    return ResNet(cfg.depth, cfg.width, input_shape[-1], num_classes, init, rngs)
