"""Layers with PyTorch's semantics, for the models that follow open_lth (a PyTorch code base).

- ``PAD_3X3``: explicit padding of one pixel on every side of a 3x3 convolution, as
  ``nn.Conv2d(..., kernel_size=3, padding=1)``. Flax's ``"SAME"`` equals it at stride 1, but at
  stride 2 on an even-sized input it pads (0, 1) (the odd pixel of padding goes at the end), which
  moves the sampling grid of the convolution by one pixel: output (i, j) is centred on input
  (2i + 1, 2j + 1) instead of (2i, 2j).
- ``torch_bias_init``: the default initialization of ``nn.Linear`` / ``nn.Conv2d`` biases,
  U(-1/sqrt(fan_in), 1/sqrt(fan_in)). open_lth's initializers (``models/initializers.py``) set only
  ``.weight``, so its biases keep this default.
- ``BatchNorm``: ``nn.BatchNorm2d``'s defaults (momentum 0.1 in torch's convention, eps 1e-5) with
  open_lth's ``uniform`` initialization (``models/bn_initializers.py``: weight ~ U[0, 1), bias 0),
  and torch's running-variance update, which averages in the *unbiased* batch variance
  (x n/(n-1), n = values per channel) while normalizing the batch with the biased one.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

PAD_3X3 = ((1, 1), (1, 1))
BN_MOMENTUM = 0.9  # torch's momentum=0.1: running = 0.9 * running + 0.1 * batch
BN_EPSILON = 1e-5
BN_SCALE_INIT = nnx.initializers.uniform(1.0)  # U[0, 1)


def torch_bias_init(fan_in: int):
    """torch's default bias initialization of a layer with ``fan_in`` inputs per output."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class BatchNorm(nnx.BatchNorm):
    """``nnx.BatchNorm`` (same variables: scale, bias, mean, var) that computes as torch's BatchNorm2d."""

    def __init__(self, channels: int, rngs: nnx.Rngs):
        super().__init__(
            channels,
            momentum=BN_MOMENTUM,
            epsilon=BN_EPSILON,
            scale_init=BN_SCALE_INIT,
            use_fast_variance=False,
            rngs=rngs,
        )

    def __call__(self, x, use_running_average: bool):
        if use_running_average:
            mean, var = self.mean[...], self.var[...]
        else:
            axes = tuple(range(x.ndim - 1))
            mean = x.mean(axes)
            var = jnp.square(x - mean).mean(axes)  # biased: what the batch is normalized with
            n = x.size // x.shape[-1]
            unbiased = var * (n / max(n - 1, 1))
            m = self.momentum
            self.mean[...] = jax.lax.stop_gradient(m * self.mean[...] + (1 - m) * mean)
            self.var[...] = jax.lax.stop_gradient(m * self.var[...] + (1 - m) * unbiased)
        return (x - mean) * (jax.lax.rsqrt(var + self.epsilon) * self.scale[...]) + self.bias[...]
