"""The training settings a config gives, checked without JAX (trainer.py builds from them): the
optimizer's name and hyperparameters, the precision, the stack width."""

import math

from lottery.errors import LotteryError

OPTIMIZERS = ("sgd", "adam")
PRECISIONS = ("float32", "bfloat16")


def check_optimizer(cfg) -> None:
    """Config ``optimizer``: a known name and hyperparameters in their ranges."""
    if cfg.name not in OPTIMIZERS:
        raise LotteryError(f"optimizer.name={cfg.name!r} is not an optimizer; choose one of: {', '.join(OPTIMIZERS)}")
    if not math.isfinite(cfg.lr) or cfg.lr <= 0:
        raise LotteryError(f"optimizer.lr={cfg.lr} must be a positive number")
    for key, low, high in (("momentum", 0, 1), ("b1", 0, 1), ("b2", 0, 1)):
        value = getattr(cfg, key)
        if not low <= value < high:  # also false for nan
            raise LotteryError(f"optimizer.{key}={value} must be in [{low}, {high})")
    for key in ("weight_decay", "eps"):
        value = getattr(cfg, key)
        if not math.isfinite(value) or value < 0:
            raise LotteryError(f"optimizer.{key}={value} must be a finite number >= 0")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise LotteryError(
            f"training.precision={precision!r} is not a precision; choose one of: {', '.join(PRECISIONS)}"
        )


def stack_width(text: str) -> int:
    """``training.stack`` other than auto: a positive number of networks per program."""
    if not str(text).isdigit() or int(text) < 1:
        raise LotteryError(f"training.stack={text!r} must be a positive number of networks per program, or auto")
    return int(text)
