"""The tables the command line prints: results per level and kind, and how alike tickets are."""

import sys

import numpy as np
from rich.console import Console
from rich.table import Table

from lottery.pruning import controls


def results(
    summary, title: str = "lottery results (mean ± std over replicates)", experiment_column: bool = True
) -> Table:
    """One row per (experiment,) level and kind of ``analysis.summarize``; the LMC and replicate
    columns only where they say something."""
    show_lmc = bool(summary["lmc_barrier"].notna().any())
    show_levels = "lmc_levels_barrier" in summary and bool(summary["lmc_levels_barrier"].notna().any())
    show_replicates = bool((summary["replicates"] > 1).any())
    show_cost = "cost_steps" in summary and bool(summary["cost_steps"].notna().any())
    show_method = experiment_column and "method" in summary
    columns = (
        ["experiment"] * experiment_column
        + ["method"] * show_method
        + ["level", "kind", "% weights remaining", "test acc (final)", "test acc (early stop)", "early-stop it"]
        + ["LMC barrier"] * show_lmc
        + ["barrier from level L-1"] * show_levels
        + ["train time / network (s)"]
        + ["training cost (steps)"] * show_cost
        + ["replicates"] * show_replicates
    )
    out = Table(title=title)
    for column in columns:  # an experiment's name is what tells it apart: folded where too narrow, never cut
        out.add_column(
            column,
            justify="left" if column in ("experiment", "method", "kind") else "right",
            overflow="fold" if column == "experiment" else "ellipsis",
        )

    def cell(row, metric, scale=100.0, digits=2):
        """mean ± std over the replicates that have the value, and how many where not all do."""
        mean, std, n = row[metric], row[f"{metric}_std"], row.get(f"{metric}_n", row["replicates"])
        if np.isnan(mean):
            return "-"
        text = f"{scale * mean:.{digits}f}" + (f" ± {scale * std:.{digits}f}" if n > 1 else "")
        return text + (f" (n={n})" if n < row["replicates"] else "")

    for _, row in summary.iterrows():
        cells = [f"{row['experiment']}-{row['hash']}"] * experiment_column + [row.get("method")] * show_method
        cells += [
            str(row["level"]),
            row["kind"],
            f"{row['percent_remaining']:.2f}",
            cell(row, "test_accuracy"),
            cell(row, "test_accuracy_early_stop"),
            cell(row, "early_stop_iteration", 1, 0),
        ]
        cells += (
            [cell(row, "lmc_barrier")] * show_lmc
            + [cell(row, "lmc_levels_barrier")] * show_levels
            + ["-" if np.isnan(row["train_time_s"]) else f"{row['train_time_s']:.1f}"]
        )
        cells += ["-" if np.isnan(row["cost_steps"]) else f"{row['cost_steps']:,.0f}"] * show_cost
        cells += [str(row["replicates"])] * show_replicates
        out.add_row(*cells)
    return out


def method(cfg) -> str:
    """What an experiment's pruned levels are, for its table's title: IMP (its structure, SWAMP),
    pruning before training (``pruning.prune_at=start``: one training per level, no iteration), sparse
    training from scratch, or a transfer of tickets."""
    pruning = cfg["pruning"]
    if pruning.get("prune_at", "trained") == "start":
        rounds = pruning.get("rounds", 1)
        return f"pruning before training ({pruning.get('criterion', 'magnitude')}" + (
            f", {rounds} rounds)" if rounds > 1 else ")"
        )
    if (cfg.get("transfer") or {}).get("source"):
        return "ticket transfer"
    sparsity = cfg.get("sparsity") or {}
    if sparsity.get("method", "imp") != "imp":  # sparse training from scratch (pruning/sparse.py)
        name = {"static": "static sparse", "gmp": "GMP", "set": "SET", "rigl": "RigL"}.get(
            sparsity["method"], sparsity["method"]
        )
        return f"{name} training ({sparsity.get('distribution', 'imp')} layer densities)"
    structure = pruning.get("structure", "weights")
    swamp = (cfg.get("swamp") or {}).get("particles", 1)
    return (
        "IMP" + (f" ({structure})" if structure != "weights" else "") + (f" with SWAMP x{swamp}" if swamp > 1 else "")
    )


def similarity(summary) -> Table:
    """One row per comparison, experiment, level and pair of kinds of
    ``tickets.summarize_similarity``: the masks' overlap and the start weights' sign agreement,
    each beside what chance gives."""
    out = Table(title="ticket masks: overlap (Jaccard) and sign agreement, mean over pairs, against chance")
    for column in (
        "experiment",
        "comparison",
        "level",
        "kinds",
        "% weights remaining",
        "Jaccard",
        "chance",
        "above chance",
        "sign agreement",
        "chance",
        "pairs",
    ):
        out.add_column(column, justify="left" if column in ("experiment", "comparison", "kinds") else "right")
    for _, row in summary.iterrows():
        kinds = row["kind_a"] if row["kind_a"] == row["kind_b"] else f"{row['kind_a']} vs {row['kind_b']}"
        experiment = f"{row['experiment_a']}-{row['hash_a']}"
        if (row["experiment_b"], row["hash_b"]) != (row["experiment_a"], row["hash_a"]):
            experiment += f" vs {row['experiment_b']}-{row['hash_b']}"
        level = str(row["level_a"]) if row["level_a"] == row["level_b"] else f"{row['level_a']} vs {row['level_b']}"
        # the same start weights by construction: sign agreement says nothing
        same_start = row["comparison"] == "levels" or (
            row["comparison"] == "kinds"
            and row["kind_b"] in controls.CONTROLS
            and controls.CONTROLS[row["kind_b"]].same_start
        )
        signs = ("same start", "") if same_start else (f"{row['sign_agreement']:.3f}", f"{row['sign_chance']:.3f}")
        density = f"{100 * row['density_a']:.2f}"  # two experiments' tickets at one level may differ (pruning.rate)
        if f"{100 * row['density_b']:.2f}" != density:
            density += f" vs {100 * row['density_b']:.2f}"
        out.add_row(
            experiment,
            row["comparison"],
            level,
            kinds,
            density,
            *(f"{row[m]:.3f}" for m in ("jaccard", "jaccard_chance", "jaccard_above_chance")),
            *signs,
            str(row["pairs"]),
        )
    return out


def console() -> Console:
    """The terminal's console; logs and pipes get a wide table (experiment, method and the
    metrics on one line) rather than rich's 80 columns."""
    return Console() if sys.stdout.isatty() else Console(width=220)
