"""``python -m lottery.report RUNS_DIR``: the results table and figures of finished runs.

RUNS_DIR is any directory with experiments below it: ``runs/``, one experiment's directory, or a
Hydra sweep directory (``runs/multirun/<date>``). Prints mean ± std over replicates per
experiment, kind and level, and writes accuracy_vs_sparsity.png (and early_stopping.png) there;
``--csv FILE`` also writes one row per trained network (replicate, level, kind, % remaining,
accuracies, early-stop iteration, LMC barrier).
"""

import argparse
import os
import sys
import tempfile

import numpy as np
from rich.console import Console
from rich.table import Table

from lottery import analysis
from lottery.errors import LotteryError


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
    for figure in analysis.save_figures(df, output):
        out.print(f"wrote {figure}")
    if args.csv:
        partial = args.csv + ".partial"
        try:
            df.drop(columns=["directory"]).to_csv(partial, index=False)
            os.replace(partial, args.csv)  # whole or not at all: an older CSV there is kept if this fails
        except OSError as error:
            if os.path.exists(partial):
                os.remove(partial)
            print(f"error: {args.csv}: cannot write the CSV there ({error.strerror or error}); the figures are written; "
                  "choose another --csv FILE", file=sys.stderr)
            return 2
        out.print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
