"""What a ticket is: how alike two tickets' masks are, against chance; where each layer's weights go
as pruning proceeds; and when pruning empties a layer (layer collapse).

    sim = similarity_table("runs")              # every pair of tickets worth comparing, per layer
    sim[sim.layer == "all"]                     # one row per pair: the whole network
    densities = layer_densities(load_runs("runs"))
    figures.plot_layer_densities(densities)     # the per-layer density figure of IMP papers
    collapsed("runs")                           # layers pruning emptied or nearly emptied

Similarity of two masks of the same shapes, per prunable layer and over all of them:
  jaccard               |A ∩ B| / |A ∪ B| of the kept weights
  jaccard_chance        its expectation for two masks drawn uniformly at random with the same
                        counts per layer (the intersection is hypergeometric: exact, not simulated)
  jaccard_above_chance  (jaccard - chance) / (1 - chance): 0 at chance, 1 for the same mask
  sign_agreement        of the weights both keep, the fraction whose start weights (ticket/: θk ⊙
                        mask, the weights training started from) have the same sign
  sign_chance           the agreement of independent signs with those positive fractions
                        (sign agreement is 1 by construction where both start from the same
                        weights: two levels of one replicate, a ticket and a control from its θk)
Pairs (``comparison``): ``replicates`` (the same experiment, level and kind, two replicates: do
different seeds find the same ticket?), ``levels`` (one replicate's tickets at two levels), ``kinds``
(a ticket and each of its controls), ``experiments`` (the same replicate, level and kind in two
experiments: two rewind points, criteria, optimizers; at one level two experiments' densities
differ where their pruning rates do, and both are shown). Level 0 (dense) is never compared.
"""

import functools
import itertools
import os
from typing import Dict, Iterable, List, Optional

import numpy as np
import pandas as pd

from lottery.analysis import runs
from lottery.errors import LotteryError
from lottery.pruning import controls
from lottery.pruning.structure import UNIT_KINDS
from lottery.results import paths
from lottery.results.identity import read_identity
from lottery.results.metrics import NETWORK_KEYS
from lottery.results.store import read_flat, read_json

COMPARISONS = ("replicates", "levels", "kinds", "experiments")
PAIR = ("experiment", "hash", "replicate", "level", "kind")  # what names each side of a pair (_a, _b)
MEASURES = (
    "layer",
    "size",
    "kept_a",
    "kept_b",
    "kept_both",
    "density_a",
    "density_b",
    "jaccard",
    "jaccard_chance",
    "jaccard_above_chance",
    "sign_agreement",
    "sign_chance",
)  # a row of ``compare``
ALL = "all"  # the layer name of the whole-network rows
NEARLY_EMPTY = 0.5  # a layer whose output units lost every incoming weight, in at least this fraction


# --- similarity of two masks ----------------------------------------------------------------------


def _hypergeometric(size: int, kept_a: int, kept_b: int):
    """(values, probabilities) of |A ∩ B| for two uniformly random subsets of ``kept_a`` and
    ``kept_b`` of ``size`` elements, over mean ± 12 standard deviations (all but < 1e-13 of the
    probability, renormalized where used)."""
    low, high = max(0, kept_a + kept_b - size), min(kept_a, kept_b)
    mean = kept_a * kept_b / size if size else 0.0
    var = kept_a * kept_b * (size - kept_a) * (size - kept_b) / (size**2 * (size - 1)) if size > 1 else 0.0
    spread = int(np.ceil(12 * np.sqrt(var))) + 2
    values = np.arange(max(low, int(mean) - spread), min(high, int(mean) + spread) + 1)
    from scipy.special import gammaln  # here, not at import: every command imports this module

    choose = lambda n, k: gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)  # log C(n, k)
    log_p = choose(kept_a, values) + choose(size - kept_a, kept_b - values) - choose(size, kept_b)
    return values, np.exp(log_p)


@functools.lru_cache(maxsize=4096)
def chance_jaccard(layers: tuple) -> float:
    """E[|A ∩ B| / |A ∪ B|] over masks drawn uniformly at random with ``kept_a`` and ``kept_b`` of
    each layer's ``size`` weights, layers independent (``layers``: (size, kept_a, kept_b) each): the
    distribution of the total intersection is the convolution of each layer's hypergeometric."""
    from scipy.signal import fftconvolve  # 0.8 s to import: only where chance is computed

    values, probability, union = np.array([0]), np.array([1.0]), 0
    for size, kept_a, kept_b in layers:
        v, p = _hypergeometric(size, kept_a, kept_b)
        probability = np.clip(fftconvolve(probability, p), 0, None) if len(p) > 64 else np.convolve(probability, p)
        values = np.arange(values[0] + v[0], values[0] + v[0] + len(probability))
        union += kept_a + kept_b
    if union == 0:
        return float("nan")
    return float(np.sum(probability * values / (union - values)) / np.sum(probability))


def compare(
    a: Dict[str, np.ndarray],
    b: Dict[str, np.ndarray],
    start_a: Dict[str, np.ndarray],
    start_b: Dict[str, np.ndarray],
    layers: List[str],
    per_layer: bool = True,
) -> List[dict]:
    """One row per layer of ``layers`` (``per_layer``) and one for all of them (``layer`` = "all"):
    the similarity of masks ``a`` and ``b`` (module docstring), with start weights ``start_a``,
    ``start_b``. The "all" row's sign chance pools the positive fractions over layers."""
    rows, totals = [], []
    for name in layers:
        if a[name].shape != b[name].shape:
            raise ValueError(f"{name}: shapes {a[name].shape} and {b[name].shape} differ")
        both = a[name] & b[name]
        size, kept_a, kept_b, kept_both = a[name].size, int(a[name].sum()), int(b[name].sum()), int(both.sum())
        positive_a = int((start_a[name][both] > 0).sum())
        positive_b = int((start_b[name][both] > 0).sum())
        agree = int((np.sign(start_a[name][both]) == np.sign(start_b[name][both])).sum())
        totals.append((size, kept_a, kept_b, kept_both, positive_a, positive_b, agree))
        if per_layer:
            rows.append(_row(name, ((size, kept_a, kept_b),), *totals[-1]))
    summed = [sum(column) for column in zip(*totals)]
    rows.append(_row(ALL, tuple(t[:3] for t in totals), *summed))
    return rows


def _row(layer, counts, size, kept_a, kept_b, kept_both, positive_a, positive_b, agree) -> dict:
    union = kept_a + kept_b - kept_both
    jaccard = kept_both / union if union else float("nan")
    chance = chance_jaccard(counts)
    p_a, p_b = (positive / kept_both if kept_both else float("nan") for positive in (positive_a, positive_b))
    return dict(
        zip(
            MEASURES,
            (
                layer,
                size,
                kept_a,
                kept_b,
                kept_both,
                kept_a / size,
                kept_b / size,
                jaccard,
                chance,
                (jaccard - chance) / (1 - chance) if chance < 1 else float("nan"),
                agree / kept_both if kept_both else float("nan"),
                p_a * p_b + (1 - p_a) * (1 - p_b),
            ),
        )
    )


# --- tickets of a results tree --------------------------------------------------------------------


def read_ticket(directory: str) -> dict:
    """A finished network's mask and the signs of its start weights (``ticket/``; int8, all that
    sign agreement needs), by prunable layer (named as in metrics.json: ``hidden/0/kernel``), and
    its metrics.json."""
    metrics = read_json(paths.metrics_file(directory), NETWORK_KEYS)
    ticket = read_flat(paths.ticket_dir(directory), ("mask", "params", "batch_stats"), separator="/")
    layers = list(metrics["layers"])
    missing = [name for name in layers if name not in ticket["mask"] or name not in ticket["params"]]
    if missing:
        raise LotteryError(
            f"{paths.ticket_dir(directory)}: has no mask or start weights of {', '.join(missing)}, "
            "which its metrics.json names; it is corrupt"
        )
    mask = {name: ticket["mask"][name].astype(bool) for name in layers}
    start = {name: np.sign(ticket["params"][name]).astype(np.int8) for name in layers}
    return {"mask": mask, "start": start, "metrics": metrics, "layers": layers}


def _reader(damaged: Optional[dict]):
    """``read_ticket``; with ``damaged`` (a dict), a ticket that cannot be read gives None, its
    error recorded under its directory, instead of raising."""
    if damaged is None:
        return read_ticket

    def read(directory):
        try:
            return read_ticket(directory)
        except LotteryError as error:
            damaged.setdefault(directory, str(error))
            return None

    return read


def networks(root: str) -> pd.DataFrame:
    """Every finished network below ``root`` (levels >= 1) that kept its ``ticket/``: the rows of
    ``runs.load_runs`` (experiment, hash, replicate, level, kind), with the network's directory."""
    try:
        df = runs.load_runs(root)
    except FileNotFoundError:  # no results below root: nothing to compare
        df = pd.DataFrame(columns=["experiment", "hash", "replicate", "level", "kind", "directory"])
    df = df[df.level > 0]
    found = df[list(PAIR)].assign(directory=[network_dir(row) for _, row in df.iterrows()])
    return found[[os.path.isdir(paths.ticket_dir(d)) for d in found.directory]].reset_index(drop=True)


def pairs(found: pd.DataFrame, comparisons: Iterable[str] = COMPARISONS, kinds: Optional[Iterable[str]] = ("ticket",)):
    """(comparison, row a, row b) for every pair of ``networks`` rows each comparison asks for;
    ``kinds`` limits replicates, levels and experiments to those kinds (None: every kind)."""
    for comparison in comparisons:
        if comparison not in COMPARISONS:
            raise ValueError(f"comparison {comparison!r}: choose from {', '.join(COMPARISONS)}")
    rows = [row for _, row in found.iterrows()]
    of_kind = [row for row in rows if kinds is None or row.kind in kinds]
    key = lambda *fields: lambda row: tuple(row[f] for f in fields)
    same = {
        "replicates": key("experiment", "hash", "level", "kind"),
        "levels": key("experiment", "hash", "replicate", "kind"),
        "experiments": key("replicate", "level", "kind"),
    }  # what the two sides of a pair share
    for comparison in comparisons:
        if comparison == "kinds":
            groups = itertools.groupby(
                sorted(rows, key=key("experiment", "hash", "replicate", "level")),
                key("experiment", "hash", "replicate", "level"),
            )
            for _, group in groups:
                group = list(group)
                for ticket in (r for r in group if r.kind == "ticket"):
                    for control in (r for r in group if r.kind != "ticket"):
                        yield comparison, ticket, control
            continue
        grouping = same[comparison]
        for _, group in itertools.groupby(sorted(of_kind, key=grouping), grouping):
            for a, b in itertools.combinations(sorted(group, key=key("experiment", "hash", "replicate", "level")), 2):
                if comparison == "experiments" and (a.experiment, a.hash) == (b.experiment, b.hash):
                    continue
                yield comparison, a, b


def similarity_table(
    root: str,
    comparisons: Iterable[str] = COMPARISONS,
    kinds: Optional[Iterable[str]] = ("ticket",),
    layers: bool = True,
    damaged: Optional[dict] = None,
) -> pd.DataFrame:
    """The similarity (module docstring) of every pair of tickets below ``root`` that
    ``comparisons`` ask for, one tidy row per pair and layer (``layers=False``: the "all" rows
    only). Pairs of experiments whose masks differ in shape are left out. A ticket that cannot be
    read raises a LotteryError naming it; with ``damaged`` (a dict) its pairs are left out and
    the error is recorded there, by the network's directory."""
    found = networks(root)
    # Pairs come grouped: the largest group (one replicate's levels) held at once, each ticket read once.
    biggest = int(found.groupby(["experiment", "hash", "replicate", "kind"]).size().max()) if len(found) else 0
    out, read = [], functools.lru_cache(maxsize=max(16, biggest + 1))(_reader(damaged))
    for comparison, a, b in pairs(found, comparisons, kinds):
        ta, tb = read(a.directory), read(b.directory)
        if ta is None or tb is None:
            continue
        if ta["layers"] != tb["layers"] or any(ta["mask"][n].shape != tb["mask"][n].shape for n in ta["layers"]):
            continue
        described = {
            "comparison": comparison,
            **{f"{field}_{side}": row[field] for side, row in (("a", a), ("b", b)) for field in PAIR},
        }
        for measured in compare(ta["mask"], tb["mask"], ta["start"], tb["start"], ta["layers"], per_layer=layers):
            out.append({**described, **measured})
    return pd.DataFrame(out, columns=["comparison", *(f"{f}_{s}" for s in "ab" for f in PAIR), *MEASURES])


def summarize_similarity(table: pd.DataFrame) -> pd.DataFrame:
    """The whole-network rows, mean over pairs per comparison, pair of experiments, levels and kinds."""
    rows = table[table.layer == ALL]
    by = ["comparison", "experiment_a", "hash_a", "experiment_b", "hash_b", "level_a", "level_b", "kind_a", "kind_b"]
    measures = [
        "density_a",
        "density_b",
        "jaccard",
        "jaccard_chance",
        "jaccard_above_chance",
        "sign_agreement",
        "sign_chance",
    ]
    grouped = rows.groupby(by, sort=True)[measures]
    summary = grouped.mean()
    summary["pairs"] = grouped.size()
    return summary.reset_index()


# --- layers across levels -------------------------------------------------------------------------


def layer_densities(df: pd.DataFrame) -> pd.DataFrame:
    """One row per network of ``runs.load_runs`` and prunable layer: kept and total weights,
    the layer's density and its share of the weights the network keeps, read from metrics.json."""
    rows = []
    for _, network in df.iterrows():
        layers = read_json(paths.metrics_file(network_dir(network)), NETWORK_KEYS)["layers"]
        kept = sum(c["remaining"] for c in layers.values())
        for name, c in layers.items():
            rows.append(
                {
                    "experiment": network["experiment"],
                    "hash": network["hash"],
                    "replicate": network["replicate"],
                    "level": network["level"],
                    "kind": network["kind"],
                    "percent_remaining": network["percent_remaining"],
                    "layer": name,
                    "kept": c["remaining"],
                    "total": c["total"],
                    "density": c["remaining"] / c["total"],
                    "share": c["remaining"] / kept if kept else float("nan"),
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "experiment",
            "hash",
            "replicate",
            "level",
            "kind",
            "percent_remaining",
            "layer",
            "kept",
            "total",
            "density",
            "share",
        ],
    )


def network_dir(network) -> str:
    """A ``load_runs`` row's own directory: its level's, or its control's inside it."""
    return paths.network_dir(network["directory"], network["replicate"], network["level"], network["kind"])


def dead_units(mask: np.ndarray) -> int:
    """Output units of a kernel (its last axis: Dense (in, out), Conv HWIO) left with no incoming
    weight: they output their bias alone, whatever the input."""
    return int(np.sum(~mask.reshape(-1, mask.shape[-1]).any(axis=0)))


def collapse(mask: Dict[str, np.ndarray], layers: List[str], nearly: float = NEARLY_EMPTY) -> List[dict]:
    """The layers of ``mask`` that pruning emptied (no weight kept: the network is cut in two and
    learns nothing past it, Tanaka et al. 2020's layer collapse) or nearly emptied (at least
    ``nearly`` of their output units have lost every incoming weight)."""
    found = []
    for name in layers:
        m = np.asarray(mask[name], bool)
        dead, units = dead_units(m), m.shape[-1]
        if not m.any() or dead >= nearly * units:
            found.append(
                {
                    "layer": name,
                    "kept": int(m.sum()),
                    "total": int(m.size),
                    "dead_units": dead,
                    "units": units,
                    "empty": not m.any(),
                }
            )
    return found


def describe_collapse(found: List[dict]) -> str:
    """One sentence for the layers ``collapse`` found."""
    parts = [
        f"{c['layer']} keeps {c['kept']:,} of {c['total']:,} weights"
        + ("" if c["empty"] else f" ({c['dead_units']} of its {c['units']} units have no input left)")
        for c in found
    ]
    return "; ".join(parts)


def structure(experiment_dir: str) -> str:
    """What an experiment's levels prune (``pruning.structure`` of its config.yaml; weights where an
    older one did not say)."""
    return str((read_identity(experiment_dir).get("pruning") or {}).get("structure", "weights"))


def collapsed(root: str, nearly: float = NEARLY_EMPTY, damaged: Optional[dict] = None) -> pd.DataFrame:
    """Every finished network below ``root`` with a collapsed or nearly collapsed layer
    (``collapse``), one row per such layer. A structured ticket (neurons, channels, heads) prunes
    whole units by design: only its emptied layers are collapse (as imp/finish.py warns while
    training). ``damaged``: as ``similarity_table``'s."""
    rows, read, structures = [], _reader(damaged), {}
    for _, network in networks(root).iterrows():
        ticket = read(network.directory)
        if ticket is None:
            continue
        experiment_dir = paths.locate(network.directory, controls.kinds())[0]
        if experiment_dir not in structures:
            structures[experiment_dir] = structure(experiment_dir)
        units = bool(UNIT_KINDS.get(structures[experiment_dir]))
        for found in collapse(ticket["mask"], ticket["layers"], nearly):
            if units and not found["empty"]:  # its units without inputs are what was pruned
                continue
            rows.append(
                {**{k: network[k] for k in PAIR}, "percent_remaining": 100 * ticket["metrics"]["density"], **found}
            )
    return pd.DataFrame(
        rows, columns=[*PAIR, "percent_remaining", "layer", "kept", "total", "dead_units", "units", "empty"]
    )
