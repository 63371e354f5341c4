"""The numbers of this folder's README, from levels.csv: per level, the winning ticket and its
random reinitialization (mean ± std over replicates) beside the dense network, and the measures the
paper states its findings in (Frankle & Carbin 2019, Sec. 2 and Fig. 4).

    python experiments/frankle_carbin_2019/compare.py [levels.csv]
"""

import argparse
import os

import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
ACCURACY, ITERATION = "test_accuracy_early_stop", "early_stop_iteration"


def per_level(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and population std over replicates, one row per (level, kind)."""
    stats = df.groupby(["level", "kind"]).agg(
        percent=("percent_remaining", "mean"),
        accuracy=(ACCURACY, "mean"),
        accuracy_std=(ACCURACY, lambda v: v.std(ddof=0)),
        iteration=(ITERATION, "mean"),
        iteration_std=(ITERATION, lambda v: v.std(ddof=0)),
        final=("test_accuracy", "mean"),
        wall_time_s=("wall_time_s", "mean"),
        replicates=("replicate", "nunique"),
    )
    return stats.reset_index()


def table(stats: pd.DataFrame) -> str:
    """Markdown: one row per level, ticket and reinit side by side, differences to the dense network."""
    dense = stats[(stats.level == 0) & (stats.kind == "ticket")].iloc[0]
    rows = [
        "| level | % weights remaining | ticket: test acc at early stop (%) | Δ vs dense (pp) | random reinit (%) "
        "| Δ vs dense (pp) | ticket: early-stop it | reinit: early-stop it | ticket final test acc (%) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for level, group in stats.groupby("level"):
        ticket = group[group.kind == "ticket"].iloc[0]
        reinit = group[group.kind == "random_reinit"]
        reinit = reinit.iloc[0] if len(reinit) else None
        acc = lambda r: f"{100 * r.accuracy:.2f} ± {100 * r.accuracy_std:.2f}" if r is not None else "-"
        delta = lambda r: f"{100 * (r.accuracy - dense.accuracy):+.2f}" if r is not None else "-"
        its = lambda r: f"{r.iteration:,.0f} ± {r.iteration_std:,.0f}" if r is not None else "-"
        rows.append(
            f"| {level} | {ticket.percent:.1f} | {acc(ticket)} | {delta(ticket)} | {acc(reinit)} | "
            f"{delta(reinit)} | {its(ticket)} | {its(reinit)} | {100 * ticket.final:.2f} |"
        )
    return "\n".join(rows)


def findings(stats: pd.DataFrame) -> str:
    """The paper's measures: where tickets learn fastest and are most accurate, the smallest
    ticket still at least as accurate (and as fast) as the dense network, and where each kind's
    accuracy first falls below the dense network's."""
    dense = stats[(stats.level == 0) & (stats.kind == "ticket")].iloc[0]
    tickets = stats[stats.kind == "ticket"].set_index("level")
    reinits = stats[stats.kind == "random_reinit"].set_index("level")
    fastest, best = tickets.iteration.idxmin(), tickets.accuracy.idxmax()
    as_good = tickets[tickets.accuracy >= dense.accuracy]
    as_fast = tickets[tickets.iteration <= dense.iteration]

    def stays_below(kind):
        """The first pruned level from which on the mean accuracy stays below the dense network's."""
        above = kind.index[(kind.index > 0) & (kind.accuracy >= dense.accuracy)]
        later = kind.index[kind.index > (above.max() if len(above) else 0)]
        return later.min() if len(later) else None

    lines = [
        f"dense network: {100 * dense.accuracy:.2f}% test accuracy at early stop, iteration {dense.iteration:,.0f}",
        f"fastest ticket: {tickets.percent[fastest]:.1f}% remaining, early stop at {tickets.iteration[fastest]:,.0f} "
        f"({100 * (1 - tickets.iteration[fastest] / dense.iteration):.0f}% earlier than dense)",
        f"most accurate ticket: {tickets.percent[best]:.1f}% remaining, "
        f"{100 * (tickets.accuracy[best] - dense.accuracy):+.2f} pp vs dense",
        f"smallest ticket at least as accurate as dense: {as_good.percent.min():.1f}% remaining",
        f"smallest ticket stopping no later than dense: {as_fast.percent.min():.1f}% remaining",
    ]
    for name, kind in (("ticket", tickets), ("random reinit", reinits)):
        level = stays_below(kind)
        if level is not None:
            lines.append(
                f"{name} accuracy below dense from {kind.percent[level]:.1f}% remaining on "
                f"({100 * (kind.accuracy[level] - dense.accuracy):+.2f} pp there)"
            )
    for level in reinits.index:
        if level in (3, 7, 12, 15, 18):  # the sizes the paper's text names
            ticket, reinit = tickets.loc[level], reinits.loc[level]
            lines.append(
                f"at {ticket.percent:.1f}%: reinit / ticket early-stop iteration "
                f"{reinit.iteration / ticket.iteration:.2f} "
                f"(above 1: the ticket learns faster); ticket - reinit accuracy "
                f"{100 * (ticket.accuracy - reinit.accuracy):+.2f} pp"
            )
    return "\n".join(f"- {line}" for line in lines)


def wall_times(df: pd.DataFrame) -> str:
    """Each level's training wall time (all replicates and kinds of a level are trained as one
    group, so every row of a level carries the group's time)."""
    per = df.groupby("level").agg(
        percent=("percent_remaining", "max"), networks=("kind", "size"), seconds=("wall_time_s", "first")
    )
    rows = ["| level | networks trained together | wall time (s) |", "|---|---|---|"]
    rows += [f"| {level} | {r.networks:.0f} | {r.seconds:.0f} |" for level, r in per.iterrows()]
    return "\n".join(rows) + f"\n\ntotal: {per.seconds.sum() / 60:.1f} min"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="?", default=os.path.join(HERE, "levels.csv"))
    args = parser.parse_args(argv)
    df = pd.read_csv(args.csv)
    stats = per_level(df)
    print(table(stats), "", findings(stats), "", wall_times(df), sep="\n")


if __name__ == "__main__":
    main()
