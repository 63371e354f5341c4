"""``python -m lottery.report RUNS_DIR``: the results table and figures of finished runs.

RUNS_DIR is any directory with experiments below it: ``runs/``, one experiment's directory, or a
Hydra sweep directory (``runs/multirun/<date>``). Prints mean ± std over replicates per
experiment, kind and level, how alike the tickets' masks are (across replicates, against their
controls, across experiments; lottery/tickets.py) and the layers pruning emptied, and writes
accuracy_vs_sparsity.png (and early_stopping.png) and layer_density.png there; ``--csv FILE``
also writes one row per trained network (replicate, level, kind, % remaining, accuracies,
early-stop iteration, LMC barrier), ``--similarity-csv FILE`` one row per pair of tickets and layer.
"""

import argparse
import os
import sys
import tempfile

import numpy as np
from rich.console import Console
from rich.table import Table

from lottery import analysis, tickets
from lottery.errors import LotteryError

REPORTED = ("replicates", "kinds", "experiments")  # the comparisons the report shows (levels: the API)
SAME_START = ("random_prune", "shuffle_layer", "invert", "sign_preserving_reinit")  # controls on the ticket's weights


def table(summary, title: str = "lottery results (mean ± std over replicates)", experiment_column: bool = True) -> Table:
    """One row per (experiment,) level and kind of ``analysis.summarize``; the LMC and replicate
    columns only where they say something."""
    show_lmc = bool(summary["lmc_barrier"].notna().any())
    show_replicates = bool((summary["replicates"] > 1).any())
    columns = ["experiment"] * experiment_column + ["level", "kind", "% weights remaining", "test acc (final)",
               "test acc (early stop)", "early-stop it"] + ["LMC barrier"] * show_lmc + ["train time / network (s)"] \
        + ["replicates"] * show_replicates
    out = Table(title=title)
    for column in columns:
        out.add_column(column, justify="left" if column in ("experiment", "kind") else "right")

    def cell(row, metric, scale=100.0, digits=2):
        """mean ± std over the replicates that have the value, and how many where not all do."""
        mean, std, n = row[metric], row[f"{metric}_std"], row.get(f"{metric}_n", row["replicates"])
        if np.isnan(mean):
            return "-"
        text = f"{scale * mean:.{digits}f}" + (f" ± {scale * std:.{digits}f}" if n > 1 else "")
        return text + (f" (n={n})" if n < row["replicates"] else "")

    for _, row in summary.iterrows():
        cells = [f"{row['experiment']}-{row['hash']}"] * experiment_column
        cells += [str(row["level"]), row["kind"], f"{row['percent_remaining']:.2f}", cell(row, "test_accuracy"),
                  cell(row, "test_accuracy_early_stop"), cell(row, "early_stop_iteration", 1, 0)]
        cells += [cell(row, "lmc_barrier")] * show_lmc + ["-" if np.isnan(row["train_time_s"]) else f"{row['train_time_s']:.1f}"] + [str(row["replicates"])] * show_replicates
        out.add_row(*cells)
    return out


def similarity(summary) -> Table:
    """One row per comparison, experiment, level and pair of kinds of
    ``tickets.summarize_similarity``: the masks' overlap and the start weights' sign agreement,
    each beside what chance gives."""
    out = Table(title="ticket masks: overlap (Jaccard) and sign agreement, mean over pairs, against chance")
    for column in ("experiment", "comparison", "level", "kinds", "% weights remaining", "Jaccard", "chance",
                   "above chance", "sign agreement", "chance", "pairs"):
        out.add_column(column, justify="left" if column in ("experiment", "comparison", "kinds") else "right")
    for _, row in summary.iterrows():
        kinds = row["kind_a"] if row["kind_a"] == row["kind_b"] else f"{row['kind_a']} vs {row['kind_b']}"
        experiment = f"{row['experiment_a']}-{row['hash_a']}"
        if (row["experiment_b"], row["hash_b"]) != (row["experiment_a"], row["hash_a"]):
            experiment += f" vs {row['experiment_b']}-{row['hash_b']}"
        level = str(row["level_a"]) if row["level_a"] == row["level_b"] else f"{row['level_a']} vs {row['level_b']}"
        # the same start weights by construction: sign agreement says nothing
        same_start = row["comparison"] == "levels" or (row["comparison"] == "kinds" and row["kind_b"] in SAME_START)
        signs = ("same start", "") if same_start else (f"{row['sign_agreement']:.3f}", f"{row['sign_chance']:.3f}")
        out.add_row(experiment, row["comparison"], level, kinds, f"{100 * row['density_a']:.2f}",
                    *(f"{row[m]:.3f}" for m in ("jaccard", "jaccard_chance", "jaccard_above_chance")), *signs,
                    str(row["pairs"]))
    return out


def console() -> Console:
    """The terminal's console; logs and pipes get a wide table rather than rich's 80 columns."""
    return Console() if sys.stdout.isatty() else Console(width=180)


def writable(directory: str) -> None:
    """Fail before printing anything if the figures cannot be written into ``directory``."""
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise LotteryError(f"{directory}: cannot write figures there ({error.strerror}); "
                           "choose another directory with --output DIR") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lottery.report", description=__doc__.splitlines()[0])
    parser.add_argument("root", help="directory with lottery experiments below it")
    parser.add_argument("--output", help="where to write the figures (default: ROOT)")
    parser.add_argument("--csv", help="also write every trained network's row (load_runs) to this CSV file")
    parser.add_argument("--similarity-csv", help="also write every compared pair of tickets, per layer, to this CSV file")
    parser.add_argument("--no-masks", action="store_true", help="leave out what needs the masks (similarity, collapse)")
    args = parser.parse_args(argv)
    output = args.output or args.root
    try:
        df = analysis.load_runs(args.root)
        writable(output)
    except (FileNotFoundError, LotteryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = console()
    out.print(table(analysis.summarize(df)))
    pairs = None
    if not args.no_masks:
        try:
            pairs = tickets.similarity_table(args.root, REPORTED if not args.similarity_csv else tickets.COMPARISONS)
            collapsed = tickets.collapsed(args.root)
        except LotteryError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        shown = pairs[pairs.comparison.isin(REPORTED)]
        if len(shown):
            out.print(similarity(tickets.summarize_similarity(shown)))
        for _, row in collapsed.iterrows():
            out.print(f"warning: {row['experiment']}-{row['hash']}, level {row['level']}, replicate {row['replicate']}, "
                      f"{row['kind']}: layer collapse: {tickets.describe_collapse([row])}")
    for figure in analysis.save_figures(df, output):
        out.print(f"wrote {figure}")
    for path, frame, option in ((args.csv, df.drop(columns=["directory"]), "--csv"),
                                (args.similarity_csv, pairs, "--similarity-csv")):
        if not path or frame is None:
            continue
        partial = path + ".partial"
        try:
            frame.to_csv(partial, index=False)
            os.replace(partial, path)  # whole or not at all: an older CSV there is kept if this fails
        except OSError as error:
            if os.path.exists(partial):
                os.remove(partial)
            print(f"error: {path}: cannot write the CSV there ({error.strerror or error}); the figures are written; "
                  f"choose another {option} FILE", file=sys.stderr)
            return 2
        out.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
