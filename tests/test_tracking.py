"""W&B: an offline run is written and read back (no network); modes and fallbacks."""

import glob
import io
import json
import os

import pytest
from rich.console import Console

from lottery import imp, tracking
from wandb_records import read_run

QUIET = Console(file=io.StringIO())


def offline_runs(directory):
    return {os.path.basename(d).split("-r0-")[-1]: d for d in glob.glob(os.path.join(directory, "wandb", "offline-run-*"))}


def test_offline_run_logs_levels_evaluations_and_tables(small_config):
    cfg = small_config("wandb.mode=offline", "levels=1", "controls=[random_reinit]", "lmc.levels=[1]", "lmc.points=3")
    results = imp.run(cfg, console=QUIET)
    experiment = imp.prepare(cfg)
    runs = offline_runs(experiment.directory)
    assert sorted(runs) == ["random_reinit", "ticket"]  # one run per (experiment, replicate, kind)
    for kind, run_dir in runs.items():
        run, config, history = read_run(run_dir)
        assert run.run_group == os.path.basename(experiment.directory) and run.job_type == kind
        assert config["pruning"]["rate"] == 0.2 and config["kind"] == kind and config["replicate"] == 0
        mine = [m for m in results if m["kind"] == kind]
        # Evaluations inside each level, with `level` and `iteration` keys.
        evaluations = [row for row in history if "train/loss" in row]
        expected = [(m["level"], r["step"], r["train_loss"], r["test_accuracy"], r["val_loss"]) for m in mine for r in m["history"]]
        assert [(row["level"], row["iteration"], row["train/loss"], row["test/accuracy"], row["val/loss"])
                for row in evaluations] == expected
        # Per level, against % weights remaining.
        levels = [row for row in history if "level/test_accuracy" in row]
        assert [(row["level/index"], row["level/percent_remaining"], row["level/test_accuracy"],
                 row["level/early_stop_iteration"], row["level/wall_time_s"]) for row in levels] == \
            [(m["level"], 100 * m["density"], m["final"]["test_accuracy"], m["early_stop"]["step"], m["wall_time_s"])
             for m in mine]
        assert all(f"level/density/{layer}" in levels[0] for layer in experiment.prunable)
        # At the end: the table of level results (read back from the run's files) and its line plot.
        (final,) = [row for row in history if "levels/path" in row]
        assert final["levels/nrows"] == len(mine) and "accuracy_vs_sparsity_table/path" in final
        with open(os.path.join(run_dir, "files", final["levels/path"])) as f:
            table = json.load(f)
        assert [row[:3] for row in table["data"]] == [[m["level"], 100 * m["density"], m["final"]["test_accuracy"]] for m in mine]
    _, _, ticket_history = read_run(runs["ticket"])
    barriers = [row["level/lmc_barrier"] for row in ticket_history if "level/lmc_barrier" in row]
    assert barriers == [results[1]["lmc"]["barrier"]]


def test_log_ticket_uploads_the_last_levels_ticket_as_an_artifact(small_config):
    from wandb_records import records

    cfg = small_config("wandb.mode=offline", "levels=2", "wandb.log_ticket=true")
    results = imp.run(cfg, console=QUIET)
    (path,) = glob.glob(os.path.join(offline_runs(imp.prepare(cfg).directory)["ticket"], "*.wandb"))
    (ticket,) = [r.artifact for r in records(path) if r.WhichOneof("record_type") == "artifact" and r.artifact.type == "ticket"]
    assert json.loads(ticket.metadata) == {"level": 2, "percent_remaining": 100 * results[-1]["density"]}
    assert "_CHECKPOINT_METADATA" in [entry.path for entry in ticket.manifest.contents]  # the orbax ticket directory


def test_disabled_mode_writes_nothing(small_config):
    cfg = small_config("wandb.mode=disabled", "levels=0")
    imp.run(cfg, console=QUIET)
    assert not os.path.exists(os.path.join(imp.prepare(cfg).directory, "wandb"))


def test_online_without_a_key_falls_back_to_offline(small_config, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    tracker = tracking.Tracker(small_config("wandb.mode=online"), str(tmp_path / "experiment"))
    assert tracker.mode == "offline"
    assert "no W&B API key" in capsys.readouterr().err


def test_mode_defaults_to_the_environment_then_offline(small_config, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert small_config().wandb.mode == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    assert small_config().wandb.mode == "offline"


def test_unknown_mode_is_named(small_config, tmp_path):
    with pytest.raises(Exception, match=r"wandb\.mode='cloud' is not a mode; choose one of: online, offline, disabled"):
        tracking.Tracker(small_config("wandb.mode=cloud"), str(tmp_path))


def test_w_and_b_staging_files_stay_in_the_experiment(small_config, monkeypatch, tmp_path):
    # Tables are staged as artifact files; W&B would leave them, read-only, in the user's data dir.
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data_home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache_home"))
    for key in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR"):
        monkeypatch.delenv(key, raising=False)
    cfg = small_config("wandb.mode=offline", "levels=1")
    imp.run(cfg, console=QUIET)
    directory = imp.prepare(cfg).directory
    staged = glob.glob(os.path.join(directory, "wandb", "data", "**", "*"), recursive=True)
    assert any(os.path.isfile(path) for path in staged)  # the tables' staging files, with the experiment
    home = [p for root in ("data_home", "cache_home") for p in glob.glob(str(tmp_path / root / "**" / "*"), recursive=True)
            if os.path.isfile(p) and "artifacts" in p]
    assert home == []
    assert "WANDB_DATA_DIR" not in os.environ  # the process's environment is left as it was
