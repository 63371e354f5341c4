"""Optuna searches through Hydra (lottery/search.py, conf/hparams_search/): the command line as a user
runs it, on the quickstart preset with trials of a second or two."""

import glob
import json
import os
import subprocess
import sys

import pytest

from conftest import CONF, REPO, child_env, run_cli
from lottery import analysis, imp, report
from lottery.analysis import objective
from lottery.config import levels_to_reach

PRESETS = sorted(p.stem for p in (CONF / "hparams_search").glob("*.yaml"))

# Tiny trials: one pruning level, 40 steps per level; the rate drawn from an interval, so that each
# trial is its own experiment; the objective: accuracy at the last level. The sampler's seed draws
# no rewind=99it (past the end of training) in these trials; the test queues one itself.
TINY = [
    "levels=1",
    "objective.remaining=null",
    "model.hidden=[32]",
    "training.steps=2ep",
    "training.eval_every=20it",
    "progress=false",
    "pruning.rate=interval(0.1,0.9)",
    "rewind=choice(0it,20it,99it)",
]


@pytest.mark.slow
def test_a_search_without_the_plugin_is_one_error_line(tmp_path):
    hide = (
        "import sys; sys.modules['hydra_plugins.hydra_optuna_sweeper'] = None; "
        "sys.argv = ['lottery.run', '-m', 'hparams_search=quickstart']; from lottery.run import cli; cli()"
    )
    result = subprocess.run(
        [sys.executable, "-c", hide],
        cwd=tmp_path,
        env=child_env(PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "error: hparams_search=quickstart needs Hydra's Optuna sweeper (hydra-optuna-sweeper), "
        "which is not installed: pip install -e '.[search]'\n"
    )


@pytest.mark.slow
def test_a_search_without_multirun_is_refused_not_run_as_one_experiment():
    from lottery import run
    from lottery.errors import LotteryError

    with pytest.raises(LotteryError) as error:
        run.check_search(["hparams_search=quickstart", "levels=1"])
    assert str(error.value) == (
        "hparams_search=quickstart is an Optuna search, a sweep: add -m (python -m lottery.run -m "
        "hparams_search=quickstart ...); without it one experiment would run, and nothing would "
        "be searched"
    )
    for arguments in (["-m", "hparams_search=quickstart"], ["--multirun", "hparams_search=quickstart"], ["levels=1"]):
        try:
            run.check_search(arguments)
        except LotteryError as other:  # without the search extra: that is the one thing said
            assert "needs Hydra's Optuna sweeper" in str(other)


def test_levels_to_reach_a_target_at_a_pruning_rate():
    # LeNet at 0.2: 0.8^15 = 3.5% <= 3.6% < 0.8^14 (Frankle & Carbin's 3.6% is their level 15); 0.5^5 = 3.1%.
    assert [levels_to_reach(3.6, rate) for rate in (0.2, 0.5)] == [15, 5]
    assert levels_to_reach(100, 0.2) == 0 and levels_to_reach(64, 0.2) == 2  # 0.8^2 = 64% exactly


@pytest.mark.parametrize("preset", PRESETS)
def test_search_presets_compose_into_runnable_experiments(preset):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    from hydra import compose, initialize_config_dir

    header = (CONF / "hparams_search" / f"{preset}.yaml").read_text().splitlines()
    assert header[0] == "# @package _global_" and any(f"-m hparams_search={preset}" in line for line in header)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"hparams_search={preset}"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert (
        sweeper._target_.endswith("OptunaSweeper")
        and sweeper.direction == "maximize"
        and sweeper.sampler.seed is not None
    )
    assert sweeper.study_name == preset and sweeper.storage == f"sqlite:///runs/optuna/{preset}.db"
    assert cfg.objective.name != "none" and cfg.levels == levels_to_reach(cfg.objective.remaining, cfg.pruning.rate)
    imp.check(cfg)
    if preset == "lenet_rewind_rate":  # Frankle & Carbin's LeNet-300-100 on MNIST, at 3.6%: level 15
        assert (cfg.model.name, cfg.dataset.name, cfg.training.steps, cfg.levels) == ("lenet", "mnist", "50000it", 15)


def trials(tmp_path, study="quickstart"):
    import optuna

    storage = f"sqlite:///{tmp_path}/runs/optuna/{study}.db"
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def search(tmp_path, n_trials, sweep, *extra):
    return run_cli(
        "-m",
        "hparams_search=quickstart",
        f"hydra.sweeper.n_trials={n_trials}",
        f"output_dir={tmp_path}/runs",
        f"hydra.sweep.dir={tmp_path}/{sweep}",
        *TINY,
        *extra,
        cwd=tmp_path,
    )


def experiments(sweep_dir):
    """Each job's experiment directory, by job number (the sweep directory's pointer files)."""
    pointers = glob.glob(os.path.join(sweep_dir, "*", analysis.POINTER))
    return {int(os.path.basename(os.path.dirname(p))): open(p).read().strip() for p in pointers}


def snapshot(directories):
    paths = [p for d in directories for p in glob.glob(f"{d}/**", recursive=True)]
    return sorted((p, os.stat(p).st_mtime_ns, os.path.getsize(p)) for p in paths)


@pytest.mark.slow
def test_an_optuna_search_resumes_its_study_and_sees_each_trials_objective(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    import optuna
    from optuna.trial import TrialState

    first = search(tmp_path, 3, "sweep1")
    assert first.returncode == 0, first.stderr
    before = trials(tmp_path)
    assert [t.number for t in before] == [0, 1, 2] and all(t.state == TrialState.COMPLETE for t in before)
    done = experiments(tmp_path / "sweep1")
    assert len(done) == 3 and len(set(done.values())) == 3
    untouched = snapshot(done.values())

    # As a kill mid-trial leaves it: a trial still running (3). Queued by hand: a trial that fails (4).
    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{tmp_path}/runs/optuna/quickstart.db")
    study.enqueue_trial({"pruning.rate": 0.3, "rewind": "20it"})
    running = study.ask()  # the queued trial, with its parameters
    running.suggest_float("pruning.rate", 0.1, 0.9)
    running.suggest_categorical("rewind", ["0it", "20it", "99it"])
    study.enqueue_trial({"pruning.rate": 0.5, "rewind": "99it"})  # past the end of training: an error line

    # n_trials is the study's total: 3 more to 6; the interrupted trial is marked failed and run again (5).
    second = search(tmp_path, 6, "sweep2")
    assert "optuna study quickstart (sqlite:///" in second.stdout
    assert "3 of 6 trials finished, 1 interrupted (run again first); running 3 more" in second.stdout
    assert second.returncode == 2  # a sweep with a failed job says so at its end, after the others ran
    assert (
        second.stderr.strip()
        .splitlines()[-1]
        .startswith("error: 1 of 3 sweep jobs did not finish (the others did): job 0 (")
        and "Traceback" not in second.stderr
    )
    assert "float-castable" not in second.stdout  # the sweeper's report of the failed trial's None: its line said why
    after = trials(tmp_path)
    assert [t.number for t in after] == [0, 1, 2, 3, 4, 5, 6]
    assert [t.state for t in after[3:]] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert after[3].user_attrs["interrupted"] and after[5].params == running.params == {
        "pruning.rate": 0.3,
        "rewind": "20it",
    }
    assert [(t.params, t.value) for t in after[:3]] == [(t.params, t.value) for t in before]
    assert snapshot(done.values()) == untouched  # earlier trials: not run again
    added = experiments(tmp_path / "sweep2")
    assert sorted(added) == [1, 2] and not set(added.values()) & set(done.values())

    # What the sweeper saw is what each trial's directory holds; the report reads a search as a sweep.
    for number, directory in [*done.items(), *((4 + job, d) for job, d in added.items())]:
        with open(os.path.join(directory, objective.FILE)) as f:
            (written,) = json.load(f).values()
        assert after[number].value == written["value"]
    assert report.main([str(tmp_path / "sweep2"), "--output", str(tmp_path / "figures")]) == 0

    third = search(tmp_path, 6, "sweep3")  # the same command again: the study has its trials
    assert third.returncode == 0, third.stderr
    assert "6 of 6 trials finished; nothing to run" in third.stdout and len(trials(tmp_path)) == 7


def study_start(tmp_path, monkeypatch, *searched):
    """``OptunaStudy`` as ``-m hparams_search=quickstart *searched`` starts it: the exit code of a
    refusal, else None."""
    from hydra import compose, initialize_config_dir
    from omegaconf import read_write
    from lottery.search import OptunaStudy

    monkeypatch.setattr(OptunaStudy, "opened", OptunaStudy.opened)  # the study it opens: forgotten after the test
    callback = OptunaStudy()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        config = compose(
            config_name="config",
            overrides=["hparams_search=quickstart", f"output_dir={tmp_path}/runs"],
            return_hydra_config=True,
        )
        with read_write(config):  # as a multirun's command line gives them (compose refuses sweeps)
            config.hydra.overrides.task += list(searched)
        try:
            callback.on_multirun_start(config)
        except SystemExit as exited:
            return exited.code
        finally:
            if callback.lock is not None:
                callback.lock.close()


@pytest.mark.slow
def test_a_search_space_the_config_or_the_study_cannot_take_is_one_line_before_the_study_is_touched(
    tmp_path, capsys, monkeypatch
):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    import optuna
    from optuna.trial import TrialState

    # A bound the config refuses: said before any trial draws it; no storage is made.
    assert study_start(tmp_path, monkeypatch, "pruning.rate=interval(0.1,1.5)") == 2
    assert (
        capsys.readouterr().err == "error: pruning.rate=interval(0.1,1.5): a trial could draw 1.5: pruning.rate=1.5 "
        "must be in (0, 1): the fraction of remaining weights pruned per level; the study was not touched\n"
    )
    assert not os.path.exists(tmp_path / "runs")
    # Another kind of search of a key the study searched: optuna would raise with a trial left running.
    os.makedirs(tmp_path / "runs" / "optuna")
    study = optuna.create_study(study_name="quickstart", storage=f"sqlite:///{tmp_path}/runs/optuna/quickstart.db")
    trial = study.ask()
    trial.suggest_categorical("pruning.rate", [0.2, 0.4, 0.6])
    study.tell(trial, 0.9)
    capsys.readouterr()  # optuna's notes of the set-up
    assert study_start(tmp_path, monkeypatch, "pruning.rate=interval(0.1,0.9)") == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert (
        line
        == "error: pruning.rate=interval(0.1,0.9): optuna study quickstart searched it as choice(0.2,0.4,0.6); "
        "a study keeps each key's search: name another study (hydra.sweeper.study_name=...)"
        and len(line) < 200
    )
    assert [t.state for t in trials(tmp_path)] == [TrialState.COMPLETE]


@pytest.mark.slow
def test_an_error_in_the_sweeper_leaves_no_trial_of_the_sweep_running(tmp_path, monkeypatch):
    """The sweeper asks for a trial before it configures and launches it: an error in between (not an
    interruption, whose trials run again first) must not leave the trial running."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    import optuna
    from optuna.trial import TrialState
    from lottery import search

    assert study_start(tmp_path, monkeypatch) is None  # a new study, for this sweep
    study = optuna.create_study(
        study_name="quickstart", storage=f"sqlite:///{tmp_path}/runs/optuna/quickstart.db", load_if_exists=True
    )
    study.ask()  # and then the error
    search.fail_running()
    assert [t.state for t in trials(tmp_path)] == [TrialState.FAIL]
