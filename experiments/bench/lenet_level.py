"""One full LeNet-300-100 IMP level on MNIST with Frankle & Carbin's protocol: 50K iterations of
batch 60, validation (5K) and test (10K) evaluated every 100 iterations. Reports wall time and its
shares: compilation, training, evaluation, host work (metrics, checkpoints).

    python experiments/bench/lenet_level.py [--steps 50000it] [--data-root ../shared/data] [--smoke]
"""

import argparse
import io
import os
import tempfile
import time

import jax
from rich.console import Console

from common import compose_config, machine
from lottery import imp
from lottery.pruning.masks import full_mask
from lottery.training import trainer as training
from lottery.imp import levels
from lottery.results import identity


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="50000it")
    parser.add_argument("--smoke", action="store_true", help="200 iterations: that the script runs (the suite)")
    parser.add_argument("--data-root", default=os.environ.get("LOTTERY_DATA_DIR", "~/.cache/lottery"))
    args = parser.parse_args()
    if args.smoke:
        args.steps = "200it"

    seconds = {"compile": 0.0, "train": 0.0, "evaluate": 0.0}
    train, evaluate = training.Trainer.train, training.Trainer.evaluate

    def timed(kind, method):
        def wrapper(self, *a, **k):
            start = time.perf_counter()
            out = jax.block_until_ready(method(self, *a, **k))
            seconds[kind] += time.perf_counter() - start
            return out

        return wrapper

    training.Trainer.train = timed("train", train)
    training.Trainer.evaluate = timed("evaluate", evaluate)
    with tempfile.TemporaryDirectory() as output:
        cfg = compose_config(
            [
                "+exp=lenet",
                "levels=0",
                f"training.steps={args.steps}",
                f"dataset.root={args.data_root}",
                f"output_dir={output}",
                "progress=false",
                "wandb.mode=disabled",
            ]
        )
        began = time.perf_counter()
        experiment = imp.prepare(cfg)
        prepared = time.perf_counter()
        # Compilation: the first call of each program, measured on a throwaway state.
        trainer = experiment.trainer
        keys = experiment.keys(0)
        state = training.stack(
            [trainer.init_state(trainer.init_params, trainer.init_batch_stats, full_mask(trainer.init_params))]
        )
        start = time.perf_counter()
        state, _ = train(trainer, state, jax.numpy.stack([keys["data"]]), jax.numpy.stack([keys["augment"]]), 0, 1)
        jax.block_until_ready(state)
        for split in ("val", "test"):
            evaluate(trainer, state, split)
        seconds["compile"] = time.perf_counter() - start
        level_start = time.perf_counter()  # the same experiment (trainer, data), so nothing loads or compiles again
        os.makedirs(experiment.directory)
        identity.write_identity(experiment.directory, experiment.cfg, experiment.data_fingerprint)  # as imp.run does
        (metrics,) = levels.run_locked(experiment, Console(file=io.StringIO()))
        level = time.perf_counter() - level_start
        total = time.perf_counter() - began
    host = level - seconds["train"] - seconds["evaluate"]
    print(f"machine: {machine()}")
    print(f"LeNet-300-100, MNIST, {args.steps} of batch 60, val + test every 100 its")
    print(f"{'load data + build':24s} {prepared - began:7.2f} s")
    print(f"{'compile (train, eval)':24s} {seconds['compile']:7.2f} s")
    print(f"{'train':24s} {seconds['train']:7.2f} s  ({100 * seconds['train'] / level:.0f}% of the level)")
    print(f"{'evaluate':24s} {seconds['evaluate']:7.2f} s  ({100 * seconds['evaluate'] / level:.0f}%)")
    print(f"{'host (metrics, saving)':24s} {host:7.2f} s  ({100 * host / level:.0f}%)")
    print(f"{'level (after compile)':24s} {level:7.2f} s")
    print(f"{'total':24s} {total:7.2f} s")
    print(
        f"test accuracy {100 * metrics['final']['test_accuracy']:.2f}% final, "
        f"{100 * metrics['early_stop']['test_accuracy']:.2f}% at the early-stop iteration "
        f"{metrics['early_stop']['step']:,}"
    )


if __name__ == "__main__":
    main()
