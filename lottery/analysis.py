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
import os
from typing import List, Optional

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from lottery.checkpoint import NETWORK_KEYS, read_json
from lottery.config import CONTROLS
from lottery.errors import LotteryError

KINDS = ("ticket", *CONTROLS)
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
        relative = metrics_file[len(directory):]
        if os.sep + "lmc" + os.sep in relative:
            continue  # LMC results are read with their ticket
        if ".partial" in relative:
            continue  # an interrupted attempt, never finished (it is redone by the next run)
        m = read_json(metrics_file, NETWORK_KEYS)
        if m["kind"] not in KINDS:
            raise LotteryError(f"{metrics_file}: kind {m['kind']!r} is not one of {', '.join(KINDS)}; it is corrupt")
        lmc_file = os.path.join(os.path.dirname(metrics_file), "lmc", "metrics.json")
        barrier = np.nan
        if m["kind"] == "ticket" and os.path.exists(lmc_file):
            barrier = read_json(lmc_file, ("barrier",))["barrier"]
        early = m.get("early_stop") or {}
        group = m.get("group_size")  # networks trained together, one after another (absent before it was recorded)
        yield {
            "experiment": config["name"], "hash": os.path.basename(directory).rsplit("-", 1)[-1], "directory": directory,
            "replicate": m["replicate"], "level": m["level"], "kind": m["kind"],
            "percent_remaining": 100 * m["density"], "remaining": m["remaining"],
            "test_accuracy": m["final"]["test_accuracy"],
            "test_accuracy_early_stop": early.get("test_accuracy", np.nan),
            "early_stop_iteration": early.get("step", np.nan),
            "lmc_barrier": barrier, "start_step": m["start_step"], "wall_time_s": m.get("wall_time_s", np.nan),
            "train_time_s": m["wall_time_s"] / group if group and "wall_time_s" in m else np.nan,
        }


def _identity_keys(flat: dict) -> dict:
    """The config values that are part of an experiment's identity (an older config.yaml also held
    levels, replicates, where data lived, ...: those are not what an experiment is)."""
    from lottery.config import _NOT_HASHED, legacy

    return {key: value for key, value in flat.items() if not legacy(key)  # keys an older version had (parallel)
            and not any(key == dropped or key.startswith(dropped + ".") for dropped in _NOT_HASHED if dropped != "name")}


def _read_config(directory: str) -> dict:
    from lottery.record import read_identity

    return read_identity(directory)


def load_runs(root: str) -> pd.DataFrame:
    """One tidy DataFrame of every trained network of every experiment below ``root``. A result
    file that cannot be read, or parses to something that is not a result, raises a LotteryError
    naming it (never skipped)."""
    frames, configs = [], []
    for directory in experiment_dirs(root):
        config = _read_config(directory)
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
    """Mean and std over replicates of each metric, per experiment, kind and level."""
    by = by or ["experiment", "hash", "kind", "level"]
    grouped = df.groupby(by, sort=True)
    table = grouped["percent_remaining"].mean().to_frame()
    for metric in METRICS:
        table[metric] = grouped[metric].mean()
        table[f"{metric}_std"] = grouped[metric].std(ddof=0)
        table[f"{metric}_n"] = grouped[metric].count()  # replicates that have it (LMC: only where measured)
    table["wall_time_s"] = grouped["wall_time_s"].mean()  # of the group each network was trained in
    table["train_time_s"] = grouped["train_time_s"].mean()  # per network: its group's time / its size
    table["replicates"] = grouped["replicate"].nunique()
    table = table.reset_index()
    if "kind" in by:  # level by level, the ticket before its controls
        rank = table["kind"].map({kind: i for i, kind in enumerate(KINDS)})
        table = table.assign(_rank=rank).sort_values([c for c in by if c != "kind"] + ["_rank"]).drop(columns="_rank")
    return table.reset_index(drop=True)


STANDARD_COLUMNS = {"experiment", "hash", "directory", "replicate", "level", "kind", "percent_remaining", "remaining",
                    "start_step", "wall_time_s", "train_time_s", *METRICS}


def _label(row, by: str, df: pd.DataFrame) -> str:
    """A line's legend: the kind, or what sets the experiment apart: the identity values that differ
    between the experiments drawn (``pruning.rate=0.5, rewind=100it``), else its name and hash."""
    if by != "experiment":
        return str(row[by])
    config = [c for c in df.columns if c not in STANDARD_COLUMNS]
    shown = lambda value: str(value)[:19] if str(value).startswith("sha256:") else value  # data fingerprints
    extra = ", ".join(f"{c}={shown(row[c])}" for c in config)
    return extra or f"{row['experiment']}-{row['hash']}"


def _lines(df, y, by, ax, scale=100.0):
    """One line per group: mean over replicates at each level, shaded ± std (population std, as
    in ``summarize``)."""
    # By experiment, each experiment's kinds still get their own lines: a ticket is never averaged
    # with its controls.
    kinds = df["kind"].nunique() > 1
    keys = ["experiment", "hash"] + ["kind"] * kinds if by == "experiment" else [by]
    order = {kind: i for i, kind in enumerate(KINDS)}
    if by == "experiment":  # the ticket first, then its controls, experiment by experiment
        rank = lambda item: (item[0][0], item[0][1], order.get(item[0][2], -1) if kinds else 0)
    else:
        rank = lambda item: order.get(item[0][0], -1) if by == "kind" else 0
    groups = sorted(df.groupby(keys, sort=True), key=rank)
    experiments = {key: i for i, key in enumerate(sorted({(g["experiment"].iloc[0], g["hash"].iloc[0]) for _, g in groups}))}
    styles = ("-", "--", ":")  # by experiment: one colour per experiment, one line style per kind
    for _, group in groups:
        stats = group.groupby("level").agg(x=("percent_remaining", "mean"), mean=(y, "mean"),
                                           std=(y, lambda v: v.std(ddof=0))).dropna(subset=["mean"])
        if stats.empty:
            continue
        std = stats["std"].fillna(0) * scale
        label = _label(group.iloc[0], by, df) + (f", {group.iloc[0]['kind']}" if by == "experiment" and kinds else "")
        style = {}
        if by == "experiment":
            first = group.iloc[0]
            style = dict(color=f"C{experiments[(first['experiment'], first['hash'])] % 10}",
                         linestyle=styles[order.get(first["kind"], 0) % len(styles)])
        line, = ax.plot(stats["x"], stats["mean"] * scale, marker="o", markersize=3, label=label, **style)
        ax.fill_between(stats["x"], stats["mean"] * scale - std, stats["mean"] * scale + std, color=line.get_color(), alpha=0.2)


def _sparsity_ticks(high: float, low: float) -> List[float]:
    """Ticks for % remaining in [low, high]: 100, 50, 20, 10, 5, ... (evenly spaced on the log axis),
    thinned to powers of ten, then every other one, so that at most 7 labels share the axis."""
    candidates = [m * 10.0**e for e in range(2, -10, -1) for m in (5, 2, 1)]
    ticks = [t for t in candidates if low / 1.15 <= t <= min(high * 1.15, 100)]
    if len(ticks) > 7:
        ticks = [t for t in ticks if np.isclose(np.log10(t), round(np.log10(t)))]
    while len(ticks) > 7:
        ticks = ticks[::2]
    return ticks if len(ticks) >= 2 else [high, low] if high != low else [high]


def _tick_labels(ticks: List[float]) -> List[str]:
    """The shortest labels (3 significant digits or more) that tell every tick apart."""
    for digits in range(3, 10):
        labels = [f"{t:.{digits}g}" for t in ticks]
        if len(set(labels)) == len(labels):
            return labels
    return labels


def _sparsity_axis(ax, df):
    """Log-scale % remaining, decreasing to the right, with ticks that never run into each other."""
    high, low = df["percent_remaining"].max(), df["percent_remaining"].min()
    ax.set_xscale("log")
    ax.set_xlim(high * 1.15, low / 1.15)
    ticks = _sparsity_ticks(high, low)
    ax.set_xticks(ticks)
    ax.set_xticklabels(_tick_labels(ticks))
    ax.minorticks_off()
    ax.set_xlabel("% weights remaining")
    ax.grid(alpha=0.3)


def _legend(ax, df):
    """Inside the axes for a few short entries; beside them (outside) for more or longer ones, so
    that it never covers the lines."""
    replicates = df.groupby(["experiment", "hash"])["replicate"].nunique().max()
    handles, labels = ax.get_legend_handles_labels()
    title = f"mean ± std over {replicates} replicates" if replicates > 1 else None
    if len(labels) <= 3 and max(map(len, labels), default=0) <= 30:
        ax.legend(fontsize="small", title=title, title_fontsize="small")
    else:
        if getattr(ax.figure, "_lottery_owned", False):  # a figure of ours: the axes keep their width
            ax.figure.set_size_inches(9, 4)  # beside the legend (a caller's figure keeps its size)
        ax.legend(fontsize="small", title=title, title_fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1),
                  borderaxespad=0)


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        figure, ax = plt.subplots(figsize=(6, 4), layout="constrained")  # room for a legend beside the axes
        figure._lottery_owned = True  # made here: _legend may widen it
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
    return ax


def plot_early_stopping(df: pd.DataFrame, by: str = "kind", ax=None):
    """Early-stopping iteration (minimum validation loss) vs % weights remaining."""
    ax = _axes(ax)
    _lines(df, "early_stop_iteration", by, ax, scale=1.0)
    _sparsity_axis(ax, df)
    ax.set_ylabel("early-stop iteration")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # iterations are whole numbers
    _legend(ax, df)
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
    return ax


def save_figures(df: pd.DataFrame, output: str) -> List[str]:
    """Write accuracy_vs_sparsity.png (and early_stopping.png where there is validation) of
    ``df`` (``load_runs``) and each experiment's layer_density.png (its tickets' % of each layer
    remaining; ``layer_density_<name>-<hash>.png`` where there are several) to the directory
    ``output``; returns the files written."""
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
        ax.figure.savefig(files[-1], dpi=120, bbox_inches="tight")
        plt.close(ax.figure)
    from lottery import tickets

    densities = tickets.layer_densities(df)
    experiments = densities[densities.kind == "ticket"][["experiment", "hash"]].drop_duplicates().values.tolist()
    for name, digest in experiments:  # the per-layer density figure, one per experiment
        ax = tickets.plot_layer_densities(densities[(densities.experiment == name) & (densities.hash == digest)])
        (directory,) = df[(df.experiment == name) & (df.hash == digest)]["directory"].unique()[:1]
        ax.set_title(f"{os.path.basename(directory)}: weights remaining per layer (tickets)")
        files.append(os.path.join(output, "layer_density.png" if len(experiments) == 1 else
                                  f"layer_density_{os.path.basename(directory)}.png"))
        ax.figure.savefig(files[-1], dpi=120, bbox_inches="tight")
        plt.close(ax.figure)
    return files
