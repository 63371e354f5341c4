"""Results as a pandas DataFrame, and the standard figures of the field.

    df = load_runs("runs")                 # every experiment below a directory (or a sweep dir)
    plot_accuracy_vs_sparsity(df)          # test accuracy vs % weights remaining, mean ± std
    plot_early_stopping(df)                # early-stop iteration vs % weights remaining
    plot_instability(df, x="rewind")       # LMC error barrier vs a swept config value

One row per trained network: experiment (name, hash, directory), replicate, level, kind (ticket or
a control), % weights remaining, test accuracy (final and at early stop), early-stop iteration,
LMC barrier, and the config values that differ between the experiments loaded, as columns named
by their dotted keys (``pruning.rate``, ``rewind``).
"""

import glob
import json
import os
from typing import List, Optional

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

KINDS = ("ticket", "random_reinit", "random_prune")
POINTER = "lottery_experiment.txt"  # written into each Hydra multirun job directory
METRICS = ("test_accuracy", "test_accuracy_early_stop", "early_stop_iteration", "lmc_barrier")


def experiment_dirs(root: str) -> List[str]:
    """Experiment directories below ``root``: those with a config.yaml and replicate_* dirs, and
    those named by the pointer files a Hydra sweep leaves in its job directories."""
    found = set()
    for config_file in glob.glob(os.path.join(root, "**", "config.yaml"), recursive=True):
        directory = os.path.dirname(config_file)
        if glob.glob(os.path.join(directory, "replicate_*")):
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
    for metrics_file in sorted(glob.glob(os.path.join(directory, "replicate_*", "level_*", "**", "metrics.json"), recursive=True)):
        with open(metrics_file) as f:
            m = json.load(f)
        if "kind" not in m or m.get("kind") not in KINDS:
            continue  # LMC results are read with their ticket
        lmc_file = os.path.join(os.path.dirname(metrics_file), "lmc", "metrics.json")
        barrier = np.nan
        if m["kind"] == "ticket" and os.path.exists(lmc_file):
            with open(lmc_file) as f:
                barrier = json.load(f)["barrier"]
        early = m.get("early_stop") or {}
        yield {
            "experiment": config["name"], "hash": os.path.basename(directory).rsplit("-", 1)[-1], "directory": directory,
            "replicate": m["replicate"], "level": m["level"], "kind": m["kind"],
            "percent_remaining": 100 * m["density"], "remaining": m["remaining"],
            "test_accuracy": m["final"]["test_accuracy"],
            "test_accuracy_early_stop": early.get("test_accuracy", np.nan),
            "early_stop_iteration": early.get("step", np.nan),
            "lmc_barrier": barrier, "start_step": m["start_step"], "wall_time_s": m.get("wall_time_s", np.nan),
        }


def load_runs(root: str) -> pd.DataFrame:
    """One tidy DataFrame of every trained network of every experiment below ``root``."""
    frames, configs = [], []
    for directory in experiment_dirs(root):
        config = OmegaConf.to_container(OmegaConf.load(os.path.join(directory, "config.yaml")))
        rows = list(_rows(directory, config))
        if rows:
            frames.append(pd.DataFrame(rows))
            configs.append(_flatten(config))
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
    """Mean and std over replicates of each metric, per experiment, kind and level."""
    by = by or ["experiment", "hash", "kind", "level"]
    grouped = df.groupby(by, sort=True)
    table = grouped["percent_remaining"].mean().to_frame()
    for metric in METRICS:
        table[metric] = grouped[metric].mean()
        table[f"{metric}_std"] = grouped[metric].std(ddof=0)
    table["wall_time_s"] = grouped["wall_time_s"].mean()  # training time (vmap: shared by a level's networks)
    table["replicates"] = grouped["replicate"].nunique()
    table = table.reset_index()
    if "kind" in by:  # level by level, the ticket before its controls
        rank = table["kind"].map({kind: i for i, kind in enumerate(KINDS)})
        table = table.assign(_rank=rank).sort_values([c for c in by if c != "kind"] + ["_rank"]).drop(columns="_rank")
    return table.reset_index(drop=True)


STANDARD_COLUMNS = {"experiment", "hash", "directory", "replicate", "level", "kind", "percent_remaining", "remaining",
                    "start_step", "wall_time_s", *METRICS}


def _label(row, by: str, df: pd.DataFrame) -> str:
    """A line's legend: the kind, or the experiment with its differing config values."""
    if by != "experiment":
        return str(row[by])
    config = [c for c in df.columns if c not in STANDARD_COLUMNS]
    extra = ", ".join(f"{c}={row[c]}" for c in config)
    return f"{row['experiment']}-{row['hash']}" + (f" ({extra})" if extra else "")


def _lines(df, y, by, ax, scale=100.0):
    """One line per group: mean over replicates at each level, shaded ± std (population std, as
    in ``summarize``)."""
    keys = ["experiment", "hash"] if by == "experiment" else [by]
    order = {kind: i for i, kind in enumerate(KINDS)}
    groups = sorted(df.groupby(keys, sort=True), key=lambda item: order.get(item[0][0], -1) if by == "kind" else 0)
    for _, group in groups:
        stats = group.groupby("level").agg(x=("percent_remaining", "mean"), mean=(y, "mean"),
                                           std=(y, lambda v: v.std(ddof=0))).dropna(subset=["mean"])
        if stats.empty:
            continue
        std = stats["std"].fillna(0) * scale
        label = _label(group.iloc[0], by, df)
        line, = ax.plot(stats["x"], stats["mean"] * scale, marker="o", markersize=3, label=label)
        ax.fill_between(stats["x"], stats["mean"] * scale - std, stats["mean"] * scale + std, color=line.get_color(), alpha=0.2)


def _sparsity_axis(ax, df):
    ax.set_xscale("log")
    ax.set_xlim(df["percent_remaining"].max() * 1.15, df["percent_remaining"].min() / 1.15)  # decreasing to the right
    ticks = sorted(df["percent_remaining"].unique(), reverse=True)
    ticks = ticks[:: max(1, len(ticks) // 8)]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:.3g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("% weights remaining")
    ax.grid(alpha=0.3)


def _legend(ax, df):
    replicates = df.groupby(["experiment", "hash"])["replicate"].nunique().max()
    ax.legend(fontsize="small", title=f"mean ± std over {replicates} replicates" if replicates > 1 else None,
              title_fontsize="small")


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6, 4))
    return ax


def plot_accuracy_vs_sparsity(df: pd.DataFrame, by: str = "kind", metric: str = "auto", ax=None):
    """Test accuracy vs % weights remaining (log scale, decreasing to the right), mean ± std over
    replicates, one line per kind or per experiment (``by="experiment"``). ``metric``: accuracy at
    the early-stopping iteration where there is a validation set (``auto``), or ``test_accuracy``."""
    ax = _axes(ax)
    if metric == "auto":
        metric = "test_accuracy_early_stop" if df["test_accuracy_early_stop"].notna().any() else "test_accuracy"
    _lines(df, metric, by, ax)
    _sparsity_axis(ax, df)
    ax.set_ylabel("test accuracy (%)" + (" at early stop" if metric.endswith("early_stop") else ""))
    _legend(ax, df)
    ax.figure.tight_layout()
    return ax


def plot_early_stopping(df: pd.DataFrame, by: str = "kind", ax=None):
    """Early-stopping iteration (minimum validation loss) vs % weights remaining."""
    ax = _axes(ax)
    _lines(df, "early_stop_iteration", by, ax, scale=1.0)
    _sparsity_axis(ax, df)
    ax.set_ylabel("early-stop iteration")
    _legend(ax, df)
    ax.figure.tight_layout()
    return ax


def plot_instability(df: pd.DataFrame, x: str = "rewind", ax=None):
    """LMC error barrier of the tickets vs a swept config value (e.g. the rewind step), per level."""
    ax = _axes(ax)
    tickets = df[(df["kind"] == "ticket") & df["lmc_barrier"].notna()]
    for level, group in tickets.groupby("level"):
        stats = group.groupby(x)["lmc_barrier"].agg(["mean", "std"]).reset_index()
        percent = group["percent_remaining"].mean()
        ax.errorbar(stats[x].astype(str), 100 * stats["mean"], yerr=100 * stats["std"].fillna(0), marker="o",
                    capsize=3, label=f"level {level} ({percent:.3g}% remaining)")
    ax.set_xlabel(x)
    ax.set_ylabel("error barrier (%)")
    ax.legend(fontsize="small")
    ax.figure.tight_layout()
    return ax


def save_figures(df: pd.DataFrame, output: str) -> List[str]:
    """Write accuracy_vs_sparsity.png (and early_stopping.png where there is validation) of
    ``df`` (``load_runs``) to the directory ``output``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = "experiment" if df[["experiment", "hash"]].drop_duplicates().shape[0] > 1 else "kind"
    plots = {"accuracy_vs_sparsity.png": plot_accuracy_vs_sparsity}
    if df["early_stop_iteration"].notna().any():
        plots["early_stopping.png"] = plot_early_stopping
    files = []
    for name, plot in plots.items():
        ax = plot(df, by=by)
        files.append(os.path.join(output, name))
        ax.figure.savefig(files[-1], dpi=120)
        plt.close(ax.figure)
    return files
