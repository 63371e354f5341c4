"""The comparison table of reproduce.sh: test accuracy (early stop, mean ± std over replicates) and
training cost of each method at IMP's densities, from ``lottery.report``'s levels.csv."""

import sys

import pandas as pd

METHODS = ["imp", "static", "gmp", "set", "rigl"]


def main(path):
    df = pd.read_csv(path)
    tickets = df[df["kind"] == "ticket"]
    levels = sorted(set(tickets[tickets["experiment"] != "imp"]["level"]) | {0})
    stat = lambda v: f"{100 * v.mean():.2f} ± {100 * v.std(ddof=0):.2f}"
    print("| level | % remaining | " + " | ".join(METHODS) + " |")
    print("|---|---|" + "---|" * len(METHODS))
    for level in levels:
        at = tickets[tickets["level"] == level]
        cells = []
        for method in METHODS:
            rows = at[at["experiment"] == (method if level else "imp")]  # level 0: the one dense network
            cells.append(
                f"{stat(rows['test_accuracy_early_stop'])} ({rows['cost_steps'].mean():,.0f})" if len(rows) else "-"
            )
        print(f"| {level} | {at['percent_remaining'].mean():.2f} | " + " | ".join(cells) + " |")
    controls = df[(df["kind"] == "random_reinit")]
    if len(controls):
        print("\nrandom_reinit (the final mask from fresh weights), same cells:\n")
        print("| level | set | rigl |")
        print("|---|---|---|")
        for level in sorted(set(controls["level"])):
            cells = [
                stat(controls[(controls.level == level) & (controls.experiment == m)]["test_accuracy_early_stop"])
                for m in ("set", "rigl")
            ]
            print(f"| {level} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
