"""W&B: an offline run is written and read back (no network); modes and fallbacks; sweep agents."""

import glob
import io
import json
import os

import pytest
from rich.console import Console

from lottery import imp, tracking
from lottery.analysis import objective
from wandb_records import read_run

QUIET = Console(file=io.StringIO())


def offline_runs(directory):
    return {
        os.path.basename(d).split("-r0-")[-1]: d for d in glob.glob(os.path.join(directory, "wandb", "offline-run-*"))
    }


@pytest.mark.slow
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
        expected = [
            (m["level"], r["step"], r["train_loss"], r["test_accuracy"], r["val_loss"])
            for m in mine
            for r in m["history"]
        ]
        assert [
            (row["level"], row["iteration"], row["train/loss"], row["test/accuracy"], row["val/loss"])
            for row in evaluations
        ] == expected
        # Per level, against % weights remaining.
        levels = [row for row in history if "level/test_accuracy" in row]
        assert [
            (
                row["level/index"],
                row["level/percent_remaining"],
                row["level/test_accuracy"],
                row["level/early_stop_iteration"],
                row["level/wall_time_s"],
            )
            for row in levels
        ] == [
            (m["level"], 100 * m["density"], m["final"]["test_accuracy"], m["early_stop"]["step"], m["wall_time_s"])
            for m in mine
        ]
        assert all(f"level/density/{layer}" in levels[0] for layer in experiment.prunable)
        # At the end: the table of level results (read back from the run's files) and its line plot.
        (final,) = [row for row in history if "levels/path" in row]
        assert final["levels/nrows"] == len(mine) and "accuracy_vs_sparsity_table/path" in final
        with open(os.path.join(run_dir, "files", final["levels/path"])) as f:
            table = json.load(f)
        assert [row[:3] for row in table["data"]] == [
            [m["level"], 100 * m["density"], m["final"]["test_accuracy"]] for m in mine
        ]
    _, _, ticket_history = read_run(runs["ticket"])
    barriers = [row["level/lmc_barrier"] for row in ticket_history if "level/lmc_barrier" in row]
    assert barriers == [results[1]["lmc"]["barrier"]]


@pytest.mark.slow
def test_log_ticket_uploads_the_last_levels_ticket_as_an_artifact(small_config):
    from wandb_records import records

    cfg = small_config("wandb.mode=offline", "levels=2", "wandb.log_ticket=true")
    results = imp.run(cfg, console=QUIET)
    (path,) = glob.glob(os.path.join(offline_runs(imp.prepare(cfg).directory)["ticket"], "*.wandb"))
    (ticket,) = [
        r.artifact for r in records(path) if r.WhichOneof("record_type") == "artifact" and r.artifact.type == "ticket"
    ]
    assert json.loads(ticket.metadata) == {"level": 2, "percent_remaining": 100 * results[-1]["density"]}
    assert "_CHECKPOINT_METADATA" in [entry.path for entry in ticket.manifest.contents]  # the orbax ticket directory


@pytest.mark.slow
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


@pytest.mark.slow
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
    home = [
        p
        for root in ("data_home", "cache_home")
        for p in glob.glob(str(tmp_path / root / "**" / "*"), recursive=True)
        if os.path.isfile(p) and "artifacts" in p
    ]
    assert home == []
    assert "WANDB_DATA_DIR" not in os.environ  # the process's environment is left as it was


@pytest.fixture
def sweep_agent(monkeypatch, tmp_path):
    """The environment `wandb agent` gives a trial (wandb/wandb_agent.py): the sweep, the run it
    waits for, its own directory and the trial's parameters file. W&B reads its environment when it
    is first set up in a process, so it is set up again here, as in a process the agent started,
    and again after the test, so that no later test runs inside the sweep."""
    import wandb
    from wandb.sdk.lib import config_util

    parameters = str(tmp_path / "agent" / "wandb" / "sweep-sweep123" / "config-trial7.yaml")
    config_util.save_config_file_from_dict(parameters, {"pruning.rate": {"value": 0.2}})
    for key, value in {
        "WANDB_SWEEP_ID": "sweep123",
        "WANDB_RUN_ID": "trial7",
        "WANDB_DIR": str(tmp_path / "agent"),
        "WANDB_SWEEP_PARAM_PATH": parameters,
    }.items():
        monkeypatch.setenv(key, value)
    wandb.teardown()
    yield "trial7"
    wandb.teardown()


@pytest.mark.slow
def test_under_a_sweep_agent_a_trial_logs_one_run_with_the_agents_id_and_its_summary(
    small_config, sweep_agent, tmp_path
):
    import wandb

    from wandb_records import read_summary

    cfg = small_config("wandb.mode=offline", "levels=1", "replicates=2", "objective.name=accuracy", "objective.level=1")
    results = imp.run(cfg, console=QUIET)
    directory = imp.prepare(cfg).directory
    (first,) = glob.glob(os.path.join(directory, "wandb", "offline-run-*"))
    # The trial run again with the same WANDB_RUN_ID (a configuration proposed twice: nothing left
    # to train): the same run, restated from disk in a new directory, with the objective's summary.
    again = imp.run(cfg, console=QUIET)
    wandb.teardown()  # W&B's service writes the offline file after finish() returns; teardown waits for it
    (run_dir,) = glob.glob(os.path.join(directory, "wandb", "offline-run-*"))  # one run, not one per network
    assert run_dir.endswith(f"-{sweep_agent}") and run_dir != first
    assert os.listdir(os.path.join(directory, "wandb", "superseded")) == [os.path.basename(first)]
    assert not glob.glob(
        str(tmp_path / "agent" / "**" / "offline-run-*"), recursive=True
    )  # not in the agent's directory

    run, config, history = read_run(run_dir)
    assert (run.run_id, run.sweep_id, run.run_group, run.job_type) == (
        "trial7",
        "sweep123",
        os.path.basename(directory),
        "trial",
    )
    assert config["pruning.rate"] == 0.2 and config["pruning"]["rate"] == 0.2 and "replicate" not in config
    steps = [row["_step"] for row in history]
    assert steps == sorted(set(steps))
    ledger = tracking.Ledger(os.path.join(directory, "wandb", f"{sweep_agent}.steps.jsonl"))
    assert ledger.complete and sorted(ledger.steps.values()) == steps  # every row at its ledger step
    for replicate in range(2):
        p = f"replicate_{replicate}/ticket/"
        mine = [m for m in results if m["replicate"] == replicate]
        assert [
            (row[p + "level"], row[p + "iteration"], row[p + "test/accuracy"])
            for row in history
            if p + "train/loss" in row
        ] == [(m["level"], r["step"], r["test_accuracy"]) for m in mine for r in m["history"]]
        assert [
            (row[p + "level/index"], row[p + "level/test_accuracy"])
            for row in history
            if p + "level/test_accuracy" in row
        ] == [(m["level"], m["final"]["test_accuracy"]) for m in mine]
    (final,) = [row for row in history if "replicate_0/ticket/levels/path" in row]
    assert final["replicate_1/ticket/levels/nrows"] == 2
    written = json.loads(open(os.path.join(directory, objective.FILE)).read())  # what the run wrote and printed
    (key,) = written
    for trial in (run_dir, os.path.join(directory, "wandb", "superseded", os.path.basename(first))):
        summary = read_summary(trial)  # what the sweep optimizes, in each invocation's record of the run
        assert summary["objective"] == results.objective == again.objective == written[key]["value"]
        assert summary["objective/spec"] == key


class SummaryRun:
    """A W&B run that keeps its summary (no W&B)."""

    def __init__(self):
        self.step, self.offline, self.summary = 0, False, {}

    def define_metric(self, *args, **kwargs):
        pass

    def log(self, values, step, commit):
        pass

    def finish(self, exit_code=0):
        pass


def test_outside_an_agent_the_summary_goes_to_every_run_the_invocation_finished(small_config, monkeypatch, tmp_path):
    import pandas as pd

    from lottery.analysis import METRICS

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    runs = {}
    monkeypatch.setattr("wandb.init", lambda **arguments: runs.setdefault(arguments["id"], SummaryRun()))
    tracker = tracking.Tracker(small_config("wandb.mode=online"), str(tmp_path / "quickstart-abc"))
    for kind in ("ticket", "random_reinit"):
        tracker.record(0, kind)
    df = pd.DataFrame(
        [
            {"replicate": 0, "kind": kind, "level": 1, "percent_remaining": 80.0, **{m: 0.5 for m in METRICS}}
            for kind in ("ticket", "random_reinit")
        ]
    )
    tracker.finish(df, summary={"objective": 0.97})
    assert {run_id: run.summary for run_id, run in runs.items()} == {
        "quickstart-abc-r0-ticket": {"objective": 0.97},
        "quickstart-abc-r0-random_reinit": {"objective": 0.97},
    }


def test_a_sweep_id_without_a_run_id_is_named(small_config, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep123")
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    with pytest.raises(Exception, match="WANDB_SWEEP_ID is set but WANDB_RUN_ID is not"):
        tracking.Tracker(small_config("wandb.mode=offline"), str(tmp_path))


def test_the_sample_sweep_file_runs_lottery_run_with_overrides_that_compose():
    """experiments/wandb_sweep.yaml's command, with its macros filled in as the agent does
    (wandb/wandb_agent.py: a macro argument becomes its list of words), is a valid command line."""
    import yaml
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    from conftest import REPO, compose_config

    sweep = yaml.safe_load((REPO / "experiments" / "wandb_sweep.yaml").read_text())
    assert sweep["metric"] == {"name": "objective", "goal": "maximize"} and sweep["program"] == "lottery/run.py"
    sample = {
        name: {"value": p["value"] if "value" in p else p["values"][-1] if "values" in p else p["max"]}
        for name, p in sweep["parameters"].items()
    }
    macros = {**create_sweep_command_args({"args": sample}), "env": ["/usr/bin/env"]}
    command = [word for c in sweep["command"] for word in (macros[c[2:-1]] if c.startswith("${") else [c])]
    assert command[:4] == ["/usr/bin/env", "python", "-m", "lottery.run"]
    assert "rewind=2000it" in command and "optimizer.lr=0.003" in command and "objective.remaining=3.6" in command
    cfg = compose_config(command[4:])
    assert (cfg.objective.name, cfg.objective.remaining) == ("accuracy", 3.6)
    assert (cfg.name, cfg.rewind, cfg.pruning.rate, cfg.optimizer.lr, cfg.levels, cfg.wandb.mode) == (
        "lenet",
        "2000it",
        0.5,
        0.003,
        15,
        "online",
    )


def test_the_worker_makes_calls_in_order_raises_a_failure_at_the_next_call_and_can_drop_the_rest():
    import threading

    worker = tracking.Worker()
    done, gate = [], threading.Event()
    worker.submit(lambda: done.append(1))
    worker.submit(lambda: (_ for _ in ()).throw(OSError("disk full")))
    worker.submit(lambda: done.append(3))  # after a failure: not made
    worker.drain()
    with pytest.raises(OSError, match="disk full"):
        worker.submit(lambda: done.append(4))  # the failure, in the caller's thread, once
    assert done == [1]
    worker.submit(gate.wait)  # a call under way, and one waiting behind it
    worker.submit(lambda: done.append(5))
    threading.Timer(0.2, gate.set).start()
    worker.cancel()  # a second Ctrl-C: the call under way finishes, the waiting one is dropped
    assert done == [1]
    worker.close()
    worker.thread.join(timeout=5)
    assert not worker.thread.is_alive()
