"""W&B after kill -9 and resume (issue 11): every evaluation and level row once, at one step (the
kill -9 scenario itself runs in tests/results/test_reliability.py, which checks its records here)."""

import pytest
import glob
import io
import json
import os
import tempfile

from rich.console import Console

from lottery import imp, tracking
from wandb_records import read_run

QUIET = Console(file=io.StringIO())
KINDS = ("ticket", "random_prune")


def row_key(row):
    """A history row's identity, as the tracker keys it."""
    if "train/loss" in row:
        return "eval", row["level"], row["iteration"]
    if "level/lmc_barrier" in row:
        return "lmc", row["level/index"], row["level/lmc_points"]
    if "level/test_accuracy" in row:
        return "level", row["level/index"]
    return ("summary",) if "levels/path" in row else None


def assert_every_row_once(directory, replicates=1):
    """The W&B records of an experiment of tests/results/test_reliability.py's RUN (levels 0-2, one
    replicate, the ticket and random_prune, LMC at level 1), offline, after kill -9 and resumes:
    one record per network to sync (older ones set aside), every evaluation, level and LMC row
    once, in order, at the step the ledger gave it, equal to the results on disk."""
    group = os.path.basename(directory)
    for replicate in range(replicates):
        for kind in KINDS:
            run_id = f"{group}-r{replicate}-{kind}"
            (current,) = glob.glob(f"{directory}/wandb/offline-run-*-{run_id}")  # one record to sync per run
            assert glob.glob(f"{directory}/wandb/superseded/offline-run-*-{run_id}*")  # the older ones kept aside
            _, config, history = read_run(current)
            assert config["replicate"] == replicate and config["kind"] == kind
            steps = [row["_step"] for row in history]
            assert steps == sorted(set(steps))  # strictly increasing: W&B keeps every row
            ledger = tracking.Ledger(f"{directory}/wandb/{run_id}.steps.jsonl").steps
            for row in history:  # a row has the step the ledger gave it, whichever process logged it
                key = row_key(row)
                if key != ("summary",):
                    assert ledger[key] == row["_step"], key

            metrics = []
            for level in range(3):
                level_dir = f"{directory}/replicate_{replicate}/level_{level}"
                if kind == "ticket":
                    metrics.append(json.load(open(f"{level_dir}/metrics.json")))
                elif level > 0:
                    metrics.append(json.load(open(f"{level_dir}/{kind}/metrics.json")))
            evaluations = [
                (
                    row["level"],
                    row["iteration"],
                    row["train/loss"],
                    row["val/loss"],
                    row["val/accuracy"],
                    row["test/loss"],
                    row["test/accuracy"],
                )
                for row in history
                if "train/loss" in row
            ]
            assert evaluations == [
                (
                    m["level"],
                    r["step"],
                    r["train_loss"],
                    r["val_loss"],
                    r["val_accuracy"],
                    r["test_loss"],
                    r["test_accuracy"],
                )
                for m in metrics
                for r in m["history"]
            ]
            levels = [
                (
                    row["level/index"],
                    row["level/percent_remaining"],
                    row["level/test_accuracy"],
                    row["level/wall_time_s"],
                )
                for row in history
                if "level/test_accuracy" in row
            ]
            assert levels == [
                (m["level"], 100 * m["density"], m["final"]["test_accuracy"], m["wall_time_s"]) for m in metrics
            ]
            barriers = [(row["level/index"], row["level/lmc_barrier"]) for row in history if "level/lmc_barrier" in row]
            lmc = json.load(open(f"{directory}/replicate_{replicate}/level_1/lmc/metrics.json"))
            assert barriers == ([(1, lmc["barrier"])] if kind == "ticket" else [])
            (summary,) = [row for row in history if "levels/path" in row]
            assert summary["levels/nrows"] == len(metrics)


class FakeRun:
    """A W&B run resumed online, without the network: ``step`` is where the server's history ends."""

    def __init__(self, step):
        self.step, self.rows = step, []

    def define_metric(self, *args, **kwargs):
        pass

    def log(self, values, step, commit):
        self.rows.append((step, values))

    def finish(self, exit_code=0):
        pass


@pytest.mark.slow
def test_online_resume_sends_only_the_rows_past_the_servers_history(small_config, monkeypatch):
    overrides = ("levels=1", "lmc.levels=[1]", "lmc.points=3")
    cfg = small_config("wandb.mode=offline", *overrides)
    results = imp.run(cfg, console=QUIET)
    directory = imp.prepare(cfg).directory
    run_id = f"{os.path.basename(directory)}-r0-ticket"
    current = glob.glob(f"{directory}/wandb/offline-run-*")
    imp.run(cfg, console=QUIET)  # finished: opens no W&B run, writes no directory
    assert glob.glob(f"{directory}/wandb/offline-run-*") == current
    assert not os.path.exists(f"{directory}/wandb/superseded")

    ledger = tracking.Ledger(f"{directory}/wandb/{run_id}.steps.jsonl").steps
    level_1 = [r for r in results if r["kind"] == "ticket" and r["level"] == 1][0]["history"]
    floor = ledger[("eval", 1, level_1[2]["step"])]  # the server has level 1 up to its third evaluation
    fake = FakeRun(floor)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setattr("wandb.init", lambda **arguments: fake)
    tracker = tracking.Tracker(small_config("wandb.mode=online", *overrides), directory)
    tracker.record(0, "ticket")  # opening restates what the server lacks, at the same steps
    expected = sorted((step, key) for key, step in ledger.items() if step >= floor and key[0] != "summary")
    assert [step for step, _ in fake.rows] == [step for step, _ in expected]
    assert fake.rows[0][1]["iteration"] == level_1[2]["step"] and fake.rows[0][1]["level"] == 1
    fake.rows.clear()
    tracker.log_history(0, "ticket", 1, level_1)  # a level resumed from a checkpoint: nothing twice
    assert fake.rows == []
    tracker.log_evaluation(0, "ticket", 2, {"step": 20, "train_loss": 0.5})  # a new row: the next step
    assert fake.rows == [(max(ledger.values()) + 1, {"level": 2, "iteration": 20, "train/loss": 0.5})]
    assert not glob.glob(f"{directory}/wandb/offline-run-*-{run_id}")  # superseded by the online record
    assert glob.glob(f"{directory}/wandb/superseded/offline-run-*-{run_id}")


def test_a_row_the_resumed_process_cannot_place_at_its_step_gets_a_new_one(tmp_path):
    """W&B drops a row below its current step: a row that comes after later ones (an LMC level
    added to an experiment whose later level was killed) is logged once, at the next step."""
    ledger = tracking.Ledger(str(tmp_path / "run.steps.jsonl"))
    for step, key in enumerate([("eval", 3, 20), ("eval", 3, 40)]):
        ledger.add(key, step)
    fake = FakeRun(0)
    record = tracking.Record(fake, ledger)
    record.log(("lmc", 1), {"level/lmc_barrier": 0.1})
    record.log(("eval", 3, 20), {"iteration": 20})
    record.log(("eval", 3, 40), {"iteration": 40})
    assert [step for step, _ in fake.rows] == [2, 3, 4]
    assert tracking.Ledger(ledger.path).steps == {("eval", 3, 20): 3, ("eval", 3, 40): 4, ("lmc", 1): 2}


def test_a_ledger_line_torn_by_a_kill_is_ignored(tmp_path):
    path = tmp_path / "run.steps.jsonl"
    path.write_text('{"key": ["eval", 0, 20], "step": 0}\n{"key": ["eval", 0, 4')
    ledger = tracking.Ledger(str(path))
    assert ledger.steps == {("eval", 0, 20): 0} and not ledger.complete
    ledger.add(("eval", 0, 40), 1)
    ledger.mark("finished")
    again = tracking.Ledger(str(path))
    assert again.steps == {("eval", 0, 20): 0, ("eval", 0, 40): 1} and again.complete


def current_dir(directory, kind):
    (path,) = glob.glob(f"{directory}/wandb/offline-run-*-{os.path.basename(directory)}-r0-{kind}")
    return path


@pytest.mark.slow
def test_a_run_a_killed_process_left_incomplete_is_restated_when_the_experiment_finishes(small_config):
    cfg = small_config("wandb.mode=offline", "levels=1", "controls=[random_reinit]")
    results = imp.run(cfg, console=QUIET)
    directory = imp.prepare(cfg).directory
    finished = current_dir(directory, "random_reinit")
    ticket = current_dir(directory, "ticket")
    # As a process killed after it opened the run again: the run's directory may lack rows.
    tracking.Ledger(f"{directory}/wandb/{os.path.basename(directory)}-r0-ticket.steps.jsonl").mark("opened")
    imp.run(cfg, console=QUIET)  # nothing to train; the ticket's run is restated, the control's left alone
    assert current_dir(directory, "random_reinit") == finished
    assert current_dir(directory, "ticket") != ticket
    assert os.path.isdir(f"{directory}/wandb/superseded/{os.path.basename(ticket)}")
    _, _, history = read_run(current_dir(directory, "ticket"))
    mine = [m for m in results if m["kind"] == "ticket"]
    assert [(row["level"], row["iteration"]) for row in history if "train/loss" in row] == [
        (m["level"], r["step"]) for m in mine for r in m["history"]
    ]
    assert [row["level/index"] for row in history if "level/test_accuracy" in row] == [0, 1]
    assert len([row for row in history if "levels/path" in row]) == 1


@pytest.mark.slow
def test_a_run_continued_after_wandb_sync_logs_only_what_the_server_lacks(small_config):
    cfg = small_config("wandb.mode=offline", "levels=0")
    imp.run(cfg, console=QUIET)
    directory = imp.prepare(cfg).directory
    synced = current_dir(directory, "ticket")
    _, _, before = read_run(synced)
    open(glob.glob(f"{synced}/*.wandb")[0] + ".synced", "w").close()  # as `wandb sync` marks what it uploaded
    results = imp.run(small_config("wandb.mode=offline", "levels=1"), console=QUIET)  # one more level
    _, _, after = read_run(current_dir(directory, "ticket"))
    assert [(row["level"], row["iteration"]) for row in after if "train/loss" in row] == [
        (1, r["step"]) for r in results[1]["history"]
    ]
    assert [row["level/index"] for row in after if "level/test_accuracy" in row] == [1]
    assert min(row["_step"] for row in after) > max(row["_step"] for row in before)


def test_an_lmc_path_measured_again_at_another_count_reaches_w_and_b():
    """``lmc.points`` changed on a finished LMC level re-measures the path from its copies: the new
    barrier is a new row (the ledger has the old one), the same count again is not."""
    ledger = tracking.Ledger(os.path.join(tempfile.mkdtemp(), "run.steps.jsonl"))
    fake = FakeRun(0)
    record = tracking.Record(fake, ledger)
    path = lambda points, barrier: {"points": points, "alphas": [0.0] * points, "barrier": barrier}
    for points, barrier in ((3, 0.1), (5, 0.2), (5, 0.2)):
        record.log(*tracking.lmc_row(1, 0.5, path(points, barrier)))
    assert [row["level/lmc_barrier"] for _, row in fake.rows] == [0.1, 0.2]
