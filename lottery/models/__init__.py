"""The networks tickets are drawn from: LeNet, Conv-2/4/6, CIFAR ResNets, VGG, ViT (one module each).

``build(cfg.model, input_shape, num_classes, key)`` returns a Flax NNX module with its initial
weights; ``check`` and ``check_input`` refuse a config or data set it cannot be built for in one
line; ``units(cfg.model, shapes)`` are its units for structured pruning (``Units``, lottery/units.py).

Every model names its last dense layer ``output`` (layerwise pruning gives it its own rate) and its
conv / dense weights ``kernel`` (the prunable parameters).
"""

from __future__ import annotations

import importlib

from lottery import lazy
from lottery.errors import LotteryError
from lottery.models import plans

nnx = lazy.module("flax.nnx")

__all__ = ["INITIALIZERS", "VIT_KEYS", "build", "check", "check_input", "initializer", "names", "units"]

# Each family's module (imported when a model of it is built: the checks below import no Flax)
_FAMILIES = {
    "lenet": "lenet",
    "conv2": "conv",
    "conv4": "conv",
    "conv6": "conv",
    "resnet": "resnet",
    "vgg": "vgg",
    "vit": "vit",
}


def _family(name: str):
    return importlib.import_module(f"{__name__}.{_FAMILIES[name]}")


# The ViT's sizes (conf/model/vit.yaml sets them); None for every other model, which does not read
# them, so that they stay out of those models' experiment hashes (results/identity.py).
VIT_KEYS = ("patch", "dim", "heads", "head_dim", "mlp_dim")

# Untruncated Gaussian Glorot, N(0, 2 / (fan_in + fan_out)), as torch.nn.init.xavier_normal_
# (Frankle & Carbin 2019). Conv fans count the receptive field: 9 x channels for a 3x3 kernel.
# kaiming_normal: torch.nn.init.kaiming_normal_ defaults (a=0, mode fan_in, gain sqrt(2)):
# N(0, 2 / fan_in), untruncated, as open_lth's models/initializers.py kaiming_normal. Kernels only:
# biases are initialized by each model (open_lth's keep torch's default, Frankle & Carbin's are 0).
_SCALING = {"glorot_normal": (1.0, "fan_avg"), "kaiming_normal": (2.0, "fan_in")}
INITIALIZERS = tuple(_SCALING)


def initializer(name: str):
    """The kernel initializer ``model.init`` names (an NNX initializer)."""
    scale, mode = _SCALING[name]
    return nnx.initializers.variance_scaling(scale, mode, "normal")


def units(cfg, shapes) -> list:
    """The model's units (neurons, channels, heads) for structured pruning (pruning/structure.py),
    from its parameters' shapes by '/'-path (``hidden/0/kernel``)."""
    family = _family(cfg.name)
    return family.units(shapes, cfg.heads) if cfg.name == "vit" else family.units(shapes)


def names():
    return sorted(_FAMILIES)


def check(cfg) -> None:
    """Raise a one-line LotteryError for a model config that cannot be built."""
    if cfg.name not in _FAMILIES:
        raise LotteryError(f"model.name={cfg.name!r} is not a model; choose one of: {', '.join(names())}")
    if cfg.init not in INITIALIZERS:
        raise LotteryError(
            f"model.init={cfg.init!r} is not an initializer; choose one of: {', '.join(sorted(INITIALIZERS))}"
        )
    if cfg.name == "resnet" and (cfg.depth < 8 or (cfg.depth - 2) % 6):
        raise LotteryError(f"model.depth={cfg.depth} is not a CIFAR ResNet depth: expected 6n+2, e.g. 20, 56, 110")
    if cfg.name == "vgg" and cfg.depth not in plans.VGG:
        raise LotteryError(
            f"model.depth={cfg.depth} is not a VGG depth; choose one of: {', '.join(map(str, plans.VGG))}"
        )
    if cfg.name in ("lenet", "resnet") and (min(cfg.hidden, default=1) < 1 or cfg.width < 1):
        raise LotteryError("model.hidden and model.width must be positive")
    if cfg.name == "vit":
        _check_vit(cfg)
    else:
        for key in VIT_KEYS:
            if getattr(cfg, key, None) is not None:
                raise LotteryError(
                    f"model.{key}={getattr(cfg, key, None)} is a ViT size; model {cfg.name} does not use it "
                    f"(it would name another experiment): leave it unset"
                )


def _check_vit(cfg) -> None:
    for key in ("patch", "dim", "heads", "mlp_dim", "depth"):
        value = getattr(cfg, key, None)
        if value is None or value < 1:
            raise LotteryError(
                f"model.{key}={value}: the ViT needs a positive {key} (conf/model/vit.yaml sets them all)"
            )
    if cfg.head_dim is None and cfg.dim % cfg.heads:
        raise LotteryError(
            f"model.dim={cfg.dim} is not a multiple of model.heads={cfg.heads}: each head is dim / heads "
            "wide; change one, or set model.head_dim"
        )
    if cfg.head_dim is not None and cfg.head_dim < 1:
        raise LotteryError(f"model.head_dim={cfg.head_dim} must be positive (or null: dim / heads)")


def check_input(cfg, input_shape, dataset: str) -> None:
    """Raise a one-line LotteryError when ``dataset``'s images cannot go through the model: conv
    models need images, and each 2x2 max-pooling halves them (VGG-16 on 8x8 digits would pool
    them away and train on nothing); the ViT needs images that are a whole number of patches."""
    if cfg.name == "lenet":
        return
    if len(input_shape) != 3:
        raise LotteryError(
            f"model {cfg.name} needs images (height, width, channels); dataset {dataset} has inputs of shape "
            f"{tuple(input_shape)}"
        )
    if cfg.name == "vit":
        height, width = input_shape[:2]
        if height % cfg.patch or width % cfg.patch:
            raise LotteryError(
                f"model vit cuts images into {cfg.patch}x{cfg.patch} patches (model.patch); dataset "
                f"{dataset} has {height}x{width} images, not a whole number of patches: choose a patch "
                f"that divides {height} and {width}"
            )
        return
    plan = plans.CONV.get(cfg.name) or (plans.VGG[cfg.depth] if cfg.name == "vgg" else [])
    pools = plan.count("M")
    height, width = input_shape[:2]
    if min(height, width) < 2**pools:
        raise LotteryError(
            f"model {cfg.name}{f' (depth {cfg.depth})' if cfg.name == 'vgg' else ''} halves its input "
            f"{pools} times (2x2 max-pooling) and needs images of at least {2**pools}x{2**pools} pixels; "
            f"dataset {dataset} has {height}x{width}: the input is too small for this model"
        )


def build(cfg, input_shape, num_classes: int, key):
    """Build the model of `cfg` with its initial weights drawn from the PRNG `key`."""
    check(cfg)
    return _family(cfg.name).build(cfg, tuple(input_shape), num_classes, initializer(cfg.init), nnx.Rngs(params=key))
