"""The objective: one number read from an experiment's finished results, for searches.

Config ``objective`` (``ObjectiveConfig``) names it; at the end of each run ``imp.run`` prints it,
writes it to ``<experiment>/objectives.json`` and returns it, and ``lottery.run`` hands it to Hydra's
sweepers (Optuna: ``conf/hparams_search/``). It is read from the results, never part of them: it
is not in the experiment's hash, so a search asks one experiment for several objectives, and
``objectives.json`` keeps each under its own key.

  accuracy     test accuracy of the ``kind`` networks at a level (``at``: early_stop or final),
               mean over replicates
  auc          the area under test accuracy vs x = log10(1 / density), from the dense network
               (x = 0) to a level, linear between levels, divided by the x-range: the mean accuracy
               over that range of log density, comparable across pruning rates
  lmc_barrier  the linear-mode-connectivity error barrier of the tickets at a level in lmc.levels,
               mean over replicates

The level: ``level``, or the level closest to ``remaining`` (% of weights remaining) in log
density, or the last level. A target past the last level by more than half a level's step (in log
density) was not reached: an error, as is any other value the results do not hold.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
from typing import Dict, List, Optional

import numpy as np

from lottery import lazy

from lottery.errors import LotteryError
from lottery.pruning import controls
from lottery.results.store import read_json, write_json

pd = lazy.module("pandas")

NAMES = ("none", "accuracy", "auc", "lmc_barrier")
AT = ("early_stop", "final")
FILE = "objectives.json"
COLUMN = {"early_stop": "test_accuracy_early_stop", "final": "test_accuracy"}


@dataclasses.dataclass
class Objective:
    """An objective's value and what it was computed from."""

    key: str  # the spec, canonical: its key in objectives.json
    description: str  # what it is, in words, for the printed line
    value: float
    replicates: Dict[int, float]  # each replicate's value; `value` is their mean
    levels: List[int]  # the levels read (auc: every level of the range)
    percent_remaining: List[float]  # of those levels


def check(cfg) -> None:
    """The objective's checks that need no data (``imp.check``: before a sweep starts)."""
    spec = cfg.objective
    if spec.name not in NAMES:
        raise LotteryError(f"objective.name={spec.name!r} is not an objective; choose one of: {', '.join(NAMES)}")
    if spec.name == "none":
        if spec.level is not None or spec.remaining is not None:
            where = (
                f"objective.level={spec.level}" if spec.level is not None else f"objective.remaining={spec.remaining}"
            )
            raise LotteryError(
                f"{where} is set but objective.name=none computes nothing; choose one of: {', '.join(NAMES[1:])}"
            )
        return
    if spec.at not in AT:
        raise LotteryError(f"objective.at={spec.at!r} is not an option; choose one of: {', '.join(AT)}")
    if spec.kind not in controls.kinds():
        raise LotteryError(
            f"objective.kind={spec.kind!r} is not a kind of network; choose one of: {', '.join(controls.kinds())}"
        )
    if spec.kind != "ticket" and spec.kind not in cfg.controls:
        raise LotteryError(
            f"objective.kind={spec.kind} is a control this experiment does not train; add it: controls=[{spec.kind}]"
        )
    if spec.kind != "ticket" and cfg.levels == 0:
        raise LotteryError(
            f"objective.kind={spec.kind} with levels=0: controls train at pruned levels only; set levels=1 or more"
        )
    if spec.level is not None and spec.remaining is not None:
        raise LotteryError(
            f"objective.level={spec.level} and objective.remaining={spec.remaining} are both set; "
            "the objective is at one level: set one of them"
        )
    if spec.level is not None and not 0 <= spec.level <= cfg.levels:
        raise LotteryError(
            f"objective.level={spec.level} must be one of the levels 0..{cfg.levels} (levels={cfg.levels})"
        )
    if spec.remaining is not None and not 0 < spec.remaining <= 100:
        raise LotteryError(
            f"objective.remaining={spec.remaining} must be a percentage of weights remaining, "
            "more than 0 and at most 100"
        )
    if spec.name == "lmc_barrier":
        if spec.kind != "ticket":
            raise LotteryError(
                f"objective.name=lmc_barrier with objective.kind={spec.kind}: linear mode "
                "connectivity is measured for tickets only"
            )
        level = cfg.levels if spec.level is None else spec.level
        if spec.remaining is None and level not in cfg.lmc.levels:
            raise LotteryError(
                f"objective.name=lmc_barrier at level {level}: not measured; add it to "
                f"lmc.levels (now {list(cfg.lmc.levels)})"
            )
        if spec.remaining is not None and not cfg.lmc.levels:
            raise LotteryError("objective.name=lmc_barrier needs LMC measurements: set lmc.levels")
    elif spec.at == "early_stop" and cfg.dataset.validation == 0:
        raise LotteryError(
            "objective.at=early_stop needs a validation set to stop early on (dataset.validation=0); "
            "use objective.at=final"
        )


def check_reach(cfg, densities: List[float]) -> None:
    """The objective's checks that need the density of each level (``densities[L]``, by the counting
    rule: ``imp.prepare``, once the model's shapes are known): a target past the last level, or an
    LMC barrier at a level not measured, is refused before any training, not after all of it (in a
    search: before every trial's)."""
    spec = cfg.objective
    if spec.name == "none":
        return
    density = pd.Series(densities, index=range(len(densities)))
    if spec.name == "auc":
        auc_range(spec, density)
        return
    level = target_level(spec, density)
    if spec.name == "lmc_barrier" and level not in cfg.lmc.levels:
        raise LotteryError(
            f"objective.name=lmc_barrier at objective.remaining={spec.remaining:g}: its level, {level} "
            f"({100 * density[level]:.3g}% remaining), is not measured; add it to lmc.levels "
            f"(now {list(cfg.lmc.levels)})"
        )


def key(spec, last_level: Optional[int] = None) -> str:
    """The spec as one canonical string, e.g. ``accuracy(at=early_stop,kind=ticket,remaining=3.6)``:
    only what the objective depends on, in a fixed order; "the last level" as the level it was."""
    fields = {"at": spec.at, "kind": spec.kind} if spec.name != "lmc_barrier" else {}
    level = last_level if spec.level is None and spec.remaining is None else spec.level
    fields.update(level=level, remaining=None if spec.remaining is None else float(spec.remaining))
    return f"{spec.name}(" + ",".join(f"{k}={v}" for k, v in fields.items() if v is not None) + ")"


def compute(spec, df: pd.DataFrame, last_level: Optional[int] = None, replicates: Optional[int] = None) -> Objective:
    """The objective ``spec`` names, from ``df`` (``analysis.load_runs`` of one experiment), over
    levels up to ``last_level`` and replicates below ``replicates`` (None: every one found).
    Raises a LotteryError naming the key when the results do not hold it."""
    if spec.name not in NAMES[1:]:
        raise LotteryError(f"objective.name={spec.name!r}: nothing to compute; choose one of: {', '.join(NAMES[1:])}")
    if df["directory"].nunique() > 1:
        raise LotteryError(
            f"objective ({key(spec)}): the results hold {df['directory'].nunique()} experiments; "
            "an objective is computed from one"
        )
    rows = df[df["kind"] == spec.kind]
    if last_level is not None:
        rows = rows[rows["level"] <= last_level]
    if replicates is not None:
        rows = rows[rows["replicate"] < replicates]
    if rows.empty:
        raise LotteryError(f"objective ({key(spec)}): no finished {spec.kind} networks to read it from")
    if spec.kind != "ticket":  # a control's level 0 is the dense network it shares with the ticket
        rows = pd.concat(
            [df[(df["kind"] == "ticket") & (df["level"] == 0) & df["replicate"].isin(rows["replicate"])], rows]
        )
    density = rows.groupby("level")["percent_remaining"].mean() / 100  # the same for every replicate
    column = "lmc_barrier" if spec.name == "lmc_barrier" else COLUMN[spec.at]
    values = rows.pivot(index="replicate", columns="level", values=column)  # one network per (replicate, level)

    if spec.name == "auc":
        levels, end = auc_range(spec, density)
        per_replicate = {}
        for replicate, curve in values.iterrows():
            curve = curve.reindex(levels)
            if curve.isna().any():
                missing = [int(level) for level in curve.index[curve.isna()]]
                raise LotteryError(
                    f"objective ({key(spec)}): replicate {replicate} has no {describe_at(spec)} "
                    f"accuracy at level(s) {missing}" + no_validation(spec)
                )
            per_replicate[int(replicate)] = mean_over_log_density(density[levels].to_numpy(), curve.to_numpy(), end)
        upto = f"{spec.remaining:g}%" if spec.remaining is not None else f"{100 * density[levels[-1]]:.4g}%"
        description = (
            f"auc, mean accuracy over log density from 100% to {upto} remaining, levels 0-{levels[-1]}, "
            + describe_at(spec)
        )
    else:
        level = target_level(spec, density)
        levels = [level]
        measured = values[level].dropna() if level in values.columns else pd.Series(dtype=float)
        if measured.empty:
            if spec.name == "lmc_barrier":
                raise LotteryError(
                    f"objective ({key(spec)}): level {level} ({100 * density[level]:.3g}% remaining) "
                    "has no LMC measurement; add it to lmc.levels"
                )
            raise LotteryError(
                f"objective ({key(spec)}): no {describe_at(spec)} accuracy at level {level}" + no_validation(spec)
            )
        per_replicate = {int(r): float(v) for r, v in measured.items()}
        where = (
            f"{spec.remaining:g}% remaining, level {level} at {100 * density[level]:.4g}%"
            if spec.remaining is not None
            else f"level {level}, {100 * density[level]:.4g}% remaining"
        )
        description = f"{spec.name} at {where}" + (f", {describe_at(spec)}" if spec.name == "accuracy" else "")
    n = len(per_replicate)
    description += (f", {spec.kind}" if spec.kind != "ticket" else "") + (
        f", mean of {n} replicates" if n > 1 else ", 1 replicate"
    )
    return Objective(
        key(spec, levels[-1]),
        description,
        float(np.mean(list(per_replicate.values()))),
        per_replicate,
        [int(level) for level in levels],
        [float(100 * density[level]) for level in levels],
    )


def describe_at(spec) -> str:
    return "early stop" if spec.at == "early_stop" else "final"


def no_validation(spec) -> str:
    return (
        " (early stopping needs dataset.validation > 0; or use objective.at=final)" if spec.at == "early_stop" else ""
    )


def target_level(spec, density: pd.Series) -> int:
    """``spec.level``, the level closest to ``spec.remaining`` in log density, or the last level."""
    levels = list(density.index)
    last = levels[-1]
    if spec.level is not None:
        if spec.level not in levels:
            raise LotteryError(
                f"objective.level={spec.level}: not reached; the {spec.kind} networks have levels {levels[0]}..{last}"
            )
        return spec.level
    if spec.remaining is None:
        return last
    target = spec.remaining / 100
    closest = min(levels, key=lambda level: abs(math.log(density[level]) - math.log(target)))
    before = density[levels[-2]] if len(levels) > 1 else density[last]
    # Past the geometric midpoint between the last level and the next (one more step at the last rate).
    if closest == last and target < density[last] * math.sqrt(density[last] / before):
        raise not_reached(spec, last, density[last])
    return closest


def auc_range(spec, density: pd.Series):
    """The levels of an auc's range, and its end in x = log10(1 / density)."""
    levels = list(density.index)
    if levels[0] != 0:
        raise LotteryError(f"objective ({key(spec)}): no dense level 0 to start the area from")
    if spec.level is not None:
        if spec.level not in levels:
            raise LotteryError(
                f"objective.level={spec.level}: not reached; the {spec.kind} networks have levels 0..{levels[-1]}"
            )
        levels = levels[: levels.index(spec.level) + 1]
        return levels, -math.log10(density[levels[-1]])
    if spec.remaining is None:
        return levels, -math.log10(density[levels[-1]])
    end = math.log10(100 / spec.remaining)
    if end > -math.log10(density[levels[-1]]) * (1 + 1e-9):
        raise not_reached(spec, levels[-1], density[levels[-1]])
    # Every level up to the target, and the first past it (the target's accuracy is interpolated).
    inside = [level for level in levels if -math.log10(density[level]) < end * (1 - 1e-9)]
    return levels[: len(inside) + 1] if len(inside) < len(levels) else levels, end


def mean_over_log_density(density: np.ndarray, accuracy: np.ndarray, end: float) -> float:
    """∫ accuracy dx / end over x = log10(1/density) in [0, end], accuracy linear between levels;
    at end = 0 (the dense level alone) its accuracy."""
    x = -np.log10(density)
    if end <= 0:
        return float(accuracy[0])
    inside = x < end
    xs = np.append(x[inside], end)
    ys = np.append(accuracy[inside], np.interp(end, x, accuracy))
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2) / end)


def not_reached(spec, last: int, density: float) -> LotteryError:
    return LotteryError(
        f"objective.remaining={spec.remaining:g}: not reached; the last level, {last}, has "
        f"{100 * density:.3g}% of weights remaining; add levels (levels=...) or a larger pruning.rate"
    )


def measure(cfg, df: pd.DataFrame):
    """The objective config ``objective`` names, over this invocation's levels and replicates: an
    ``Objective``, the LotteryError that says why the results do not hold it, or None
    (``objective.name=none``). ``report`` prints it and raises the error."""
    if cfg.objective.name == "none":
        return None
    try:
        return compute(cfg.objective, df, last_level=cfg.levels, replicates=cfg.replicates)
    except LotteryError as error:
        return error


def report(measured, directory: str, console) -> Optional[float]:
    """Print the objective ``measure`` gave and write it to ``<directory>/objectives.json`` (process
    0, the caller); returns its value. Raises the error of a missing one."""
    if measured is None:
        return None
    if isinstance(measured, LotteryError):
        raise measured
    console.print(f"objective ({measured.description}): {measured.value:.4f}")
    write(directory, measured)
    return measured.value


def write(directory: str, objective: Objective) -> None:
    """Add or update ``objective`` in ``objectives.json`` (whole or not at all); an unchanged value
    leaves the file as it was, so re-reading finished work touches nothing."""
    path = os.path.join(directory, FILE)
    entries = read_json(path) if os.path.exists(path) else {}
    entry = {
        "value": objective.value,
        "description": objective.description,
        "replicates": {str(r): v for r, v in sorted(objective.replicates.items())},
        "levels": objective.levels,
        "percent_remaining": objective.percent_remaining,
    }
    old = entries.get(objective.key)
    if isinstance(old, dict) and {k: old.get(k) for k in entry} == entry:
        return
    entries[objective.key] = {
        **entry,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(path, entries)
