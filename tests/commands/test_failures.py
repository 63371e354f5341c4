"""Every failure is one clear line: the file system, result files, checkpoints, Ctrl-C, sweeps.

Each case runs the command as a user does and checks that stderr holds the one line that matters
(`error: <path or key>: ...`, exit code 2; `interrupted: ...`, 130), with nothing after or around it,
and that nothing finished is lost.
"""

import errno
import gc
import glob
import io
import json
import logging
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from rich.console import Console

from conftest import child_env, compose_config, run_cli
from lottery import imp
from lottery.training import loop
from lottery.errors import LotteryError, describe

QUIET = Console(file=io.StringIO())
FAST = ["levels=1", "training.steps=2ep", "training.eval_every=20it", "progress=false"]


def lines(text):
    return [line for line in text.splitlines() if line.strip()]


def experiment_dir(cwd):
    (directory,) = glob.glob(str(cwd / "runs" / "quickstart-*"))
    return pathlib.Path(directory)


# --- the file system ------------------------------------------------------------------------------


@pytest.mark.slow
def test_output_dir_that_is_a_file(tmp_path):
    (tmp_path / "runs").write_text("not a directory")
    result = run_cli(*FAST, cwd=tmp_path)
    assert result.returncode == 2
    (line,) = lines(result.stderr)
    assert line.startswith(f"error: {os.path.join('runs', 'quickstart-')}")
    assert line.endswith(
        ": Not a directory; a part of this path is a file, not a directory; choose another output_dir=... "
        "(or move the file)"
    )


@pytest.mark.parametrize(
    "number, advice",
    [
        (
            errno.ENOSPC,
            "finished results are intact: free some space (or choose another output_dir) and run the same command",
        ),
        (errno.EROFS, "choose a writable place with output_dir=..."),
        (errno.EACCES, "make it writable"),
        (errno.ENAMETOOLONG, "choose a shorter name=..."),
    ],
)
def test_operating_system_errors_become_one_line_with_the_path_and_what_to_do(number, advice):
    direct = OSError(number, os.strerror(number), "/results/x")
    assert describe(direct) == f"/results/x: {os.strerror(number)}; " + describe(direct).split("; ", 1)[1]
    assert advice in describe(direct)
    try:  # behind another exception, as orbax raises them
        try:
            raise direct
        except OSError as error:
            raise ValueError("save failed") from error
    except ValueError as wrapped:
        assert describe(wrapped) == describe(direct)
    # Quoted in a message only: Python's form and tensorstore's (behind orbax).
    assert describe(RuntimeError(f"failed: [Errno {number}] {os.strerror(number)}: '/results/x'")) == describe(direct)
    tensorstore = ValueError(
        f'RESOURCE_EXHAUSTED: Error writing "a/0" in OCDBT database at local file "/results/x/": '
        f"Failed to write 10 bytes to file 11: {os.strerror(number)} [os_error_code='{number}']"
    )
    assert describe(tensorstore) == describe(direct)
    assert describe(ValueError("nothing of the operating system")) is None


@pytest.fixture
def small_disk(tmp_path):
    """A 400 KiB tmpfs: a real full disk (needs the permission to mount, as root in CI has)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.slow
def test_disk_full_says_where_and_that_the_same_command_continues(small_disk, tmp_path):
    command = [
        "levels=1",
        f"output_dir={small_disk}",
        "training.steps=100it",
        "checkpoint_every=20it",
        "progress=false",
    ]
    full = run_cli(*command, cwd=tmp_path)
    assert full.returncode == 2, full.stderr
    (line,) = lines(full.stderr)  # nothing but the line: no orbax or asyncio tracebacks
    assert (
        line.startswith(f"error: {small_disk}/dense/lenet-digits-")
        and ": No space left on device; finished results are "
        "intact: free some space (or choose another output_dir) and run the same command to continue"
        in line
    )
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    again = run_cli(*command, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(glob.glob(f"{small_disk}/quickstart-*/replicate_0/level_*/metrics.json")) == 2


class FullDisk(io.StringIO):
    """A stream every write of which fails as on a full disk. Nothing is buffered, so closing it
    (pytest, logging.shutdown) never fails again later, outside the test."""

    def write(self, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.slow
def test_disk_full_with_wandb_on_names_the_path_and_prints_nothing_of_wandb(small_disk, monkeypatch, capfd, tmp_path):
    """W&B writes its debug.log from this process: on the full disk every record it cannot write
    printed a traceback, and closing the run raised a path-less ENOSPC that hid the checkpoint's.
    Only the debug log of this run (the handler whose file is on the small disk) is pointed at the
    full disk, and it is restored after: the ``wandb`` logger can hold handlers of earlier runs and
    of pytest itself, which must not be touched (issue 33)."""
    from lottery import tracking

    start = tracking.Tracker._start
    patched = []

    def debug_log_on_the_full_disk(self, *args):  # deterministic: W&B's own writes fill pages at random
        run = start(self, *args)
        for handler in logging.getLogger("wandb").handlers:
            if isinstance(handler, logging.FileHandler) and handler.baseFilename.startswith(f"{small_disk}{os.sep}"):
                monkeypatch.setattr(handler, "stream", FullDisk())
                patched.append(handler)
        return run

    wandb_logger = logging.getLogger("wandb")
    monkeypatch.setattr(wandb_logger, "handlers", list(wandb_logger.handlers))  # the list as it was, after
    foreign = logging.FileHandler(tmp_path / "application.log")  # another's handler on W&B's logger (as pytest's was)
    wandb_logger.addHandler(foreign)
    others = {h: h.stream for h in wandb_logger.handlers if isinstance(h, logging.StreamHandler)}
    monkeypatch.setattr(tracking.Tracker, "_start", debug_log_on_the_full_disk)
    cfg = compose_config(
        [
            "levels=1",
            f"output_dir={small_disk}",
            "training.steps=100it",
            "checkpoint_every=20it",
            "progress=false",
            "wandb.mode=offline",
        ]
    )
    with pytest.raises(Exception) as failed:
        imp.run(cfg, console=QUIET)
    assert patched, "W&B's debug log of the run was not found on the small disk"
    assert describe(failed.value).startswith(f"{small_disk}/dense/lenet-digits-")
    err = capfd.readouterr().err
    assert "Logging error" not in err and "wandb" not in err
    for handler, stream in others.items():  # what the test does not own is as it was
        assert handler.stream is stream, handler
    assert "handleError" not in vars(foreign)  # only W&B's debug logs are quieted
    foreign.close()


# --- result files -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "content, found",
    [
        ("1", "holds int"),
        ("{}", "holds an object without level"),
        ('{"level": 1}', "holds an object without replicate"),
    ],
)
def test_result_files_that_parse_but_are_not_results_are_named(small_config, content, found):
    imp.run(small_config("levels=1"), console=QUIET)
    metrics = os.path.join(imp.prepare(small_config()).level_dir(0, 1), "metrics.json")
    pathlib.Path(metrics).write_text(content)
    with pytest.raises(
        LotteryError, match=rf"{metrics}: {found}.*not a lottery result; it is corrupt: delete the directory"
    ):
        imp.run(small_config("levels=1"), console=QUIET)  # nothing trained: finished work re-read only
    with pytest.raises(LotteryError, match=rf"{metrics}: {found}"):
        imp.run(small_config("levels=2"), console=QUIET)
    assert not os.path.exists(imp.prepare(small_config()).level_dir(0, 2))  # nothing built on it


@pytest.mark.slow
@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda text: text.replace("name:", "name: [", 1), "cannot be read"),
        (lambda text: text.replace("seed: 0", "seed: 7"), "is not the identity of this experiment"),
    ],
)
def test_a_damaged_config_yaml_stops_the_run_before_any_work(small_config, damage, message):
    imp.run(small_config("levels=0"), console=QUIET)
    directory = imp.prepare(small_config()).directory
    config = pathlib.Path(directory, "config.yaml")
    config.write_text(damage(config.read_text()))
    with pytest.raises(LotteryError, match=rf"{config}: {message}"):
        imp.run(small_config("levels=1"), console=QUIET)
    assert not os.path.exists(imp.prepare(small_config()).level_dir(0, 1))


@pytest.mark.slow
def test_a_corrupt_finished_checkpoint_is_one_line(tmp_path):
    imp.run(compose_config([*FAST, f"output_dir={tmp_path / 'runs'}"]), console=Console(quiet=True))  # set-up, here
    trained = experiment_dir(tmp_path) / "replicate_0" / "level_1" / "trained"
    for path in trained.rglob("*"):
        if path.is_file() and path.stat().st_size > 200:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    result = run_cli(*FAST[1:], "levels=2", cwd=tmp_path)
    assert result.returncode == 2
    (line,) = lines(result.stderr)  # not followed by "RuntimeError: Event loop is closed"
    assert (
        re.fullmatch(
            rf"error: {trained.relative_to(tmp_path)}: cannot be read as a checkpoint \(\w+\); delete the "
            "level_1/ that holds it and run the same command to train it again",
            line,
        )
        and len(line) < 200
    )
    # In the shared dense store: the replicate is what to delete (its trained/ alone would be missing next time).
    (store,) = glob.glob(f"{tmp_path}/runs/dense/*/replicate_0")
    truncate(pathlib.Path(store, "trained"))
    other = compose_config([*FAST, "levels=0", "pruning.rate=0.5", f"output_dir={tmp_path / 'runs'}"])
    with pytest.raises(
        LotteryError,
        match=rf"^{store}/trained: cannot be read as a checkpoint \(\w+\); delete the "
        "replicate_0/ that holds it and run the same command to train it again$",
    ):
        imp.run(other, console=QUIET)
    shutil.rmtree(store)
    imp.run(other, console=QUIET)  # as it said: trained again
    # In a transfer's source: not this command's to train again.
    source = trained.parents[2]
    truncate(source / "replicate_0" / "level_1" / "ticket")
    with pytest.raises(
        LotteryError,
        match=rf"^{source}/replicate_0/level_1/ticket: cannot be read as a checkpoint "
        r"\(\w+\); delete the level_1/ that holds it and rerun the transfer source, then this command$",
    ):
        imp.prepare(compose_config([*FAST, f"transfer.source={source}", f"output_dir={tmp_path / 'runs'}"]))


def start(cwd, *args):
    return subprocess.Popen(
        [sys.executable, "-m", "lottery.run", *args],
        cwd=cwd,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# One evaluation, at the end: chunks end at checkpoints only (a resume with checkpoint_every=4000ep
# trains its 80,000 steps, tens of seconds, in one chunk).
LONG = ["levels=0", "training.steps=4000ep", "training.eval_every=4000ep", "checkpoint_every=40it", "progress=false"]


def checkpointed(cwd, stop=signal.SIGTERM):
    """Start a long level and stop it with ``stop`` once a checkpoint exists; its directory."""
    process = start(cwd, *LONG)
    deadline = time.time() + 300
    while not glob.glob(f"{cwd}/runs/dense/*/checkpoints/level_0/*/[0-9]*"):  # level 0 trains in the shared store
        assert time.time() < deadline and process.poll() is None, "no checkpoint was written"
        time.sleep(0.05)
    process.send_signal(stop)
    stdout, stderr = process.communicate(timeout=300)
    (directory,) = glob.glob(f"{cwd}/runs/dense/*/checkpoints/level_0/*")
    return process.returncode, stdout, stderr, pathlib.Path(directory)


def truncate(checkpoint):
    for path in checkpoint.rglob("*"):
        if path.is_file():
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.slow
def test_ctrl_c_writes_a_checkpoint_a_second_one_stops_at_once_and_unreadable_checkpoints_are_one_line(tmp_path):
    code, stdout, stderr, directory = checkpointed(tmp_path, signal.SIGINT)
    assert code == 130, stderr
    assert lines(stderr)[-1].startswith("interrupted: checkpoint written at level 0, step ") and lines(stderr)[
        -1
    ].endswith("(Ctrl-C); run the same command to continue")
    assert "Traceback" not in stderr and any(p.name.isdigit() for p in directory.iterdir())
    record = [json.loads(line) for line in open(experiment_dir(tmp_path) / "invocations.jsonl")]
    assert record[-1]["event"] == "end" and record[-1]["status"] == "preempted"
    # Twice, inside one long chunk: stopped there (no checkpoint, no finished level), one line, nothing lost.
    steps = sorted(p.name for p in directory.iterdir() if p.name.isdigit())
    process = start(tmp_path, *LONG[:-2], "checkpoint_every=4000ep", "progress=false")
    deadline = time.time() + 300
    while time.time() < deadline and "resuming" not in (process.stdout.readline() or "resuming"):
        pass
    time.sleep(1)  # into the chunk (or still compiling it)
    process.send_signal(signal.SIGINT)
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert lines(stderr) == [  # no traceback: JAX's gc callback once caught the KeyboardInterrupt and printed one
        "Ctrl-C: stopping at the end of the current chunk with a checkpoint (Ctrl-C again to stop at once)",
        "interrupted: stopped at once (Ctrl-C twice); finished results and the last checkpoint are intact: "
        "run the same command to continue",
    ]
    assert sorted(p.name for p in directory.iterdir() if p.name.isdigit()) == steps  # the checkpoints, no new one
    assert not glob.glob(f"{tmp_path}/runs/dense/*/replicate_0")  # the chunk (and level) did not run to its end
    record = [json.loads(line) for line in open(experiment_dir(tmp_path) / "invocations.jsonl")]
    assert record[-1] == {**record[-1], "event": "end", "status": "interrupted"}  # stopped, not failed
    (dense,) = glob.glob(f"{tmp_path}/runs/dense/*/invocations.jsonl")  # level 0 trains in the shared store
    assert json.loads(open(dense).readlines()[-1])["status"] == "interrupted"
    # Every checkpoint of the level unreadable: the next run says so in one line, never restarts silently.
    for step in (p for p in directory.iterdir() if p.name.isdigit()):
        truncate(step)
    failed = run_cli(*LONG, cwd=tmp_path)
    assert failed.returncode == 2
    (line,) = lines(failed.stderr)  # not buried in orbax's reports
    assert line.startswith(f"error: {directory.relative_to(tmp_path)}: no readable checkpoint (step ")
    assert "Failed to json parse" not in failed.stdout and "unreadable" not in failed.stdout


def test_a_second_ctrl_c_is_never_raised_into_library_code(monkeypatch):
    """Python runs a signal handler between any two bytecodes of the main thread, inside a gc
    callback too (JAX's ``_xla_gc_callback``), which prints an exception raised there and drops it:
    the run went on to the end of its chunk. The second Ctrl-C must wait for a known point."""
    ignored, sent = [], []
    monkeypatch.setattr(sys, "unraisablehook", ignored.append)

    def second_ctrl_c(phase, info):
        if not sent:  # once: a third Ctrl-C would end this process
            sent.append(phase)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs here, or at the next bytecode: in the callback

    preemption, before = loop.Preemption(), signal.getsignal(signal.SIGINT)
    with preemption:
        os.kill(os.getpid(), signal.SIGINT)  # the first: a checkpoint at the end of the chunk
        gc.callbacks.append(second_ctrl_c)
        try:
            gc.collect()
        finally:
            gc.callbacks.remove(second_ctrl_c)
        assert sent and [hook.exc_type for hook in ignored] == []
        with pytest.raises(KeyboardInterrupt):
            preemption.check()  # the training loop's next known point
    assert signal.getsignal(signal.SIGINT) is before and not preemption.at_once  # nothing left behind


# --- sweeps -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_sweep_with_a_bad_config_starts_nothing_and_names_every_bad_job(tmp_path):
    result = run_cli("-m", "pruning.rate=1.5,0.5,2.0", *FAST, cwd=tmp_path)
    assert result.returncode == 2
    (line,) = lines(result.stderr)
    assert line.startswith("error: 2 of 3 sweep jobs have a bad config, nothing was started: job 0 (pruning.rate=1.5")
    assert "job 2 (pruning.rate=2.0" in line and "job 1" not in line
    assert not glob.glob(f"{tmp_path}/runs/quickstart-*")


@pytest.mark.slow
def test_a_failed_sweep_job_does_not_cancel_the_others(tmp_path):
    result = run_cli(
        "-m",
        "dataset=mnist,digits",
        "dataset.download=false",
        f"dataset.root={tmp_path / 'nothing'}",
        *FAST,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    first, summary = lines(result.stderr)
    assert first.startswith("error: mnist: missing train-images-idx3-ubyte[.gz]") and "[job 0 (" in first
    assert first.endswith(")]") and "dataset=mnist," in first.split("[job 0 (")[1]
    assert summary.startswith("error: 1 of 2 sweep jobs did not finish (the others did): job 0 (")
    assert len(glob.glob(f"{tmp_path}/runs/quickstart-*/replicate_0/level_1/metrics.json")) == 1  # digits ran


# --- smaller ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_override_without_a_key(tmp_path):
    result = run_cli("=5", cwd=tmp_path)
    assert result.returncode == 2
    assert lines(result.stderr) == ["error: override '=5' has no key; write key=value, e.g. pruning.rate=0.5"]


@pytest.mark.slow
def test_a_compilation_cache_that_cannot_be_made_is_one_line_before_anything_runs(small_config, tmp_path):
    """Not JAX's warning at every compilation (the run went on without the cache)."""
    (tmp_path / "a_file").write_text("")
    for place, reason in (
        (tmp_path / "a_file" / "cache", "Not a directory"),
        (tmp_path / "a_file", "a file, not a directory"),
    ):
        with pytest.raises(LotteryError) as error:
            imp.run(small_config("levels=0", f"compilation_cache={place}"), console=QUIET)
        assert str(error.value) == (
            f"compilation_cache={place}: {reason}; choose a writable directory, or "
            "compilation_cache='' to compile without the cache"
        )
    assert not os.path.exists(tmp_path / "runs")


@pytest.mark.slow
def test_a_compilation_cache_from_the_environment_is_named_by_its_variable(small_config, tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("LOTTERY_JAX_CACHE", str(tmp_path / "a_file"))
    with pytest.raises(LotteryError) as error:
        imp.run(small_config("levels=0"), console=QUIET)
    assert str(error.value).startswith(f"LOTTERY_JAX_CACHE={tmp_path / 'a_file'}: a file, not a directory; ")
    with pytest.raises(LotteryError) as error:  # set as a key, the key is named, whatever the environment says
        imp.run(small_config("levels=0", f"compilation_cache={tmp_path / 'a_file'}"), console=QUIET)
    assert str(error.value).startswith(f"compilation_cache={tmp_path / 'a_file'}: a file, not a directory; ")


@pytest.mark.slow
def test_a_network_at_chance_is_reported(small_config, capfd):
    imp.run(small_config("levels=0", "optimizer.lr=1e6"), console=QUIET)
    err = capfd.readouterr().err
    assert "warning: level 0, replicate 0, ticket: test accuracy" in err and "is at chance (10% for 10 classes)" in err
    imp.run(small_config("levels=0"), console=QUIET)
    assert "at chance" not in capfd.readouterr().err


def test_a_sweeps_summary_names_the_jobs_that_failed_or_never_finished(tmp_path, monkeypatch):
    from lottery import sweeps

    monkeypatch.setattr(sweeps.SweepJobs, "directory", str(tmp_path))
    sweeps.write(str(tmp_path / "0"), "finished", label="job 0 (a=1)")
    sweeps.write(str(tmp_path / "1"), "failed", label="job 1 (a=2)", error="mnist: missing train-images")
    sweeps.write(str(tmp_path / "10"), "running", label="job 10 (a=3)")  # killed: it never wrote its end
    sweeps.write(str(tmp_path / "2"), "preempted", label="job 2 (a=4)")
    assert sweeps.summary() == (
        4,
        [
            "job 1 (a=2): mnist: missing train-images",
            "job 2 (a=4): preempted",
            f"job 10 (a=3): ended without a word (killed? out of memory? its log: {tmp_path / '10'})",
        ],
    )


def test_a_sweeps_last_line_counts_the_jobs_that_finished_rightly():
    from lottery import sweeps

    failed = ["job 0 (a=1): preempted", "job 1 (a=2): mnist: missing train-images"]
    assert sweeps.failed_line(2, failed) == (
        "error: none of the 2 sweep jobs finished: job 0 (a=1): preempted; job 1 (a=2): mnist: missing train-images"
    )
    assert sweeps.failed_line(1, failed[:1]) == "error: the sweep's one job did not finish: job 0 (a=1): preempted"
    assert sweeps.failed_line(3, failed) == (
        "error: 2 of 3 sweep jobs did not finish (the others did): job 0 (a=1): "
        "preempted; job 1 (a=2): mnist: missing train-images"
    )


@pytest.mark.slow
def test_a_sweep_with_hydra_flags_is_checked_job_by_job_and_bad_flags_are_one_line(tmp_path):
    # --config-name (a flag and its value) is not an override: the pre-check is skipped, the job checks itself.
    result = run_cli("-m", "--config-name", "config", "pruning.rate=1.5", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert lines(result.stderr)[-1].startswith(
        "error: the sweep's one job did not finish: job 0 (pruning.rate=1.5): pruning.rate=1.5 must be"
    )
    result = run_cli("-m", "--cfg", "job", cwd=tmp_path)  # Hydra refuses the pair: one line, not its traceback
    assert result.returncode == 2 and lines(result.stderr) == [
        "error: Only one of --run, --multirun, --cfg, --info and --shell_completion can be specified"
    ]
    result = run_cli("-m", "model=glob(nothing*)", cwd=tmp_path)  # a sweep of no job is not a success
    assert (
        result.returncode == 2
        and lines(result.stderr)[-1]
        == "error: the sweep has no job: its overrides expand to no value (an empty choice or glob)"
    )


SIGTERM_AT = """
import os, runpy, signal, sys
import lottery.imp.finish, lottery.imp.levels

where = sys.argv.pop(1)
def term_then(function):  # SIGTERM to this process as ``function`` starts, as a scheduler would send it
    def wrapped(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return function(*args, **kwargs)
    return wrapped
if where == "start-up":  # loading data and building the model: before any level
    lottery.imp.levels.prepare = term_then(lottery.imp.levels.prepare)
else:  # every level trained, the report (objective, figures, table) being written
    lottery.imp.finish.finish = term_then(lottery.imp.finish.finish)
sys.argv = ["lottery.run", *sys.argv[1:]]
runpy.run_module("lottery.run", run_name="__main__", alter_sys=True)  # python -m lottery.run, patched
"""


@pytest.mark.slow
@pytest.mark.parametrize("where", ["start-up", "after training"])
def test_sigterm_outside_training_ends_with_the_preempted_line_and_143_and_the_same_command_continues(tmp_path, where):
    """Inside training SIGTERM writes a checkpoint (the test above); before it and after it there
    is none to write: the command stops at once with the same line and exit code (issue 35; it
    was killed silently, exit -15)."""
    from conftest import child_env

    command = [sys.executable, "-c", SIGTERM_AT, where, *FAST]
    stopped = subprocess.run(command, cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=600)
    assert stopped.returncode == 143, stopped.stderr
    (line,) = lines(stopped.stderr)
    assert line == (
        "preempted: SIGTERM outside training (loading data, compiling, or writing the report); finished "
        "results are intact: run the same command to continue"
    )
    trained = glob.glob(f"{tmp_path}/runs/quickstart-*/replicate_0/level_*/metrics.json")
    assert len(trained) == (0 if where == "start-up" else 2)  # after training: every level kept
    again = run_cli(*FAST, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(glob.glob(f"{tmp_path}/runs/quickstart-*/replicate_0/level_*/metrics.json")) == 2
    assert "level" in again.stdout and os.path.isfile(
        glob.glob(f"{tmp_path}/runs/quickstart-*/accuracy_vs_sparsity.png")[0]
    )
