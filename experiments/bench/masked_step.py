"""Masked vs dense training step, in the same compiled program: what masking costs.

LeNet-300-100 (batch 60, MNIST-shaped data, Adam) and ResNet-20 (batch 128, CIFAR-shaped
synthetic data, SGD + momentum + weight decay), at densities 100%, 20% and 2% (random masks over
the prunable weights). "dense" is the same program with the two mask selections removed.

    python experiments/bench/masked_step.py [--lenet-steps 2000] [--resnet-steps 20] [--precision bfloat16]
"""

import argparse

import jax
import numpy as np

from common import compose_config, machine, synthetic, timed
from lottery import models
from lottery.pruning import masks as pruning
from lottery.training import trainer as training

MODELS = {
    "lenet": dict(overrides=["+exp=lenet"], shape=(28, 28, 1)),
    "resnet20": dict(overrides=["+exp=resnet"], shape=(32, 32, 3)),
    "vgg16": dict(overrides=["+exp=vgg"], shape=(32, 32, 3)),
}


def make_trainer(name, masked, stack="1", precision="float32"):
    spec = MODELS[name]
    cfg = compose_config(spec["overrides"])
    data = synthetic(spec["shape"])
    model = models.build(cfg.model, spec["shape"], 10, jax.random.key(0))
    tx = training.make_optimizer(cfg.optimizer)
    schedule = training.make_schedule(cfg.optimizer, cfg.training, len(data.train_x) // cfg.training.batch_size)
    return training.Trainer(
        model,
        tx,
        schedule,
        data,
        cfg.training.batch_size,
        1000,
        cfg.dataset.augment,
        masked=masked,
        stack=stack,
        precision=precision,
    )


def random_mask(trainer, density, seed=0):
    rng = np.random.default_rng(seed)
    names = pruning.prunable(trainer.init_params)
    flat = {k: np.ones(np.shape(v), bool) for k, v in pruning.flatten(trainer.init_params).items()}
    for name in names:
        flat[name] = rng.random(flat[name].shape) < density
    return pruning.unflatten(trainer.init_params, flat)


def step_time(trainer, density, steps):
    keys = jax.random.split(jax.random.key(1), 2)
    state = training.stack(
        [trainer.init_state(trainer.init_params, trainer.init_batch_stats, random_mask(trainer, density))]
    )
    data_keys, augment_keys = keys[:1], keys[1:]
    holder = {"state": state}

    def run():
        holder["state"], loss = trainer.train(holder["state"], data_keys, augment_keys, 0, steps)
        return loss

    return timed(run, repeats=5) / steps


def measure(name, steps, precision="float32"):
    rows = []
    dense, masked = make_trainer(name, False, precision=precision), make_trainer(name, True, precision=precision)
    for density in (1.0, 0.2, 0.02):
        d, m = step_time(dense, density, steps), step_time(masked, density, steps)
        rows.append((name, density, d, m))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lenet-steps", type=int, default=2000)
    parser.add_argument("--resnet-steps", type=int, default=20)
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"{'model':10s} {'density':>8s} {'dense ms/step':>14s} {'masked ms/step':>15s} {'overhead':>9s}")
    for name, steps in (("lenet", args.lenet_steps), ("resnet20", args.resnet_steps)):
        for model, density, d, m in measure(name, steps, args.precision):
            print(f"{model:10s} {100 * density:7.0f}% {1e3 * d:14.3f} {1e3 * m:15.3f} {100 * (m / d - 1):8.1f}%")


if __name__ == "__main__":
    main()
