"""Mask analysis (lottery/tickets.py): similarity numbers from hand-made masks, the chance overlap
against simulation, pairs of a generated results tree, per-layer densities and layer collapse."""

import json
import os
import types
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from scipy import stats

from conftest import compose_config
from lottery import analysis, report
from lottery.errors import LotteryError
from lottery.analysis import tickets
from lottery.results.store import save_tree
from lottery.imp import finish


def by_layer(rows):
    return {row["layer"]: row for row in rows}


def test_similarity_of_hand_made_masks():
    a = {"x": np.array([1, 1, 0, 0], bool), "y": np.array([1, 1, 1], bool)}
    b = {"x": np.array([1, 0, 1, 0], bool), "y": np.array([1, 1, 0], bool)}
    start_a = {"x": np.array([0.5, -1.0, 0.0, 0.0]), "y": np.array([1.0, -1.0, 2.0])}
    start_b = {"x": np.array([-0.2, 0.0, 3.0, 0.0]), "y": np.array([1.0, 1.0, 0.0])}
    rows = by_layer(tickets.compare(a, b, start_a, start_b, ["x", "y"]))
    x, y, whole = rows["x"], rows["y"], rows["all"]
    # x: kept 2 and 2 of 4, one in common. |A ∩ B| ~ hypergeometric: 0, 1, 2 with 1/6, 4/6, 1/6.
    assert (x["kept_a"], x["kept_b"], x["kept_both"], x["size"]) == (2, 2, 1, 4)
    assert x["jaccard"] == pytest.approx(1 / 3)
    assert x["jaccard_chance"] == pytest.approx(float(Fraction(4, 6) * Fraction(1, 3) + Fraction(1, 6) * 1))  # 7/18
    assert x["jaccard_above_chance"] == pytest.approx(-1 / 11)
    assert x["sign_agreement"] == 0 and x["sign_chance"] == 0  # the one shared weight: + in a, - in b
    # y: a keeps all 3, so the intersection is b whatever the draw: chance is the observed 2/3.
    assert y["jaccard"] == pytest.approx(2 / 3) and y["jaccard_chance"] == pytest.approx(2 / 3)
    assert y["jaccard_above_chance"] == pytest.approx(0)
    assert y["sign_agreement"] == 0.5 and y["sign_chance"] == pytest.approx(0.5)  # a: +,-; b: +,+
    # Both layers: |A ∩ B| = I_x + 2, |A ∪ B| = 9 - |A ∩ B|.
    chance = Fraction(1, 6) * Fraction(2, 7) + Fraction(4, 6) * Fraction(3, 6) + Fraction(1, 6) * Fraction(4, 5)
    assert (whole["kept_a"], whole["kept_b"], whole["kept_both"], whole["size"]) == (5, 4, 3, 7)
    assert whole["jaccard"] == pytest.approx(0.5) and whole["jaccard_chance"] == pytest.approx(float(chance))
    assert whole["sign_agreement"] == pytest.approx(1 / 3)  # of 3 shared weights, y's first agrees
    assert whole["sign_chance"] == pytest.approx(5 / 9)  # 2/3 positive on each side
    # The same mask: 1 above chance; two empty masks: nothing to measure.
    same = by_layer(tickets.compare(a, a, start_a, start_a, ["x"]))["x"]
    assert same["jaccard"] == 1 and same["jaccard_above_chance"] == 1 and same["sign_agreement"] == 1
    empty = {"x": np.zeros(4, bool)}
    assert np.isnan(by_layer(tickets.compare(empty, empty, start_a, start_a, ["x"]))["all"]["jaccard"])


@pytest.mark.parametrize(
    "layers", [((40, 10, 25),), ((40, 10, 25), (100, 30, 60), (7, 0, 3)), ((12, 11, 11), (5, 5, 1))]
)
def test_chance_overlap_against_simulation(layers):
    rng = np.random.default_rng(0)
    draws, both, union = 100_000, 0, 0
    for size, kept_a, kept_b in layers:
        a = np.argsort(rng.random((draws, size)), axis=1) < kept_a  # uniformly random masks of these counts
        b = np.argsort(rng.random((draws, size)), axis=1) < kept_b
        both = both + (a & b).sum(axis=1)
        union = union + (a | b).sum(axis=1)
    simulated = both / union
    error = simulated.std() / np.sqrt(draws)
    assert abs(tickets.chance_jaccard(layers) - simulated.mean()) < 4 * error + 1e-12


def test_hypergeometric_window_is_the_distribution():
    """Large layers: the window around the mean holds the whole distribution and equals SciPy's."""
    values, p = tickets._hypergeometric(266_200, 50_000, 48_000)
    assert p.sum() == pytest.approx(1, abs=1e-9)
    np.testing.assert_allclose(p, stats.hypergeom.pmf(values, 266_200, 50_000, 48_000), rtol=1e-9, atol=1e-300)


# --- a generated results tree ------------------------------------------------------------------------

LAYERS = {"hidden/0/kernel": (4, 3), "output/kernel": (3, 2)}


def network(directory, replicate, level, kind, rng, keep, given=None):
    """A finished network of two layers keeping ``keep`` (fraction) of each, at random (``given``:
    these masks of some layers); its arrays."""
    masks, params = {}, {}
    for name, shape in LAYERS.items():
        size = int(np.prod(shape))
        masks[name] = (np.argsort(rng.random(size)) < round(keep * size)).reshape(shape)
        if given and name in given:
            masks[name] = np.asarray(given[name], bool)
        params[name] = (rng.standard_normal(shape) * masks[name]).astype(np.float32)
    nest = lambda flat: {
        "hidden": {"0": {"kernel": flat["hidden/0/kernel"]}},
        "output": {"kernel": flat["output/kernel"]},
    }
    os.makedirs(directory)
    save_tree(os.path.join(directory, "ticket"), {"mask": nest(masks), "params": nest(params), "batch_stats": {}})
    layers = {
        name: {"remaining": int(m.sum()), "total": int(m.size), "density": float(m.mean())} for name, m in masks.items()
    }
    remaining = sum(c["remaining"] for c in layers.values())
    metrics = {
        "level": level,
        "replicate": replicate,
        "kind": kind,
        "remaining": remaining,
        "total": 18,
        "density": remaining / 18,
        "layers": layers,
        "start_step": 0,
        "history": [],
        "wall_time_s": 1.0,
        "final": {"step": 10, "test_accuracy": 0.9},
        "early_stop": {"step": 10, "test_accuracy": 0.9},
    }
    with open(os.path.join(directory, "metrics.json"), "w") as f:
        json.dump(metrics, f)
    return masks, params


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tickets")
    rng = np.random.default_rng(1)
    arrays = {}
    for digest in ("aaaa", "bbbb", "cccc"):
        directory = root / f"lenet-{digest}"
        os.makedirs(directory)
        OmegaConf.save(OmegaConf.create({"name": "lenet", "rewind": digest}), directory / "config.yaml")
        for r in range(2):
            for level in range(3):
                level_dir = directory / f"replicate_{r}" / f"level_{level}"
                arrays[digest, r, level, "ticket"] = network(level_dir, r, level, "ticket", rng, 0.5**level)
                if level:
                    arrays[digest, r, level, "random_prune"] = network(
                        level_dir / "random_prune", r, level, "random_prune", rng, 0.5**level
                    )
    return root, arrays


def test_every_pair_of_a_results_tree_is_compared_and_level_0_never(tree):
    root, arrays = tree
    table = tickets.similarity_table(str(root))
    whole = table[table.layer == "all"]
    assert set(table.layer) == {"all", *LAYERS} and len(table) == 3 * len(whole)
    count = whole.groupby("comparison").size().to_dict()
    # replicates: 3 experiments x 2 levels; levels: 3 x 2 replicates x 1 pair; kinds: 3 x 2 x 2 levels
    # (ticket vs random_prune); experiments: 3 pairs x 2 replicates x 2 levels, tickets alone by default.
    assert count == {"replicates": 6, "levels": 6, "kinds": 12, "experiments": 12}
    assert (whole.level_a > 0).all() and (whole.level_b > 0).all()
    assert set(whole[whole.comparison != "kinds"].kind_b) == {"ticket"}
    row = whole[(whole.comparison == "experiments") & (whole.replicate_a == 1) & (whole.level_a == 2)].iloc[0]
    assert (row.hash_a, row.hash_b, row.replicate_b, row.level_b) == ("aaaa", "bbbb", 1, 2)
    (ma, pa), (mb, pb) = arrays["aaaa", 1, 2, "ticket"], arrays["bbbb", 1, 2, "ticket"]
    expected = by_layer(tickets.compare(ma, mb, pa, pb, list(LAYERS)))["all"]
    for key, value in expected.items():
        assert row[key] == (pytest.approx(value, nan_ok=True) if isinstance(value, float) else value), key
    # Every kind in every comparison, when asked; a chosen comparison alone.
    everything = tickets.similarity_table(str(root), kinds=None, layers=False)
    assert len(everything[everything.comparison == "replicates"]) == 3 * 2 * 2  # ... x (ticket, random_prune)
    assert set(everything.layer) == {"all"}
    only = tickets.similarity_table(str(root), ["kinds"], layers=False)
    assert set(only.comparison) == {"kinds"} and len(only) == 12
    with pytest.raises(ValueError, match="comparison 'seeds'"):
        tickets.similarity_table(str(root), ["seeds"])


@pytest.mark.slow
def test_summary_and_report_show_the_similarity(tree, capsys, tmp_path):
    root, _ = tree
    summary = tickets.summarize_similarity(tickets.similarity_table(str(root)))
    levels = summary[(summary.comparison == "replicates") & (summary.hash_a == "aaaa")]
    assert list(levels.level_a) == [1, 2] and list(levels.pairs) == [1, 1]
    # Two experiments compared with a third: a row for each pair of experiments, never pooled.
    across = summary[(summary.comparison == "experiments") & (summary.hash_a == "aaaa") & (summary.level_a == 1)]
    assert list(across.hash_b) == ["bbbb", "cccc"] and list(across.pairs) == [2, 2]
    assert report.main([str(root), "--output", str(tmp_path), "--similarity-csv", str(tmp_path / "pairs.csv")]) == 0
    out = capsys.readouterr().out
    assert "ticket masks: overlap (Jaccard) and sign agreement" in out and "ticket vs random_prune" in out
    assert "lenet-aaaa vs lenet-cccc" in out and "same start" in out  # ticket vs random_prune: both from θk
    pairs = pd.read_csv(tmp_path / "pairs.csv")
    assert set(pairs.comparison) == set(tickets.COMPARISONS)  # the CSV holds all of them, levels too
    assert os.path.isfile(tmp_path / "layer_density_lenet-aaaa.png")


def test_a_corrupt_ticket_is_one_error_line(tmp_path, capsys):
    rng = np.random.default_rng(0)
    directory = tmp_path / "lenet-cccc"
    os.makedirs(directory)
    OmegaConf.save(OmegaConf.create({"name": "lenet"}), directory / "config.yaml")
    for level in range(2):
        network(directory / "replicate_0" / f"level_{level}", 0, level, "ticket", rng, 0.5)
    for path in (directory / "replicate_0" / "level_1" / "ticket").rglob("*"):
        if path.is_file():
            path.write_bytes(b"\0garbage")
    assert report.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "level_1/ticket" in err[0]


def test_experiments_at_different_densities_show_both(tmp_path, capsys):
    """Two experiments' tickets at one level, pruned at different rates: not one density for both."""
    rng = np.random.default_rng(2)
    for digest, keep in (("dddd", 0.5), ("eeee", 0.25)):
        directory = tmp_path / f"lenet-{digest}"
        os.makedirs(directory)
        OmegaConf.save(OmegaConf.create({"name": "lenet", "pruning": {"rate": 1 - keep}}), directory / "config.yaml")
        network(directory / "replicate_0" / "level_1", 0, 1, "ticket", rng, keep)
    summary = tickets.summarize_similarity(tickets.similarity_table(str(tmp_path)))
    (row,) = summary.itertuples()
    assert (row.comparison, 18 * row.density_a, 18 * row.density_b) == (
        "experiments",
        pytest.approx(9),
        pytest.approx(5),
    )
    assert report.main([str(tmp_path), "--output", str(tmp_path)]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "lenet-dddd vs lenet-eeee" in line]
    assert [cell.strip() for cell in line.split("│")][5] == "50.00 vs 27.78"  # the % weights remaining column


def test_reading_a_damaged_ticket_leaves_no_event_loop_tracebacks(tmp_path, monkeypatch):
    """orbax closes its event loop when the first array fails to read; tensorstore's reads of the
    others still in flight called back into it, and Python printed each "RuntimeError: Event loop
    is closed" as an exception it could not raise (sys.unraisablehook)."""
    import sys
    import time

    from lottery.errors import LotteryError

    directory = tmp_path / "lenet-ffff" / "replicate_0" / "level_1"
    layers = [f"layer{i}" for i in range(10)]  # 20 arrays: many reads in flight
    save_tree(
        str(directory / "ticket"),
        {
            "mask": {n: np.ones(12, bool) for n in layers},
            "params": {n: np.ones(12, np.float32) for n in layers},
            "batch_stats": {},
        },
    )
    metrics = {
        "level": 1,
        "replicate": 0,
        "kind": "ticket",
        "remaining": 120,
        "total": 120,
        "density": 1.0,
        "layers": {n: {"remaining": 12, "total": 12, "density": 1.0} for n in layers},
        "start_step": 0,
        "history": [],
        "final": {"step": 10, "test_accuracy": 0.9},
    }
    (directory / "metrics.json").write_text(json.dumps(metrics))
    for path in (directory / "ticket").rglob("*"):
        if path.is_file() and path.parent.name == "d":  # the arrays' data, not the metadata
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    for _ in range(20):  # the reads race with the loop's closing
        with pytest.raises(LotteryError, match="cannot be read as an orbax checkpoint"):
            tickets.read_ticket(str(directory))
    time.sleep(0.3)  # what is still in flight lands
    assert [str(u.exc_value) for u in unraisable] == []


def test_per_layer_densities_from_the_results(tree):
    root, arrays = tree
    densities = tickets.layer_densities(analysis.load_runs(str(root)))
    row = densities[
        (densities.hash == "bbbb")
        & (densities.replicate == 1)
        & (densities.level == 2)
        & (densities.kind == "ticket")
        & (densities.layer == "hidden/0/kernel")
    ].iloc[0]
    mask = arrays["bbbb", 1, 2, "ticket"][0]
    assert (row.kept, row.total) == (mask["hidden/0/kernel"].sum(), 12)
    assert row.density == pytest.approx(mask["hidden/0/kernel"].mean())
    assert row.share == pytest.approx(mask["hidden/0/kernel"].sum() / sum(m.sum() for m in mask.values()))
    assert len(densities) == 3 * 2 * (3 + 2) * len(LAYERS)  # experiments x replicates x networks x layers
    ax = analysis.plot_layer_densities(densities[densities.hash == "aaaa"])
    assert [line.get_label() for line in ax.get_lines()] == list(LAYERS)
    with pytest.raises(ValueError, match="several experiments"):
        analysis.plot_layer_densities(densities)


def test_layer_collapse_empty_and_nearly_empty(capsys):
    layers = ["a", "b", "c", "d"]
    mask = {
        "a": np.zeros((4, 3), bool),  # empty
        "b": np.array([[1, 0, 0, 0], [1, 0, 0, 0]], bool),  # 3 of 4 output units have no input
        "c": np.array([[1, 1, 0, 0], [0, 0, 0, 0]], bool),  # 2 of 4: exactly half
        "d": np.array([[1, 1, 1, 0], [0, 0, 0, 0]], bool),
    }  # 1 of 4
    conv = np.ones((3, 3, 2, 5), bool)
    conv[..., 1:] = False  # HWIO: 4 of 5 output channels dead
    assert tickets.dead_units(conv) == 4 and tickets.dead_units(mask["b"]) == 3
    found = {c["layer"]: c for c in tickets.collapse(mask, layers)}
    assert set(found) == {"a", "b", "c"} and found["a"]["empty"] and not found["b"]["empty"]
    assert (found["b"]["dead_units"], found["b"]["units"], found["b"]["kept"], found["b"]["total"]) == (3, 4, 2, 8)
    assert set(c["layer"] for c in tickets.collapse(mask, layers, nearly=0.75)) == {"a", "b"}
    # Training says so once per network, naming the layers, on stderr.
    nested = {"hidden": {"0": {"kernel": mask["a"]}}, "output": {"kernel": np.ones((3, 2), bool)}}
    experiment = types.SimpleNamespace(
        prunable=["hidden/0/kernel", "output/kernel"],
        cfg=compose_config(["pruning=global"]),
        structure=types.SimpleNamespace(layers=[]),
    )
    finish.warn_collapse(experiment, {"level": 7, "replicate": 1, "kind": "ticket"}, nested)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "warning: level 7, replicate 1, ticket: layer collapse: hidden/0/kernel keeps 0 of 12 weights"
    )
    assert err[0].endswith("global ranking does this at high sparsity (pruning.strategy=layerwise keeps every layer)")
    finish.warn_collapse(
        experiment,
        {"level": 7, "replicate": 1, "kind": "ticket"},
        {"hidden": {"0": {"kernel": np.ones((4, 3), bool)}}, "output": {"kernel": np.ones((3, 2), bool)}},
    )
    assert capsys.readouterr().err == ""


def test_collapsed_networks_of_a_tree(tmp_path):
    rng = np.random.default_rng(3)
    directory = tmp_path / "lenet-dddd"
    os.makedirs(directory)
    OmegaConf.save(OmegaConf.create({"name": "lenet"}), directory / "config.yaml")
    network(directory / "replicate_0" / "level_1", 0, 1, "ticket", rng, 0.5)
    network(directory / "replicate_0" / "level_2", 0, 2, "ticket", rng, 0.0)  # everything pruned
    found = tickets.collapsed(str(tmp_path))
    assert list(found.level) == [2, 2] and set(found.layer) == set(LAYERS) and found["empty"].all()


def experiment(root, name, digest, config=None):
    directory = root / f"{name}-{digest}"
    os.makedirs(directory)
    OmegaConf.save(OmegaConf.create({"name": name, **(config or {})}), directory / "config.yaml")
    return directory


@pytest.mark.slow
def test_the_report_names_each_experiments_method(tmp_path, capsys):
    rng = np.random.default_rng(4)
    for name, digest, config in (
        ("lenet", "aaaa", {}),
        ("lenet-digits-swamp", "bbbb", {"swamp": {"particles": 2}}),
        ("lenet-digits-rigl", "cccc", {"sparsity": {"method": "rigl"}}),
        ("lenet-digits-neurons", "dddd", {"pruning": {"structure": "neurons"}}),
    ):
        network(experiment(tmp_path, name, digest, config) / "replicate_0" / "level_1", 0, 1, "ticket", rng, 0.5)
    df = analysis.load_runs(str(tmp_path))
    assert dict(zip(df.hash, df.method)) == {"aaaa": "IMP", "bbbb": "SWAMP", "cccc": "RigL", "dddd": "IMP (neurons)"}
    assert report.main([str(tmp_path), "--no-masks"]) == 0
    lines = capsys.readouterr().out.replace("┃", "│").splitlines()
    rows = {cells[0]: cells[1] for cells in ([c.strip() for c in line.split("│")[1:]] for line in lines if "│" in line)}
    assert rows["experiment"] == "method" and rows["lenet-aaaa"] == "IMP" and rows["lenet-digits-swamp-bbbb"] == "SWAMP"
    assert rows["lenet-digits-rigl-cccc"] == "RigL" and rows["lenet-digits-neurons-dddd"] == "IMP (neurons)"


def test_units_a_structured_ticket_prunes_are_not_collapse(tmp_path):
    rng = np.random.default_rng(5)
    half_dead = {"hidden/0/kernel": [[1, 0, 0], [1, 0, 0], [0, 0, 0], [1, 0, 0]]}  # 2 of 3 units without inputs
    for name, digest, config in (("weights", "aaaa", {}), ("neurons", "bbbb", {"pruning": {"structure": "neurons"}})):
        directory = experiment(tmp_path, name, digest, config) / "replicate_0"
        network(directory / "level_1", 0, 1, "ticket", rng, 0.5, given=half_dead)
        network(directory / "level_2", 0, 2, "ticket", rng, 0.0)  # emptied: collapse under any structure
    found = tickets.collapsed(str(tmp_path))
    assert sorted(zip(found.hash, found.level, found.layer)) == [
        ("aaaa", 1, "hidden/0/kernel"),
        ("aaaa", 2, "hidden/0/kernel"),
        ("aaaa", 2, "output/kernel"),
        ("bbbb", 2, "hidden/0/kernel"),
        ("bbbb", 2, "output/kernel"),
    ]


def test_a_damaged_ticket_is_named_and_skipped_and_the_rest_reported(tmp_path, capsys):
    rng = np.random.default_rng(6)
    directory = experiment(tmp_path, "lenet", "aaaa")
    for replicate in range(2):
        for level in range(3):
            network(
                directory / f"replicate_{replicate}" / f"level_{level}", replicate, level, "ticket", rng, 0.5**level
            )
    damaged = directory / "replicate_1" / "level_2"
    for path in (damaged / "ticket").rglob("*"):
        if path.is_file():
            path.write_bytes(b"\0garbage")
    csv = tmp_path / "pairs.csv"
    assert report.main([str(tmp_path), "--output", str(tmp_path), "--similarity-csv", str(csv)]) == 2
    out, err = capsys.readouterr()
    assert "ticket masks: overlap (Jaccard)" in out and f"wrote {csv}" in out  # the other tickets' pairs
    (line,) = err.strip().splitlines()
    assert (
        line.startswith(f"error: {damaged / 'ticket'}: cannot be read as an orbax checkpoint") and "--no-masks" in line
    )
    pairs = pd.read_csv(csv)
    assert len(pairs) and not ((pairs.replicate_a == 1) & (pairs.level_a == 2)).any()
    assert not ((pairs.replicate_b == 1) & (pairs.level_b == 2)).any() and (pairs.level_b == 2).any()
    assert set(pairs.comparison) == {"replicates", "levels"}
    with pytest.raises(LotteryError, match="cannot be read as an orbax checkpoint"):
        tickets.similarity_table(str(tmp_path))  # the API still raises unless asked to skip


def test_an_unwritable_similarity_csv_is_refused_before_any_work(tmp_path, capsys):
    rng = np.random.default_rng(7)
    network(experiment(tmp_path, "lenet", "aaaa") / "replicate_0" / "level_1", 0, 1, "ticket", rng, 0.5)
    for option in ("--similarity-csv", "--csv"):
        for path in (tmp_path / "nowhere" / "pairs.csv", tmp_path):
            assert report.main([str(tmp_path), "--output", str(tmp_path / "figures"), option, str(path)]) == 2
            out, err = capsys.readouterr()
            assert out == "" and not os.path.exists(tmp_path / "figures")
            (line,) = err.strip().splitlines()
            assert line.startswith(f"error: {path}: cannot write the CSV there (") and line.endswith(
                f"choose another {option} FILE"
            )
