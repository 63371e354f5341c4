"""Results as a pandas DataFrame: every trained network below a directory, one row each.

    df = load_runs("runs")                 # every experiment below a directory (or a sweep dir)
    summarize(df)                          # mean and std over replicates per experiment, kind, level

One row per trained network: experiment (name, hash, directory, method: IMP, RigL, SWAMP, ...),
replicate, level, kind (ticket or a control), % weights remaining, test accuracy (final and at
early stop), early-stop iteration, LMC barrier, training cost (the steps behind the network: IMP's
levels, or one sparse training), and the config values that differ between the experiments
loaded, as columns named by their dotted keys (``pruning.rate``, ``rewind``).
"""

import glob
import os
from typing import List, Optional

import numpy as np
import pandas as pd

from lottery.errors import LotteryError
from lottery.pruning import controls
from lottery.results import paths
from lottery.results.identity import _NOT_HASHED, legacy, method, read_identity
from lottery.results.metrics import NETWORK_KEYS
from lottery.results.store import read_json

POINTER = "lottery_experiment.txt"  # written into each Hydra multirun job directory
METRICS = ("test_accuracy", "test_accuracy_early_stop", "early_stop_iteration", "lmc_barrier", "lmc_levels_barrier")


def experiment_dirs(root: str) -> List[str]:
    """Experiment directories below ``root``: those with a config.yaml and replicate_* dirs, and
    those named by the pointer files a Hydra sweep leaves in its job directories."""
    found = set()
    for config_file in glob.glob(os.path.join(root, "**", "config.yaml"), recursive=True):
        directory = os.path.dirname(config_file)
        if paths.replicates(directory):
            found.add(os.path.abspath(directory))
    for pointer in glob.glob(os.path.join(root, "**", POINTER), recursive=True):
        with open(pointer) as f:
            found.add(os.path.abspath(f.read().strip()))
    return sorted(found)


def _flatten(tree, prefix=""):
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return flat


def _rows(directory: str, config: dict):
    kinds, label = controls.kinds(), method(config)[0]
    for replicate, level, _, network in paths.networks(directory, kinds):
        metrics_file = paths.metrics_file(network)
        m = read_json(metrics_file, NETWORK_KEYS)
        if m["kind"] not in kinds:
            raise LotteryError(f"{metrics_file}: kind {m['kind']!r} is not one of {', '.join(kinds)}; it is corrupt")
        lmc_file = paths.metrics_file(paths.lmc_dir(directory, replicate, level))
        barrier = levels_barrier = np.nan
        if m["kind"] == "ticket" and os.path.exists(lmc_file):
            barrier = read_json(lmc_file, ("barrier",))["barrier"]
        levels_file = paths.metrics_file(paths.lmc_levels_dir(directory, replicate, level))
        if m["kind"] == "ticket" and os.path.exists(levels_file):  # from level L-1's solution (lmc.between_levels)
            levels_barrier = read_json(levels_file, ("barrier",))["barrier"]
        early = m.get("early_stop") or {}
        group = m.get("group_size")  # networks trained together, one after another (absent before it was recorded)
        yield {
            "experiment": config["name"],
            "hash": os.path.basename(directory).rsplit("-", 1)[-1],
            "directory": directory,
            "method": label,
            "replicate": m["replicate"],
            "level": m["level"],
            "kind": m["kind"],
            "percent_remaining": 100 * m["density"],
            "remaining": m["remaining"],
            "test_accuracy": m["final"]["test_accuracy"],
            "test_accuracy_early_stop": early.get("test_accuracy", np.nan),
            "early_stop_iteration": early.get("step", np.nan),
            "lmc_barrier": barrier,
            "lmc_levels_barrier": levels_barrier,
            "start_step": m["start_step"],
            "wall_time_s": m.get("wall_time_s", np.nan),
            "train_time_s": m["wall_time_s"] / group if group and "wall_time_s" in m else np.nan,
            "cost_steps": cost(m),
        }


def cost(metrics: dict) -> float:
    """The training steps behind a network (metrics.json's ``cost_steps``: the field's equal-budget
    axis); a dense network's is its own length, also where older results did not record it."""
    if metrics.get("cost_steps") is not None:
        return float(metrics["cost_steps"])
    return float(metrics["final"]["step"]) if metrics["level"] == 0 else np.nan


def _identity_keys(flat: dict) -> dict:
    """The config values that are part of an experiment's identity (an older config.yaml also held
    levels, replicates, where data lived, ...: those are not what an experiment is)."""
    return {
        key: value
        for key, value in flat.items()
        if not legacy(key)  # keys an older version had (parallel)
        and not any(key == dropped or key.startswith(dropped + ".") for dropped in _NOT_HASHED if dropped != "name")
    }


def load_runs(root: str) -> pd.DataFrame:
    """One tidy DataFrame of every trained network of every experiment below ``root``. A result
    file that cannot be read, or parses to something that is not a result, raises a LotteryError
    naming it (never skipped)."""
    frames, configs = [], []
    for directory in experiment_dirs(root):
        config = read_identity(directory)
        rows = list(_rows(directory, config))
        if rows:
            frames.append(pd.DataFrame(rows))
            configs.append(_identity_keys(_flatten(config)))
    if not frames:
        raise FileNotFoundError(f"no lottery experiments with results below {root}")
    keys = sorted({k for c in configs for k in c})
    differing = [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1 and k not in ("name",)]
    for frame, config in zip(frames, configs):
        for key in differing:
            frame[key] = [config.get(key)] * len(frame)
    df = pd.concat(frames, ignore_index=True)
    return df.sort_values(["experiment", "hash", "level", "kind", "replicate"], ignore_index=True)


def summarize(df: pd.DataFrame, by: Optional[List[str]] = None) -> pd.DataFrame:
    """Mean and std over replicates of each metric, per experiment (with its method), kind and level."""
    by = by or ["experiment", "hash", *["method"] * ("method" in df), "kind", "level"]
    grouped = df.groupby(by, sort=True)
    table = grouped["percent_remaining"].mean().to_frame()
    for metric in METRICS:
        table[metric] = grouped[metric].mean()
        table[f"{metric}_std"] = grouped[metric].std(ddof=0)
        table[f"{metric}_n"] = grouped[metric].count()  # replicates that have it (LMC: only where measured)
    table["wall_time_s"] = grouped["wall_time_s"].mean()  # of the group each network was trained in
    table["train_time_s"] = grouped["train_time_s"].mean()  # per network: its group's time / its size
    table["cost_steps"] = grouped["cost_steps"].mean()  # training steps behind each network
    table["replicates"] = grouped["replicate"].nunique()
    table = table.reset_index()
    if "kind" in by:  # level by level, the ticket before its controls
        rank = table["kind"].map({kind: i for i, kind in enumerate(controls.kinds())})
        table = table.assign(_rank=rank).sort_values([c for c in by if c != "kind"] + ["_rank"]).drop(columns="_rank")
    return table.reset_index(drop=True)


STANDARD_COLUMNS = {
    "experiment",
    "hash",
    "directory",
    "method",
    "replicate",
    "level",
    "kind",
    "percent_remaining",
    "remaining",
    "start_step",
    "wall_time_s",
    "train_time_s",
    "cost_steps",
    *METRICS,
}


def diet(directory: str) -> dict:
    """What an experiment's data diet chose (lottery/imp/diet.py): its ``diet.json`` record (``subset``
    easy or hard, ``examples`` kept, ``classes``, ``mean_score``, ...) with ``indices`` (of the
    training examples pre-trained on, ascending), ``scores`` (every example's, None for random scores
    or a file no longer there) and ``scores_file`` (where they were, relative to the output_dir)."""
    record_file = os.path.join(directory, paths.DIET_RECORD)
    if not os.path.isfile(record_file):
        raise LotteryError(
            f"{directory}: has no {paths.DIET_RECORD} (not an experiment with a data diet, or its level 0 "
            "is not trained yet)"
        )
    record = read_json(record_file, ("subset", "examples", "scores"))

    def array(path):
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise LotteryError(
                f"{path}: cannot be read as a NumPy .npy array ({type(error).__name__}); delete "
                f"{paths.DIET_RECORD} beside it and run the experiment again to write it"
            ) from None

    subset = array(os.path.join(directory, paths.DIET_SUBSET))
    scores = None
    if record["scores"] is not None:
        path = os.path.join(os.path.dirname(os.path.abspath(directory)), record["scores"])
        scores = array(path) if os.path.isfile(path) else None
    return {**record, "indices": subset, "scores": scores, "scores_file": record["scores"]}
