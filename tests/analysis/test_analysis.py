"""The results API, figures and report on a results tree generated here with known values."""

import json
import os

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from lottery import analysis, report
from lottery.analysis import figures


def write_metrics(directory, replicate, level, kind, density, accuracy, early_accuracy, early_step):
    os.makedirs(directory, exist_ok=True)
    metrics = {
        "level": level,
        "replicate": replicate,
        "kind": kind,
        "remaining": int(density * 1000),
        "total": 1000,
        "density": density,
        "start_step": 0,
        "final": {"step": 100, "test_accuracy": accuracy, "train_loss": 0.1},
        "early_stop": {"step": early_step, "test_accuracy": early_accuracy, "val_loss": 0.2, "test_loss": 0.2},
        "layers": {},
        "history": [],
        "wall_time_s": 1.0,
    }
    with open(os.path.join(directory, "metrics.json"), "w") as f:
        json.dump(metrics, f)


def make_tree(root, name, digest, rewind, rate, barrier=None, replicates=2, levels=3, offset=0.0):
    """An experiment directory with tickets and random_reinit controls; accuracies known in closed form."""
    directory = os.path.join(root, f"{name}-{digest}")
    os.makedirs(directory)
    OmegaConf.save(
        OmegaConf.create({"name": name, "seed": 0, "rewind": rewind, "pruning": {"rate": rate}}),
        os.path.join(directory, "config.yaml"),
    )
    for r in range(replicates):
        for level in range(levels + 1):
            density = (1 - rate) ** level
            level_dir = os.path.join(directory, f"replicate_{r}", f"level_{level}")
            write_metrics(
                level_dir,
                r,
                level,
                "ticket",
                density,
                0.9 + offset + 0.01 * r,
                0.95 - 0.01 * level + 0.02 * r,
                100 * level + r,
            )
            if level:
                write_metrics(
                    os.path.join(level_dir, "random_reinit"), r, level, "random_reinit", density, 0.8, 0.85, 50
                )
            if barrier is not None:
                os.makedirs(os.path.join(level_dir, "lmc"))
                with open(os.path.join(level_dir, "lmc", "metrics.json"), "w") as f:
                    json.dump({"barrier": barrier + 0.01 * r, "test_error": [], "alphas": []}, f)
    return directory


@pytest.fixture
def tree(tmp_path):
    make_tree(tmp_path, "quickstart", "aaaa", "0it", 0.2, barrier=0.05)
    make_tree(tmp_path, "quickstart", "bbbb", "20it", 0.5, barrier=0.01, offset=0.02)
    return tmp_path


def test_load_runs_is_one_tidy_row_per_network_with_the_differing_config(tree):
    df = analysis.load_runs(str(tree))
    assert len(df) == 2 * 2 * (4 + 3)  # experiments x replicates x (tickets + controls)
    assert {"rewind", "pruning.rate"} <= set(df.columns) and "seed" not in df.columns  # only what differs
    row = df[(df.hash == "bbbb") & (df.kind == "ticket") & (df.level == 2) & (df.replicate == 1)].iloc[0]
    assert row["percent_remaining"] == pytest.approx(25.0) and row["rewind"] == "20it" and row["pruning.rate"] == 0.5
    assert row["test_accuracy"] == pytest.approx(0.93) and row["test_accuracy_early_stop"] == pytest.approx(0.95)
    assert row["early_stop_iteration"] == 201 and row["lmc_barrier"] == pytest.approx(0.02)
    assert df[df.kind == "random_reinit"]["lmc_barrier"].isna().all()  # LMC belongs to tickets


def test_summarize_gives_mean_and_std_over_replicates(tree):
    summary = analysis.summarize(analysis.load_runs(str(tree)))
    row = summary[(summary.hash == "aaaa") & (summary.kind == "ticket") & (summary.level == 1)].iloc[0]
    assert row["test_accuracy_early_stop"] == pytest.approx(np.mean([0.94, 0.96]))
    assert row["test_accuracy_early_stop_std"] == pytest.approx(np.std([0.94, 0.96]))
    assert row["replicates"] == 2 and row["percent_remaining"] == pytest.approx(80.0)


def test_accuracy_vs_sparsity_plot(tree):
    df = analysis.load_runs(str(tree))
    ax = analysis.plot_accuracy_vs_sparsity(df[df.hash == "aaaa"], by="kind")
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["ticket", "random_reinit"]
    x, y = ax.get_lines()[0].get_data()
    np.testing.assert_allclose(x, [100, 80, 64, 51.2])
    np.testing.assert_allclose(y, [100 * (0.95 - 0.01 * level + 0.01) for level in range(4)])
    assert ax.get_xscale() == "log" and ax.get_xlim()[0] > ax.get_xlim()[1]  # decreasing to the right
    ax = analysis.plot_accuracy_vs_sparsity(df[df.kind == "ticket"], by="experiment")
    assert [line.get_label() for line in ax.get_lines()] == [
        "pruning.rate=0.2, rewind=0it",
        "pruning.rate=0.5, rewind=20it",
    ]
    # experiments with names of their own are named; a value an experiment does not hash is left out
    named = df.assign(experiment=df.hash.map({"aaaa": "imp", "bbbb": "rewound"}))
    ax = analysis.plot_accuracy_vs_sparsity(named[named.kind == "ticket"], by="experiment")
    assert [line.get_label() for line in ax.get_lines()] == ["imp", "rewound"]
    unhashed = df.assign(**{"diet.score": df.hash.map({"aaaa": None, "bbbb": "el2n"}), "pruning.rate": np.nan})
    ax = analysis.plot_accuracy_vs_sparsity(unhashed[unhashed.kind == "ticket"], by="experiment")
    assert [line.get_label() for line in ax.get_lines()] == ["rewind=0it", "rewind=20it, diet.score=el2n"]


def test_early_stopping_and_instability_plots(tree):
    df = analysis.load_runs(str(tree))
    ax = analysis.plot_early_stopping(df[df.hash == "aaaa"])
    np.testing.assert_allclose(ax.get_lines()[0].get_data()[1], [0.5, 100.5, 200.5, 300.5])
    ax = analysis.plot_instability(df, x="rewind")
    assert len(ax.containers) == 4  # one errorbar series per level
    assert ax.get_legend_handles_labels()[1][0].startswith("level 0")


@pytest.mark.slow
def test_report_prints_the_table_and_writes_figures(tree, capsys):
    assert report.main([str(tree)]) == 0
    out = capsys.readouterr().out
    assert "quickstart-aaaa" in out and "random_reinit" in out and "95.00 ± 1.00" in out and "90.50 ± 0.50" in out
    assert os.path.isfile(tree / "accuracy_vs_sparsity.png") and os.path.isfile(tree / "early_stopping.png")


@pytest.mark.slow
def test_report_writes_every_network_to_csv(tree, tmp_path):
    csv = tmp_path / "levels.csv"
    assert report.main([str(tree), "--csv", str(csv)]) == 0
    table = pd.read_csv(csv)
    assert len(table) == 28 and "directory" not in table.columns
    row = table[(table.hash == "bbbb") & (table.kind == "ticket") & (table.level == 2) & (table.replicate == 1)].iloc[0]
    assert row["test_accuracy"] == pytest.approx(0.93) and row["percent_remaining"] == pytest.approx(25.0)


def test_report_csv_into_a_missing_directory_is_one_line_and_keeps_nothing_half_written(tree, tmp_path, capsys):
    assert report.main([str(tree), "--csv", str(tmp_path / "missing" / "levels.csv")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert (
        line.startswith(f"error: {tmp_path / 'missing' / 'levels.csv'}: cannot write the CSV there (")
        and "(None)" not in line
    )
    assert not (tmp_path / "missing").exists()


def test_report_on_a_directory_without_results_is_an_error(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: no lottery experiments with results below")


def test_sweep_pointers_are_followed(tree, tmp_path_factory):
    sweep = tmp_path_factory.mktemp("sweep")
    for job, digest in enumerate(("aaaa", "bbbb")):
        os.makedirs(sweep / str(job))
        (sweep / str(job) / analysis.POINTER).write_text(str(tree / f"quickstart-{digest}"))
    df = analysis.load_runs(str(sweep))
    assert sorted(df.hash.unique()) == ["aaaa", "bbbb"]
    assert isinstance(df, pd.DataFrame)


# --- figures users look at, and the report's failures (issue 12) --------------------------------------


def test_legends_name_only_what_changes_the_experiment(tmp_path):
    # Older config.yaml files held the whole config: keys outside the identity must not reach legends.
    for i, digest in enumerate(("aaaa", "bbbb")):
        directory = make_tree(tmp_path, "quickstart", digest, "0it", 0.2 + 0.3 * i)
        OmegaConf.save(
            OmegaConf.create(
                {
                    "name": "quickstart",
                    "seed": 0,
                    "rewind": "0it",
                    "pruning": {"rate": 0.2 + 0.3 * i},
                    "progress": bool(i),
                    "levels": 3 + i,
                    "dataset": {"root": f"/data/{i}"},
                    "lmc": {"points": 10 + i},
                    "wandb": {"mode": "offline"},
                }
            ),
            os.path.join(directory, "config.yaml"),
        )
    df = analysis.load_runs(str(tmp_path))
    assert [c for c in df.columns if c not in analysis.STANDARD_COLUMNS] == ["pruning.rate"]
    ax = analysis.plot_accuracy_vs_sparsity(df[df.kind == "ticket"], by="experiment")
    assert [line.get_label() for line in ax.get_lines()] == ["pruning.rate=0.2", "pruning.rate=0.5"]


@pytest.mark.slow
@pytest.mark.parametrize("experiments", [1, 3, 10])
def test_figures_are_readable_for_one_to_ten_experiments(tmp_path, experiments):
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    rates = [0.1 + 0.08 * i for i in range(experiments)]
    for i, rate in enumerate(rates):
        make_tree(tmp_path, "lenet", f"{i:04d}", f"{100 * i}it", round(rate, 2), levels=12)
    df = analysis.load_runs(str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Tight layout not applied" and the like fail the test
        files = analysis.save_figures(df, str(tmp_path))
        ax = analysis.plot_accuracy_vs_sparsity(df, by="experiment" if experiments > 1 else "kind")
    figure = ax.figure
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    labels = [t for t in ax.get_xticklabels() if t.get_text()]
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert len(labels) >= 2 and all(not a.overlaps(b) for a, b in zip(boxes, boxes[1:]))  # no "6443"
    assert len(labels) <= 7 and all(f"{float(t.get_text()):.0e}"[0] in "125" for t in labels)  # 100, 50, 20, 10, ...
    legend = ax.get_legend().get_window_extent(renderer)
    lines = [line for line in ax.get_lines()]
    assert len(lines) == 2 * experiments  # a ticket and a control line per experiment
    if experiments > 3:  # many entries: beside the axes, never over the lines
        assert not legend.overlaps(ax.get_window_extent(renderer))
    assert all(os.path.getsize(f) > 0 for f in files)


@pytest.mark.slow
def test_the_report_of_experiments_that_differ_in_many_keys_prints_no_warning(tmp_path, capsys):
    """Long legend entries (every key that differs: another model, data, optimizer) squeezed the axes
    of a fixed-size figure to nothing, and matplotlib warned "constrained_layout not applied"."""
    import warnings

    for i, digest in enumerate(("aaaa", "bbbb", "cccc")):
        directory = make_tree(tmp_path, "lenet", digest, f"{100 * i}it", 0.2 + 0.1 * i, levels=2)
        OmegaConf.save(
            OmegaConf.create(
                {
                    "name": "lenet",
                    "rewind": f"{100 * i}it",
                    "pruning": {"rate": 0.2 + 0.1 * i},
                    "model": {"name": "lenet", "hidden": [300 - 50 * i, 100]},
                    "optimizer": {"name": ["sgd", "adam", "sgd"][i], "lr": 0.1 / (i + 1)},
                    "training": {"steps": f"{5000 * (i + 1)}it", "batch_size": 60 + i},
                    "dataset": {"name": "mnist", "fingerprint": f"sha256:{digest * 16}"},
                }
            ),
            os.path.join(directory, "config.yaml"),
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert report.main([str(tmp_path), "--no-masks"]) == 0
    assert [str(w.message) for w in caught] == []
    assert "wrote" in capsys.readouterr().out


def test_early_stopping_axis_has_whole_iterations(tree):
    df = analysis.load_runs(str(tree))
    ax = analysis.plot_early_stopping(df[(df.hash == "aaaa") & (df.kind == "ticket") & (df.level <= 1)])
    ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_a_metric_only_some_replicates_have_is_counted_over_those(tmp_path, capsys):
    directory = make_tree(tmp_path, "quickstart", "aaaa", "0it", 0.2, replicates=2, levels=1)
    lmc = os.path.join(directory, "replicate_0", "level_1", "lmc")
    os.makedirs(lmc)
    with open(os.path.join(lmc, "metrics.json"), "w") as f:
        json.dump({"barrier": 0.03, "test_error": [], "alphas": []}, f)
    summary = analysis.summarize(analysis.load_runs(str(tmp_path)))
    row = summary[(summary.kind == "ticket") & (summary.level == 1)].iloc[0]
    assert row["replicates"] == 2 and row["lmc_barrier_n"] == 1 and row["lmc_barrier"] == pytest.approx(0.03)
    assert report.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "3.00 (n=1)" in out and "3.00 ± 0.00" not in out


def test_train_time_is_per_network(tmp_path):
    directory = make_tree(tmp_path, "quickstart", "aaaa", "0it", 0.2, replicates=2, levels=0)
    for r, (seconds, group) in enumerate(((12.0, 4), (3.0, 1))):  # one trained in a group of 4, one alone
        path = os.path.join(directory, f"replicate_{r}", "level_0", "metrics.json")
        metrics = json.load(open(path))
        metrics.update(wall_time_s=seconds, group_size=group)
        json.dump(metrics, open(path, "w"))
    summary = analysis.summarize(analysis.load_runs(str(tmp_path)))
    assert summary.iloc[0]["train_time_s"] == pytest.approx(3.0)  # 12 s / 4 and 3 s / 1


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"level": 0, "repl', "cannot be read as JSON"),
        ("1", "holds int, not a lottery result"),
        ("{}", "holds an object without level"),
    ],
)
def test_report_names_a_broken_result_file(tree, capsys, content, message):
    path = tree / "quickstart-aaaa" / "replicate_1" / "level_2" / "metrics.json"
    path.write_text(content)
    assert report.main([str(tree)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: {message}") and len(err.strip().splitlines()) == 1


def test_report_names_a_broken_config_yaml(tree, capsys):
    path = tree / "quickstart-aaaa" / "config.yaml"
    path.write_text("name: [unclosed")
    assert report.main([str(tree)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {path}: cannot be read")


def test_report_says_to_use_output_when_it_cannot_write_figures(tree, capsys, tmp_path):
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    assert report.main([str(tree), "--output", str(blocked / "figures")]) == 2
    captured = capsys.readouterr()
    assert (
        captured.err.startswith(f"error: {blocked / 'figures'}: cannot write figures there")
        and "--output DIR" in captured.err
    )
    assert captured.out == ""  # nothing printed before the error


def test_interrupted_attempts_are_not_results(tree):
    before = len(analysis.load_runs(str(tree)))
    partial = tree / "quickstart-aaaa" / "replicate_0" / "level_4.partial"
    write_metrics(str(partial), 0, 4, "ticket", 0.3, 0.5, 0.5, 10)
    assert len(analysis.load_runs(str(tree))) == before


def test_by_experiment_each_kind_keeps_its_own_line(tree):
    df = analysis.load_runs(str(tree))
    ax = analysis.plot_accuracy_vs_sparsity(df, by="experiment")
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == [
        "pruning.rate=0.2, rewind=0it, ticket",
        "pruning.rate=0.2, rewind=0it, random_reinit",
        "pruning.rate=0.5, rewind=20it, ticket",
        "pruning.rate=0.5, rewind=20it, random_reinit",
    ]
    # One colour per experiment, one line style per kind.
    assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color() == lines[3].get_color()
    assert lines[0].get_linestyle() == lines[2].get_linestyle() != lines[1].get_linestyle()


def test_a_callers_figure_keeps_its_size_and_close_ticks_keep_distinct_labels(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for i in range(5):  # enough entries for the legend to go beside the axes
        make_tree(tmp_path, "lenet", f"{i:04d}", f"{100 * i}it", round(0.1 + 0.08 * i, 2), levels=3)
    df = analysis.load_runs(str(tmp_path))
    figure, ax = plt.subplots(figsize=(4, 3))
    analysis.plot_accuracy_vs_sparsity(df, by="experiment", ax=ax)
    assert tuple(figure.get_size_inches()) == (4, 3)  # the caller's layout is the caller's
    assert figures._tick_labels([100.0, 99.96]) == ["100", "99.96"]  # not "100", "100"
    assert figures._tick_labels([50.0, 20.0, 10.0]) == ["50", "20", "10"]
