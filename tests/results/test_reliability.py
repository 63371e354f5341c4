"""Preemption-safe resume, faults and bad input: nothing lost, nothing silently redone."""

import ast
import concurrent.futures
import fcntl
import glob
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from rich.console import Console

from conftest import REPO, child_env, compose_config, run_cli
from lottery import imp
from lottery.training import loop
from lottery.results.store import LevelCheckpoints
from lottery.errors import LotteryError

# Long enough per level (160 steps, 5 checkpoints) for a kill to land inside training; checkpoints
# between evaluations (every 30 and 40 steps), so the running loss sum is part of what must be
# restored. LMC at level 1. (Was 300 steps, evaluations every 50: the same moments, twice the time.)
RUN = [
    "levels=2",
    "replicates=1",
    "controls=[random_prune]",
    "training.eval_every=40it",
    "checkpoint_every=30it",
    "lmc.levels=[1]",
    "lmc.points=3",
    "training.steps=160it",
    "progress=false",
]


def start(cwd, *extra, **env):
    env = child_env(**env)
    return subprocess.Popen(
        [sys.executable, "-m", "lottery.run", *RUN, *extra],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(pattern, process, timeout=300):
    """Block until a path matching ``pattern`` exists (or the process ends)."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if glob.glob(pattern):
            return True
        time.sleep(0.005)
    return False


def kill_at_each_then_finish(start_process, points) -> str:
    """Start the run and SIGKILL it once each of ``points`` (glob patterns) exists, then run it to
    the end with the same command; the last run's stdout."""
    for point in points:
        process = start_process()
        reached = wait_for(point, process)
        process.kill()
        process.wait()
        assert reached or process.returncode == 0, f"never reached {point}"
    final = start_process()
    stdout, stderr = final.communicate(timeout=300)
    assert final.returncode == 0, stderr
    return stdout


def results(cwd):
    """Every metrics.json (without wall times) and every saved array, by path."""
    (directory,) = glob.glob(str(cwd / "runs" / "quickstart-*"))
    experiment = imp.prepare(compose_config([*RUN, f"output_dir={cwd / 'runs'}"]))
    out = {}
    for path in sorted(glob.glob(f"{directory}/replicate_*/**/metrics.json", recursive=True)):
        metrics = json.load(open(path))
        metrics.pop("wall_time_s", None)  # (LMC measurements have none)
        out[os.path.relpath(path, directory)] = metrics
    for what in ("trained", "ticket", "copy_a", "copy_b"):
        for path in sorted(glob.glob(f"{directory}/replicate_*/**/{what}", recursive=True)):
            saved = experiment.load(os.path.dirname(path), what)
            out[os.path.relpath(path, directory)] = [np.asarray(a).tobytes() for a in jax.tree.leaves(saved)]
    return out


def stop_and_resume(cwd, system_tmp):
    """The stopped run of the test below, in ``cwd``: every stop and resume, with their checks."""
    runs = cwd / "runs" / "quickstart-*"
    stopped = lambda: start(cwd, "wandb.mode=offline", TMPDIR=str(system_tmp))
    # kill -9 inside level 0 (the shared dense store), after a checkpoint
    process = stopped()
    assert wait_for(f"{cwd}/runs/dense/*/checkpoints/level_0/*/*", process)
    process.kill()
    process.wait()
    # SIGTERM inside level 1: a checkpoint, one line, exit 143
    process = stopped()
    assert wait_for(f"{runs}/checkpoints/level_1/*/*", process)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("preempted: checkpoint written at level 1, step "), stderr
    assert glob.glob(f"{runs}/checkpoints/level_1/*/*")
    # resumed (not restarted), then kill -9 while level 1's results are being written; then inside
    # the last level, at a checkpoint (step 90, 70 steps before the end) holding two evaluations (40,
    # 80) W&B may have lost, and a running loss sum
    process = stopped()
    assert wait_for(f"{runs}/replicate_*/level_1.partial", process)
    process.kill()
    stdout, _ = process.communicate()
    assert "level 1: resuming 2 networks from the checkpoint at step" in stdout
    stdout = kill_at_each_then_finish(stopped, [f"{runs}/checkpoints/level_2/train-*/90"])
    assert "level 2: resuming 2 networks from the checkpoint at step" in stdout


@pytest.mark.slow
def test_kill_9_and_sigterm_at_any_moment_then_resume_is_bitwise_the_uninterrupted_run(tmp_path):
    """One experiment stopped at every kind of moment, W&B offline: each resume continues where the
    last left off; the end is bitwise the uninterrupted run, and every W&B row is logged once
    (``test_tracking_resume.assert_every_row_once``)."""
    cwd = tmp_path / "stopped"
    cwd.mkdir()
    runs = cwd / "runs" / "quickstart-*"
    system_tmp = tmp_path / "tmp"  # the children's temporary directory: W&B's are not to be left there
    system_tmp.mkdir()
    # The commands are started, watched and stopped from a thread, while the uninterrupted run
    # trains in this process (the same program as the command's; here, where its signal handlers
    # can be set): the two overlap on the machine's cores. The thread's failures are raised here.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        stops = pool.submit(stop_and_resume, cwd, system_tmp)
        reference = tmp_path / "uninterrupted"
        imp.run(compose_config([*RUN, f"output_dir={reference / 'runs'}"]), console=Console(quiet=True))
        stops.result()

    assert results(cwd) == results(reference)
    assert not glob.glob(f"{runs}/checkpoints")  # removed once everything is finished
    # W&B's temporary directories (made on import, removed at exit): inside the experiment, those of
    # the killed processes removed by the next run, the last run's at its exit; none in the system's.
    assert not glob.glob(str(system_tmp / "tmp*wandb-*"))
    assert os.listdir(glob.glob(f"{runs}/wandb/tmp")[0]) == []
    from test_tracking_resume import assert_every_row_once

    assert_every_row_once(glob.glob(str(runs))[0])


@pytest.mark.slow
def test_a_second_process_on_the_same_experiment_refuses(tmp_path):
    cfg = compose_config([*RUN, f"output_dir={tmp_path / 'runs'}"])
    directory = imp.prepare(cfg).directory
    os.makedirs(directory)
    with open(os.path.join(directory, "lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write("pid 12345 on elsewhere")
        lock.flush()
        result = run_cli(*RUN, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(
        f"error: {os.path.join('runs', os.path.basename(directory))} is in use by another process (pid 12345 on "
        "elsewhere)"
    )
    assert sorted(os.listdir(directory)) == ["lock"]  # nothing written


def test_unreadable_checkpoint_falls_back_to_the_previous_one(tmp_path, capfd):
    checkpoints = LevelCheckpoints(str(tmp_path / "ck"))
    like = {"w": np.zeros((3, 4), np.float32)}
    checkpoints.save(10, {"w": np.full((3, 4), 1.0, np.float32)}, {"step": 10})
    checkpoints.save(20, {"w": np.full((3, 4), 2.0, np.float32)}, {"step": 20})
    checkpoints.close()
    for path in pathlib.Path(tmp_path / "ck" / "20").rglob("*"):
        if path.is_file():
            path.write_bytes(b"\0garbage")  # every file of the newest checkpoint corrupt
    capfd.readouterr()
    step, arrays, meta = LevelCheckpoints(str(tmp_path / "ck")).latest(lambda meta: like)
    assert step == 10 and meta == {"step": 10} and np.all(np.asarray(arrays["w"]) == 1.0)
    out, err = capfd.readouterr()  # one warning, on stderr, and none of orbax's own reports
    assert [line for line in err.splitlines() if line] == [
        line for line in err.splitlines() if line.startswith(f"warning: {tmp_path / 'ck'}: checkpoint at step 20: ")
    ] and len(err.splitlines()) == 1
    assert err.rstrip().endswith("resuming from step 10") and "Failed to json parse" not in out + err
    for path in pathlib.Path(tmp_path / "ck" / "10").rglob("*"):
        if path.is_file():
            path.write_bytes(b"\0garbage")
    with pytest.raises(
        LotteryError, match=r"ck: no readable checkpoint \(step 20: .*; step 10: .*delete this directory"
    ):
        LevelCheckpoints(str(tmp_path / "ck")).latest(lambda meta: like)


@pytest.mark.slow
def test_corrupt_results_are_named_and_never_silently_redone(small_config, tmp_path):
    cfg = small_config("levels=1")
    import io
    from rich.console import Console

    imp.run(cfg, console=Console(file=io.StringIO()))
    experiment = imp.prepare(cfg)
    metrics = os.path.join(experiment.level_dir(0, 1), "metrics.json")
    with open(metrics, "r+") as f:
        f.truncate(50)
    with pytest.raises(LotteryError, match=rf"{metrics}: cannot be read as JSON"):
        imp.run(small_config("levels=2"), console=Console(file=io.StringIO()))
    assert os.path.getsize(metrics) == 50 and not os.path.exists(experiment.level_dir(0, 2))
    trained = os.path.join(experiment.level_dir(0, 0), "trained")
    for path in pathlib.Path(trained).rglob("*"):
        if path.is_file():
            path.write_bytes(b"")
    os.remove(metrics)  # level 1 now unfinished: it needs level 0's trained weights
    os.rename(experiment.level_dir(0, 1), experiment.level_dir(0, 1) + "_moved")
    # Emptied through level 0's hard links into the dense store: named with what to do (dense.damaged).
    with pytest.raises(
        LotteryError, match=rf"{trained}: damaged, and so is the dense store's copy it links to: delete "
    ):
        imp.run(cfg, console=Console(file=io.StringIO()))


@pytest.mark.slow
def test_a_corrupt_finished_control_is_named_before_anything_is_added(small_config, tmp_path):
    """A control's metrics.json that parses but is not a result: named, whatever reads it next."""
    import io
    from rich.console import Console

    cfg = small_config("levels=1", "controls=[random_reinit]")
    imp.run(cfg, console=Console(file=io.StringIO()))
    metrics = os.path.join(imp.prepare(cfg).level_dir(0, 1), "random_reinit", "metrics.json")
    with open(metrics, "w") as f:
        json.dump({"level": 1}, f)
    with pytest.raises(LotteryError, match=rf"{metrics}: holds an object without replicate, kind"):
        imp.run(small_config("levels=1", "controls=[random_reinit,random_prune]"), console=Console(file=io.StringIO()))
    assert not os.path.exists(os.path.join(imp.prepare(cfg).level_dir(0, 1), "random_prune"))


@pytest.mark.slow
def test_nan_loss_stops_the_level_with_a_message(tmp_path):
    result = run_cli("optimizer=sgd", "optimizer.lr=1e12", "levels=1", "progress=false", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: level 0, replicate 0, ticket: training loss is nan at step 20")
    assert not glob.glob(f"{tmp_path}/runs/quickstart-*/replicate_0/level_0")


@pytest.mark.parametrize(
    "override, message",
    [
        ("checkpoint_every=0it", r"checkpoint_every=0it must be longer than 0 iterations"),
        ("training.eval_every=0it", r"training\.eval_every=0it must be longer than 0 iterations"),
        ("training.steps=-5it", r"training\.steps='-5it' is not a point in training"),
        ("levels=-1", r"levels=-1 must be 0 or more"),
        ("replicates=0", r"replicates=0 must be 1 or more"),
        ("lmc.levels=[11]", r"lmc\.levels=\[11\] must be levels 0\.\.10"),
        ("lmc.points=1", r"lmc\.points=1 must be 2 or more"),
        (
            "pruning.criterion=snip pruning.examples=100000",
            r"pruning\.examples=100000 is more than the 1257 training examples of digits; set it "
            r"to at most 1257",
        ),
        ("controls=[bogus]", r"controls: 'bogus' is not a control; choose from: random_reinit, random_prune"),
        ("retrain=bogus", r"retrain='bogus' is not an option; choose one of: rewind, lr_rewind, finetune"),
        ("training.eval_batch_size=0", r"training\.eval_batch_size=0 must be positive"),
        ("optimizer.lr=-1", r"optimizer\.lr=-1\.0 must be a positive number"),
        ("optimizer.lr=nan", r"optimizer\.lr=nan must be a positive number"),
        ("optimizer.lr=inf", r"optimizer\.lr=inf must be a positive number"),
        ("optimizer.momentum=1.5", r"optimizer\.momentum=1\.5 must be in \[0, 1\)"),
        ("training.gamma=nan", r"training\.gamma=nan must be a positive number"),
        ("seed=4294967296", r"seed=4294967296 must be between 0 and 4294967295"),
        ("seed=-1", r"seed=-1 must be between 0 and 4294967295"),
        ("name=" + "x" * 300, r"name is 300 characters long; use 1 to 100"),
        (
            "model=vgg",
            r"model vgg \(depth 16\) halves its input 4 times .* at least 16x16 pixels; dataset digits has 8x8: "
            r"the input is too small for this model",
        ),
        (
            "pruning.ignore=[output/kernel,nothing/here]",
            r"pruning\.ignore pattern 'nothing/here' matches no prunable parameter",
        ),
        ("pruning.ignore=['conv(']", r"pruning\.ignore pattern 'conv\(' is not a regular expression \(missing \)"),
        ("mesh.members=3", r"mesh\.members=3 does not divide the 1 devices"),
        ("mesh.data=-1", r"mesh\.data=-1 must be a number of devices, or 0 for the rest"),
        ("mesh.members=2 mesh.data=2", r"mesh\.members=2 x mesh\.data=2 is more than the 1 devices"),
    ],
)
def test_bad_configuration_is_named(override, message, tmp_path):
    with pytest.raises(LotteryError, match=message):
        imp.prepare(compose_config([*override.split(), f"output_dir={tmp_path}"]))
    assert not os.listdir(tmp_path)


def test_no_pickle_anywhere_in_the_package():
    for path in (REPO / "lottery").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
            module = getattr(node, "module", None) or ""
            assert not any(n.split(".")[0] in ("pickle", "cPickle", "dill", "cloudpickle") for n in names + [module]), (
                path
            )
            if isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                assert getattr(node.value, "value", None) is False, path


@pytest.mark.slow
def test_wall_time_of_a_resumed_level_sums_every_process_that_trained_it(small_config, monkeypatch):
    import io
    import types

    from rich.console import Console

    from lottery.errors import Preempted

    clock = iter(range(0, 1000, 10))  # each reading of the training clock is 10 s after the one before
    # (checkpoint_every's durations read their own clock, time.monotonic: left still here)
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(time=lambda: float(next(clock)), monotonic=lambda: 0.0))

    class PreemptedAtOnce(loop.Preemption):
        def __enter__(self):
            super().__enter__()
            self.requested = "SIGTERM"  # as if SIGTERM arrived during the first compiled chunk
            return self

    cfg = small_config("levels=0")
    monkeypatch.setattr(loop, "PREEMPTION", PreemptedAtOnce())
    with pytest.raises(Preempted):
        imp.run(cfg, console=Console(file=io.StringIO()))  # clock 0 -> 10: 10 s saved with the checkpoint
    monkeypatch.setattr(loop, "PREEMPTION", loop.Preemption())
    imp.run(cfg, console=Console(file=io.StringIO()))  # clock 20 -> 30: 10 s more
    with open(os.path.join(imp.prepare(cfg).level_dir(0, 0), "metrics.json")) as f:
        assert json.load(f)["wall_time_s"] == 20.0
