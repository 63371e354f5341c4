"""``python -m lottery.report RUNS_DIR``: the results table and figures of finished runs.

RUNS_DIR is any directory with experiments below it: ``runs/``, one experiment's directory, or a
Hydra sweep directory (``runs/multirun/<date>``). Prints mean ± std over replicates per
experiment, kind and level, how alike the tickets' masks are (across replicates, against their
controls, across experiments; lottery/analysis/tickets.py) and the layers pruning emptied, and writes
accuracy_vs_sparsity.png (and early_stopping.png) and layer_density.png there; ``--csv FILE``
also writes one row per trained network (replicate, level, kind, % remaining, accuracies,
early-stop iteration, LMC barrier), ``--similarity-csv FILE`` one row per pair of tickets and layer.
A ticket that cannot be read is named and left out of what needs the masks, the rest reported (exit 2).
"""

import argparse
import os
import sys
import tempfile

from lottery.analysis import figures, runs, tickets
from lottery.analysis.tables import console, results, similarity
from lottery.errors import LotteryError
from lottery.results.store import write_whole

REPORTED = ("replicates", "kinds", "experiments")  # the comparisons the report shows (levels: the API)


def writable(directory: str) -> None:
    """Fail before printing anything if the figures cannot be written into ``directory``."""
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise LotteryError(
            f"{directory}: cannot write figures there ({error.strerror}); choose another directory with --output DIR"
        ) from None


def csv_writable(path: str, option: str) -> None:
    """Fail before any work if a CSV cannot be written to ``path`` (it is written last, whole:
    results/store.py's write_whole, a new file beside it renamed over it)."""
    directory = os.path.dirname(os.path.abspath(path))
    reason = "it is a directory" if os.path.isdir(path) else None
    if reason is None:
        try:
            with tempfile.TemporaryFile(dir=directory):
                pass
        except OSError as error:
            reason = error.strerror or type(error).__name__
    if reason is not None:
        raise LotteryError(f"{path}: cannot write the CSV there ({reason}); choose another {option} FILE")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lottery.report", description=__doc__.splitlines()[0])
    parser.add_argument("root", help="directory with lottery experiments below it")
    parser.add_argument("--output", help="where to write the figures (default: ROOT)")
    parser.add_argument("--csv", help="also write every trained network's row (load_runs) to this CSV file")
    parser.add_argument(
        "--similarity-csv", help="also write every compared pair of tickets, per layer, to this CSV file"
    )
    parser.add_argument("--no-masks", action="store_true", help="leave out what needs the masks (similarity, collapse)")
    args = parser.parse_args(argv)
    output = args.output or args.root
    try:
        for path, option in ((args.csv, "--csv"), (args.similarity_csv, "--similarity-csv")):
            if path:
                csv_writable(path, option)
        df = runs.load_runs(args.root)
        writable(output)
    except (FileNotFoundError, LotteryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = console()
    out.print(results(runs.summarize(df)))
    pairs, damaged = None, {}  # damaged: the tickets that could not be read, left out of what needs masks
    if not args.no_masks:
        try:
            pairs = tickets.similarity_table(
                args.root, REPORTED if not args.similarity_csv else tickets.COMPARISONS, damaged=damaged
            )
            collapsed = tickets.collapsed(args.root, damaged=damaged)
        except LotteryError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        shown = pairs[pairs.comparison.isin(REPORTED)]
        if len(shown):
            out.print(similarity(tickets.summarize_similarity(shown)))
        for _, row in collapsed.iterrows():
            out.print(
                f"warning: {row['experiment']}-{row['hash']}, level {row['level']}, replicate {row['replicate']}, "
                f"{row['kind']}: layer collapse: {tickets.describe_collapse([row])}"
            )
    for figure in figures.save_figures(df, output):
        out.print(f"wrote {figure}")
    for path, frame, option in (
        (args.csv, df.drop(columns=["directory"]), "--csv"),
        (args.similarity_csv, pairs, "--similarity-csv"),
    ):
        if not path or frame is None:
            continue
        try:
            write_whole(path, lambda partial: frame.to_csv(partial, index=False))  # an older CSV is kept if this fails
        except OSError as error:
            print(
                f"error: {path}: cannot write the CSV there ({error.strerror or error}); the figures are written; "
                f"choose another {option} FILE",
                file=sys.stderr,
            )
            return 2
        out.print(f"wrote {path}")
    for error in damaged.values():  # after everything else is reported: one line each
        print(
            f"error: {error}; its ticket is left out of the mask comparisons and collapse check (the rest is "
            "reported; --no-masks reports without reading masks)",
            file=sys.stderr,
        )
    return 2 if damaged else 0


if __name__ == "__main__":
    sys.exit(main())
