"""The standard figures of the field, from ``runs.load_runs``.

plot_accuracy_vs_sparsity(df)          # test accuracy vs % weights remaining, mean ± std
plot_accuracy_vs_cost(df)              # test accuracy vs the training steps behind each network
plot_early_stopping(df)                # early-stop iteration vs % weights remaining
plot_instability(df, x="rewind")       # LMC error barrier vs a swept config value
plot_layer_densities(densities)        # % of each layer's weights remaining (tickets.layer_densities)
save_figures(df, directory)            # all of them, as PNGs
"""

import atexit
import importlib
import os
import sys
import textwrap
import threading
from typing import List

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from lottery.analysis.runs import STANDARD_COLUMNS
from lottery.pruning import controls


def _label(row, by: str, df: pd.DataFrame) -> str:
    """A line's legend: the kind, or what sets the experiment apart: its name where every experiment
    drawn has its own (a script's ``name=easy``), else the identity values that differ between them
    (``pruning.rate=0.5, rewind=100it``; a key an experiment does not hash is left out), else its
    name and hash."""
    if by != "experiment":
        return str(row[by])
    names = df.groupby("hash")["experiment"].first()
    if len(names) > 1 and names.nunique() == len(names):
        return str(row["experiment"])
    config = [c for c in df.columns if c not in STANDARD_COLUMNS]
    shown = lambda value: str(value)[:19] if str(value).startswith("sha256:") else value  # data fingerprints
    absent = lambda value: value is None or (isinstance(value, float) and np.isnan(value))
    extra = ", ".join(f"{c}={shown(row[c])}" for c in config if not absent(row[c]))
    return extra or f"{row['experiment']}-{row['hash']}"


def _lines(df, y, by, ax, scale=100.0, x="percent_remaining"):
    """One line per group: mean over replicates at each level, shaded ± std (population std, as
    in ``summarize``)."""
    # By experiment, each experiment's kinds still get their own lines: a ticket is never averaged
    # with its controls.
    kinds = df["kind"].nunique() > 1
    keys = ["experiment", "hash"] + ["kind"] * kinds if by == "experiment" else [by]
    order = {kind: i for i, kind in enumerate(controls.kinds())}
    if by == "experiment":  # the ticket first, then its controls, experiment by experiment
        rank = lambda item: (item[0][0], item[0][1], order.get(item[0][2], -1) if kinds else 0)
    else:
        rank = lambda item: order.get(item[0][0], -1) if by == "kind" else 0
    groups = sorted(df.groupby(keys, sort=True), key=rank)
    experiments = {
        key: i for i, key in enumerate(sorted({(g["experiment"].iloc[0], g["hash"].iloc[0]) for _, g in groups}))
    }
    styles = ("-", "--", ":")  # by experiment: one colour per experiment, one line style per kind
    for _, group in groups:
        stats = (
            group.groupby("level")
            .agg(x=(x, "mean"), mean=(y, "mean"), std=(y, lambda v: v.std(ddof=0)))
            .dropna(subset=["mean"])
        )
        if stats.empty:
            continue
        std = stats["std"].fillna(0) * scale
        label = _label(group.iloc[0], by, df) + (f", {group.iloc[0]['kind']}" if by == "experiment" and kinds else "")
        style = {}
        if by == "experiment":
            first = group.iloc[0]
            style = dict(
                color=f"C{experiments[(first['experiment'], first['hash'])] % 10}",
                linestyle=styles[order.get(first["kind"], 0) % len(styles)],
            )
        (line,) = ax.plot(stats["x"], stats["mean"] * scale, marker="o", markersize=3, label=label, **style)
        ax.fill_between(
            stats["x"], stats["mean"] * scale - std, stats["mean"] * scale + std, color=line.get_color(), alpha=0.2
        )


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
        wrapped = [textwrap.fill(label, 60, break_long_words=False) for label in labels]  # many differing keys
        legend = ax.legend(
            handles,
            wrapped,
            fontsize="small",
            title=title,
            title_fontsize="small",
            loc="upper left",
            bbox_to_anchor=(1.02, 1),
            borderaxespad=0,
        )
        figure = ax.figure
        if getattr(figure, "_lottery_owned", False):  # a figure of ours: the axes keep their width beside the
            box = legend.get_window_extent()  # legend, however long (a caller's figure keeps its size; a fixed
            # size let long entries squeeze the axes to nothing: "constrained_layout not applied")
            figure.set_size_inches(6 + box.width / figure.dpi + 0.3, max(4, box.height / figure.dpi + 0.6))


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


def plot_accuracy_vs_cost(df: pd.DataFrame, by: str = "kind", metric: str = "auto", ax=None):
    """Test accuracy vs the training steps behind each network (log scale): IMP's point at level L
    cost the dense training and L retrainings, a sparse-training or pruning-before-training point
    one training; the field's equal-budget comparison (Evci et al. 2020, Fig. 2)."""
    ax = _axes(ax)
    if metric == "auto":
        metric = "test_accuracy_early_stop" if df["test_accuracy_early_stop"].notna().any() else "test_accuracy"
    _lines(df[df["cost_steps"].notna()], metric, by, ax, x="cost_steps")
    ax.set_xscale("log")
    ax.set_xlabel("training cost (steps behind the network)")
    ax.set_ylabel("test accuracy (%)" + (" at early stop" if metric.endswith("early_stop") else ""))
    ax.grid(alpha=0.3)
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
        ax.errorbar(
            stats[x].astype(str),
            100 * stats["mean"],
            yerr=100 * stats["std"].fillna(0),
            marker="o",
            capsize=3,
            label=f"level {level} ({percent:.3g}% remaining)",
        )
    ax.set_xlabel(x)
    ax.set_ylabel("error barrier (%)")
    ax.legend(fontsize="small")
    return ax


_preloading: List[threading.Thread] = []


def _import_pyplot() -> None:
    try:
        importlib.import_module("matplotlib.pyplot")
    except Exception:  # e.g. an import deadlock between threads: save_figures imports it again itself
        pass


def preload() -> None:
    """Import pyplot (~0.4 s) in a thread beside training (imp/levels.py), for ``save_figures``."""
    if not _preloading and "matplotlib.pyplot" not in sys.modules:
        _preloading.append(threading.Thread(target=_import_pyplot, daemon=True))
        _preloading[0].start()
        atexit.register(_preloading[0].join)  # never stopped half-imported at exit


def save_figures(df: pd.DataFrame, output: str) -> List[str]:
    """Write accuracy_vs_sparsity.png, accuracy_vs_cost.png (and early_stopping.png where there is validation) of
    ``df`` (``load_runs``) and each experiment's layer_density.png (its tickets' % of each layer
    remaining; ``layer_density_<name>-<hash>.png`` where there are several) to the directory
    ``output``; returns the files written."""
    import matplotlib

    for thread in _preloading:  # pyplot imported whole before the backend is chosen
        thread.join()
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = "experiment" if df[["experiment", "hash"]].drop_duplicates().shape[0] > 1 else "kind"
    plots = {"accuracy_vs_sparsity.png": plot_accuracy_vs_sparsity}
    if df["early_stop_iteration"].notna().any():
        plots["early_stopping.png"] = plot_early_stopping
    if "cost_steps" in df and df.loc[df["level"] > 0, "cost_steps"].notna().any():
        plots["accuracy_vs_cost.png"] = plot_accuracy_vs_cost
    files = []
    for name, plot in plots.items():
        ax = plot(df, by=by)
        files.append(os.path.join(output, name))
        ax.figure.savefig(files[-1], dpi=120, bbox_inches="tight")
        plt.close(ax.figure)
    from lottery.analysis import tickets

    densities = tickets.layer_densities(df)
    experiments = densities[densities.kind == "ticket"][["experiment", "hash"]].drop_duplicates().values.tolist()
    for name, digest in experiments:  # the per-layer density figure, one per experiment
        ax = plot_layer_densities(densities[(densities.experiment == name) & (densities.hash == digest)])
        (directory,) = df[(df.experiment == name) & (df.hash == digest)]["directory"].unique()[:1]
        ax.set_title(f"{os.path.basename(directory)}: weights remaining per layer (tickets)")
        files.append(
            os.path.join(
                output,
                "layer_density.png" if len(experiments) == 1 else f"layer_density_{os.path.basename(directory)}.png",
            )
        )
        ax.figure.savefig(files[-1], dpi=120, bbox_inches="tight")
        plt.close(ax.figure)
    return files


def plot_layer_densities(densities: pd.DataFrame, ax=None, kind: str = "ticket"):
    """% of each layer's weights remaining against the network's % remaining (log scales, density
    falling to the right, as accuracy-vs-sparsity plots), mean over replicates; one experiment."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    rows = densities[densities.kind == kind]
    if rows[["experiment", "hash"]].drop_duplicates().shape[0] > 1:
        raise ValueError("plot_layer_densities: densities of several experiments; select one")
    for layer, group in rows.groupby("layer", sort=False):
        mean = group.groupby("level")[["percent_remaining", "density"]].mean()
        ax.plot(mean["percent_remaining"], 100 * mean["density"], marker="o", label=layer)
    _sparsity_axis(ax, rows)
    ax.set_xlabel("% of all weights remaining")
    ax.set_yscale("log")
    low = 100 * rows["density"][rows["density"] > 0].min() if (rows["density"] > 0).any() else 1.0
    ticks = list(_sparsity_ticks(100.0, low))
    ax.set_yticks(ticks)
    ax.set_yticklabels(_tick_labels(ticks))
    ax.yaxis.set_minor_locator(plt.NullLocator())
    ax.set_ylabel("% of the layer's weights remaining")
    ax.legend(title="layer", fontsize="small")
    return ax
