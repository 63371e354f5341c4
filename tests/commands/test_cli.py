"""The command line as a user runs it: the quickstart, re-running it, and bad input."""

import concurrent.futures
import glob
import json
import os
import re
import shutil

import pytest

from conftest import REPO, run_cli


def tree_snapshot(root):
    """Every file and directory with its mtime and size; the lock file (which records the pid of
    the process holding the experiment) and the record of invocations are bookkeeping, not results."""
    paths = [
        p for p in glob.glob(f"{root}/**", recursive=True) if os.path.basename(p) not in ("lock", "invocations.jsonl")
    ]
    return sorted((p, os.stat(p).st_mtime_ns, os.path.getsize(p)) for p in paths)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """`python -m lottery.run` (the README command) with 3 levels, in a fresh directory."""
    cwd = tmp_path_factory.mktemp("quickstart")
    result = run_cli("levels=3", "progress=false", cwd=cwd)
    return cwd, result


@pytest.mark.slow
def test_quickstart_writes_levels_metrics_checkpoints_and_a_table(quickstart):
    cwd, result = quickstart
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "backend: cpu (1 x cpu)"  # what the run computes on, first
    (run_dir,) = glob.glob(str(cwd / "runs" / "quickstart-*"))
    assert os.path.isfile(os.path.join(run_dir, "config.yaml"))
    densities = []
    for level in range(4):
        level_dir = os.path.join(run_dir, "replicate_0", f"level_{level}")
        for entry in ("ticket", "trained"):
            assert os.path.isdir(os.path.join(level_dir, entry))
        with open(os.path.join(level_dir, "metrics.json")) as f:
            metrics = json.load(f)
        assert metrics["level"] == level
        densities.append(metrics["density"])
        row = next(line for line in result.stdout.splitlines() if line.strip("│ ").startswith(f"{level} "))
        assert f"{100 * metrics['density']:.2f}" in row
        assert f"{100 * metrics['final']['test_accuracy']:.2f}" in row
        assert str(metrics["early_stop"]["step"]) in row
        assert f"{metrics['wall_time_s']:.1f}" in row  # training time per level
    assert os.path.isdir(os.path.join(run_dir, "replicate_0", "level_0", "rewind_point"))
    assert densities[0] == 1.0 and all(a > b for a, b in zip(densities, densities[1:]))
    assert (
        "test acc" in result.stdout and "early-stop it" in result.stdout and "train time / network (s)" in result.stdout
    )


@pytest.mark.slow
def test_the_readmes_example_results_directory_is_the_quickstarts(quickstart):
    cwd, result = quickstart
    (run_dir,) = glob.glob(str(cwd / "runs" / "quickstart-*"))
    readme = (REPO / "README.md").read_text()
    shown = set(re.findall(r"runs/quickstart-([0-9a-f]{10})", readme))
    assert shown == {os.path.basename(run_dir).rsplit("-", 1)[1]}, "update the README's example directory"


@pytest.mark.slow
def test_rerunning_skips_finished_levels(quickstart):
    cwd, first = quickstart
    assert first.returncode == 0, first.stderr
    before = tree_snapshot(cwd / "runs")
    again = run_cli("levels=3", "progress=false", cwd=cwd)
    assert again.returncode == 0, again.stderr
    assert tree_snapshot(cwd / "runs") == before  # nothing retrained or rewritten
    assert again.stdout.count("│") == first.stdout.count("│")  # the same table
    (record,) = glob.glob(str(cwd / "runs" / "quickstart-*" / "invocations.jsonl"))
    *_, start, end = [json.loads(line) for line in open(record)]
    assert start["settings"]["levels"] == 3 and end["status"] == "finished" and end["added"] == []


# Each a command that must say one line and stop: two at a time (each mostly one core's work, most
# of it starting Python and JAX), from the first of these tests on, each in a copy of the
# quickstart's directory (its results as the README's command left them) of its own.
BAD_INPUTS = [
    (["pruning.rate=1.5"], r"pruning\.rate=1\.5 must be in \(0, 1\)"),
    (["pruning.rat=0.5"], r"Key 'rat' not in 'PruningConfig'"),
    (["pruning.rate=abc"], r"Value 'abc' of type 'str' could not be converted to Float"),
    (["+exp=nope"], r"Could not find 'exp/nope'; Available options in 'exp': conv2, conv4, conv6, lenet"),
    (["model.name=foo"], r"model\.name='foo' is not a model; choose one of: conv2, .*vgg"),
    (
        ["dataset.name=imagenet"],
        r"dataset\.name='imagenet' is not a data set; choose one of: cifar10, cifar100, cifar10_subset, digits",
    ),
    (["rewind=30ep"], r"rewind=30ep is at or past the end of training \(training\.steps=30ep\)"),
    (["rewind=500"], r"rewind='500' is not a point in training"),
    (["training.steps=0it"], r"training\.steps=0it must be longer than 0 iterations"),
    (["training.batch_size=5000"], r"training\.batch_size=5000 must be between 1 and the 1257 training examples"),
    (["pruning.ignore=[head/kernel]"], r"pruning\.ignore pattern 'head/kernel' matches no prunable parameter"),
    (
        ["dataset=mnist", "dataset.root=empty", "dataset.download=false"],
        r"mnist: missing train-images-idx3-ubyte\[\.gz\] in .*empty/mnist and dataset\.download=false",
    ),
]


@pytest.fixture(scope="module")
def bad_inputs(quickstart, tmp_path_factory):
    cwd, first = quickstart
    assert first.returncode == 0, first.stderr

    def run(args, copy):
        shutil.copytree(cwd, copy, symlinks=True)
        before = tree_snapshot(copy)
        return copy, before, run_cli(*args, "levels=3", "progress=false", cwd=copy)

    copies = [tmp_path_factory.mktemp("bad-input") / "cwd" for _ in BAD_INPUTS]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        yield {tuple(args): pool.submit(run, args, copy) for (args, _), copy in zip(BAD_INPUTS, copies)}


@pytest.mark.slow
@pytest.mark.parametrize("args, message", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_and_touches_nothing(bad_inputs, args, message):
    cwd, before, result = bad_inputs[tuple(args)].result()
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert re.search(message, lines[0]), lines[0]
    assert tree_snapshot(cwd) == before


def test_an_override_without_a_key_is_refused_and_the_others_pass():
    from lottery import run
    from lottery.errors import LotteryError

    run.check_overrides(["-m", "levels=3", "+exp=lenet", "~wandb", "pruning.rate=0.5"])  # nothing to say
    for argument in ("=5", "+=5", "~=x"):
        with pytest.raises(
            LotteryError,
            match=rf"^override '{re.escape(argument)}' has no key; write key=value, "
            r"e\.g\. pruning\.rate=0\.5$",
        ):
            run.check_overrides(["levels=3", argument])
