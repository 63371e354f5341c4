"""Bitwise before/after check of a restructure: runs one small experiment of each method and prints,
per experiment, its directory (name and hash) and one digest of every array it saved (each
network's ticket/, trained/, rewind_point/, early_bird/, swamp/ and lmc/ trees, read as NumPy
arrays, not as files: orbax's metadata holds times) and of its metrics.json files without the
wall times. Run it at two commits and diff the outputs; nothing may differ.

    python experiments/digests.py OUT_DIR [NAME ...] > after.txt   # in each checkout (PYTHONPATH=that checkout)

(LOTTERY_DATA_DIR must hold cifar10-subset/ for the ResNet; NAME: only these experiments.)

Each experiment is a `python -m lottery.run` command with its overrides (a fresh process, as a user
runs it), all in OUT_DIR/runs (shared dense runs and diet scores, as in one user's runs/).
"""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np

QUICK = ["training.steps=60it", "training.eval_every=20it", "checkpoint_every=20it", "levels=2"]
EXPERIMENTS = {
    "quickstart": [],
    "mlp-controls-lmc": [
        *QUICK,
        "controls=[random_reinit,random_prune,shuffle_layer,invert,sign_preserving_reinit]",
        "lmc.levels=[0,1,2]",
        "lmc.points=3",
        "rewind=20it",
        "lmc.between_levels=true",
    ],
    "resnet-cifar": [
        "model=resnet",
        "model.depth=8",
        "model.width=4",
        "dataset=cifar10_subset",
        "dataset.validation=0",
        "optimizer=sgd",
        "optimizer.lr=0.05",
        "optimizer.momentum=0.9",
        "training.batch_size=64",
        "training.steps=12it",
        "training.eval_every=6it",
        "checkpoint_every=6it",
        "levels=1",
        "pruning.strategy=global",
        "controls=[random_reinit]",
        "rewind=6it",
    ],
    "gmp": [*QUICK, "sparsity=gmp", "sparsity.update_every=10it"],
    "rigl": [*QUICK, "sparsity=rigl", "sparsity.update_every=10it", "controls=[random_prune]"],
    "set": [*QUICK, "sparsity=set", "sparsity.update_every=7it", "sparsity.decay=constant"],
    "static-levels": [*QUICK, "sparsity=static", "sparsity.levels=[2]"],
    "neurons": [*QUICK, "pruning.structure=neurons", "controls=[random_prune]"],
    "2-4": [*QUICK, "pruning.structure=2:4"],
    "early-bird": [*QUICK, "early_bird.enabled=true", "early_bird.every=10it", "early_bird.window=2"],
    "swamp": [*QUICK, "swamp.particles=3", "swamp.average_from=0.5", "controls=[random_reinit]", "rewind=20it"],
    "diet-el2n": [*QUICK, "diet.score=el2n", "diet.networks=2", "rewind=20it", "diet.keep=0.5"],
    "snip-at-start": [*QUICK, "pruning.prune_at=start", "pruning.criterion=snip", "controls=[invert]"],
    "lr-rewind": [*QUICK, "retrain=lr_rewind", "rewind=20it"],
    "source": [*QUICK, "optimizer.lr=0.002"],  # the transfer's source, run first
    "transfer": [
        *QUICK,
        "transfer.source='name=source training.steps=60it training.eval_every=20it checkpoint_every=20it "
        "levels=2 optimizer.lr=0.002'",
        "controls=[random_prune,random_reinit]",
    ],
}
TIMES = ("wall_time_s", "seconds", "time", "wall_time", "started", "finished")
NOT_RESULTS = ("provenance",)  # the commit and host that computed a result: not the result


def without_times(value):
    if isinstance(value, dict):
        return {
            k: without_times(v) for k, v in value.items() if not any(t in k for t in TIMES) and k not in NOT_RESULTS
        }
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


def tree_digest(directory: str) -> str:
    import orbax.checkpoint as ocp

    tree = ocp.StandardCheckpointer().restore(os.path.abspath(directory))
    h = hashlib.sha256()
    for path, leaf in sorted(((str(p), v) for p, v in __import__("jax").tree_util.tree_flatten_with_path(tree)[0])):
        array = np.asarray(leaf)
        h.update(path.encode() + str(array.dtype).encode() + str(array.shape).encode() + array.tobytes())
    return h.hexdigest()[:16]


def digest(directory: str) -> dict:
    out = {}
    for root, dirs, files in os.walk(directory, followlinks=True):
        dirs.sort()
        relative = os.path.relpath(root, directory)
        if any(part in ("wandb", "checkpoints") for part in relative.split(os.sep)):
            continue
        if (
            "_CHECKPOINT_METADATA" in files
            or any(f.endswith(".ocdbt") or f == "manifest.ocdbt" for f in files)
            or "_METADATA" in files
        ):
            out[relative] = tree_digest(root)
            dirs[:] = []
            continue
        for name in sorted(files):
            path = os.path.join(root, name)
            if name == "metrics.json" or name == "diet.json":
                content = without_times(json.load(open(path)))
                out[os.path.join(relative, name)] = hashlib.sha256(
                    json.dumps(content, sort_keys=True).encode()
                ).hexdigest()[:16]
            elif name.endswith(".npy"):
                out[os.path.join(relative, name)] = hashlib.sha256(np.load(path).tobytes()).hexdigest()[:16]
    return out


def main(out: str, names=()) -> None:
    os.makedirs(out, exist_ok=True)
    env = {**os.environ, "WANDB_MODE": "disabled"}
    for name, overrides in EXPERIMENTS.items():
        if names and name not in names:
            continue
        command = [
            sys.executable,
            "-m",
            "lottery.run",
            f"name={name}",
            "progress=false",
            "compilation_cache=",
            *overrides,
        ]
        done = subprocess.run(command, cwd=out, env=env, capture_output=True, text=True)
        if done.returncode:
            print(f"{name}: exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        made = sorted(d for d in os.listdir(os.path.join(out, "runs")) if d.startswith(f"{name}-"))
        for directory in made:
            print(f"{name}: {directory}", flush=True)
            for path, value in digest(os.path.join(out, "runs", directory)).items():
                print(f"  {path} {value}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
