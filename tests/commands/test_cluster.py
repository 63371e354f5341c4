"""Cluster launches through hydra-submitit-launcher (conf/hydra/launcher/): the sbatch script a
SLURM sweep submits, a local sweep, and a job requeued at its time limit that resumes from its
checkpoint with the uninterrupted run's results."""

import glob
import io
import json
import os
import signal
import stat
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from rich.console import Console

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

from conftest import child_env, compose_config  # noqa: E402
from lottery import analysis, imp  # noqa: E402
from lottery.training import loop

TINY = ["training.steps=20it", "training.eval_every=10it", "progress=false", "wandb.mode=disabled"]

# A stand-in for SLURM's client commands: sbatch keeps the script it is given and refuses the job
# (so the launcher stops at once instead of polling the queue); srun only has to exist (submitit
# looks for it to decide that it is on a SLURM cluster).
FAKE_SLURM = {
    "sbatch": 'cp "$1" "$CAPTURE/script.sh"\n'
    'echo "sbatch: error: fake cluster, script kept, job refused" >&2\nexit 1\n',
    "srun": 'echo "fake srun: no cluster here" >&2\nexit 1\n',
}


def run_cli(*args, cwd, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "lottery.run", *args],
        cwd=cwd,
        env=env or child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def fake_slurm(directory):
    """A PATH entry with the fake commands; what sbatch is given lands in ``directory``."""
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    for name, body in FAKE_SLURM.items():
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return child_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", CAPTURE=str(directory))


@pytest.mark.slow
def test_a_slurm_sweep_submits_one_array_job_with_the_resources_and_the_time_limit_signal(tmp_path):
    launcher = {
        "nodes": 2,
        "tasks_per_node": 4,
        "gpus_per_node": 4,
        "timeout_min": 90,
        "signal_delay_s": 240,
        "partition": "gpu",
    }
    result = run_cli(
        "-m",
        "hydra/launcher=slurm",
        *[f"hydra.launcher.{k}={v}" for k, v in launcher.items()],
        "levels=0",
        "pruning.rate=0.2,0.5",
        *TINY,
        f"output_dir={tmp_path / 'runs'}",
        cwd=tmp_path,
        env=fake_slurm(tmp_path),
    )
    assert result.returncode != 0 and "fake cluster, script kept, job refused" in result.stderr, result.stderr
    script = (tmp_path / "script.sh").read_text()
    flags = {line for line in script.splitlines() if line.startswith("#SBATCH ")}
    for flag in (
        "--nodes=2",
        "--ntasks-per-node=4",
        "--gpus-per-node=4",
        "--cpus-per-task=8",
        "--partition=gpu",
        "--time=90",  # minutes
        "--signal=USR2@240",  # SIGUSR2 to every task 240 s before the limit: checkpoint, then requeue
        "--requeue",  # lets the job's own `scontrol requeue` work where the cluster's default forbids it
        "--array=0-1%2",
    ):  # one job per point of the sweep, all allowed to run at once
        assert f"#SBATCH {flag}" in flags, script
    assert not any(flag.startswith("#SBATCH --gpus-per-task") for flag in flags)
    (sweep_dir,) = glob.glob(str(tmp_path / "runs" / "multirun" / "*"))
    submitit_dir = os.path.join(sweep_dir, ".submitit")
    assert f"#SBATCH --output={submitit_dir}/%A_%a/%A_%a_0_log.out" in flags  # logs under the sweep directory
    command = script.splitlines()[-1]
    assert command.startswith("srun --unbuffered ") and command.endswith(f"-m submitit.core._submit {submitit_dir}/%j")


@pytest.mark.slow
def test_a_launcher_sweep_checks_every_jobs_config_before_submitting(tmp_path):
    result = run_cli(
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.nodes=2",
        "pruning.rate=0.2,1.5",
        *TINY,
        f"output_dir={tmp_path / 'runs'}",
        cwd=tmp_path,
        env=fake_slurm(tmp_path),
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: 1 of 2 sweep jobs have a bad config, nothing was started: "), result.stderr
    assert not (tmp_path / "script.sh").exists() and not (tmp_path / "runs").exists()


def test_the_signals_that_stopped_a_run_go_on_to_the_handlers_it_displaced():
    """submitit's SIGUSR2 handler (requeue) must still run, after the checkpoint; Ctrl-C's does not."""
    called, preemption = [], loop.Preemption()
    previous = signal.signal(signal.SIGUSR2, lambda number, frame: called.append(number))
    try:
        with preemption:
            os.kill(os.getpid(), signal.SIGUSR2)
            os.kill(os.getpid(), signal.SIGINT)
            assert called == [] and preemption.requested == "SIGINT"  # both only asked for a stop
        preemption.pass_on()
        assert called == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)


def experiments(runs):
    """The experiment directory of each job of the one sweep under ``runs``, by job number."""
    (sweep_dir,) = glob.glob(str(runs / "multirun" / "*"))
    pointers = sorted(glob.glob(os.path.join(sweep_dir, "[0-9]*", analysis.POINTER)))
    return [open(p).read() for p in pointers]


@pytest.mark.slow
def test_a_local_sweep_runs_each_job_to_the_end_and_names_the_jobs_that_failed_in_theirs(tmp_path):
    # A batch larger than the training set passes the pre-check (it needs the data) and fails in its job process.
    result = run_cli(
        "-m",
        "hydra/launcher=local",
        "levels=1",
        "pruning.rate=0.5",
        "training.batch_size=60,5000",
        *TINY,
        f"output_dir={tmp_path / 'runs'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith("error: 1 of 2 sweep jobs did not finish (the others did): job 1 (")
    assert summary.count("training.batch_size=5000 must be between 1 and the") == 1 and "job 0 (" not in summary
    densities = []
    for directory in experiments(tmp_path / "runs"):
        with open(os.path.join(directory, "replicate_0", "level_1", "metrics.json")) as f:
            densities.append(round(json.load(f)["density"], 1))
        assert json.loads(open(os.path.join(directory, "invocations.jsonl")).readlines()[-1])["status"] == "finished"
    assert densities == [0.5]


# Level 0 only, 200 steps with a checkpoint every 20: long enough for the signal to land in training.
LONG = [
    "levels=0",
    "training.steps=200it",
    "training.eval_every=50it",
    "checkpoint_every=20it",
    "progress=false",
    "wandb.mode=disabled",
]


def results(directory, cfg):
    """The level's metrics (but wall time) and every saved array."""
    experiment = imp.prepare(cfg)
    level_dir = os.path.join(directory, "replicate_0", "level_0")
    with open(os.path.join(level_dir, "metrics.json")) as f:
        metrics = json.load(f)
    metrics.pop("wall_time_s")
    arrays = {
        what: [np.asarray(a).tobytes() for a in jax.tree.leaves(experiment.load(level_dir, what))]
        for what in ("ticket", "trained")
    }
    return metrics, arrays


@pytest.mark.slow
def test_a_job_signalled_before_its_time_limit_is_requeued_and_resumes_from_its_checkpoint(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "lottery.run", "-m", "hydra/launcher=local", *LONG, f"output_dir={tmp_path / 'runs'}"],
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while not glob.glob(
            str(tmp_path / "runs" / "dense" / "*" / "checkpoints" / "level_0" / "*" / "*")
        ):  # level 0: shared
            assert process.poll() is None and time.time() < deadline, "training never reached its first checkpoint"
            time.sleep(0.01)
        # What submitit's local controller does signal_delay_s before timeout_min (to every task of
        # the job), without waiting for it: SIGUSR2 to the job's process, whose pid the lock holds.
        (lock,) = glob.glob(str(tmp_path / "runs" / "quickstart-*" / "lock"))
        os.kill(int(open(lock).read().split()[1]), signal.SIGUSR2)
        # While the job is requeued and resumes: the uninterrupted run, no launcher, in this process.
        reference = compose_config([*LONG, f"output_dir={tmp_path / 'reference'}"])
        imp.run(reference, console=Console(file=io.StringIO()))
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:  # a failed test: stop the sweep, its job controller and its job
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, stderr

    (directory,) = experiments(tmp_path / "runs")
    (log,) = glob.glob(str(tmp_path / "runs" / "multirun" / "*" / ".submitit" / "*" / "*_0_log.out"))
    log = open(log).read()
    assert "Requeued job" in log  # submitit's handler ran, after ours wrote the checkpoint
    assert "level 0: resuming 1 networks from the checkpoint at step " in log  # the requeued run
    records = [json.loads(line) for line in open(os.path.join(directory, "invocations.jsonl"))]
    statuses = [record["status"] for record in records if record["event"] == "end"]
    assert statuses == ["preempted", "finished"]
    assert not os.path.exists(os.path.join(directory, "checkpoints"))

    assert results(directory, reference) == results(imp.prepare(reference).directory, reference)
