"""Ticket transfer (lottery/transfer.py): a transferred ticket starts bitwise from the source's mask
and weights, its controls from the source's weights, the source is part of the hash and of
metrics.json, and what cannot be transferred is one line before anything is written."""

import io
import json
import os
import shutil

import jax
import numpy as np
import pytest
from rich.console import Console

from conftest import compose_config
from lottery import imp
from lottery.results import identity as config
from lottery.pruning import masks as pruning
from lottery.errors import LotteryError

QUIET = Console(file=io.StringIO())
# The source: Adam, rewinding to step 20 (θk differs from θ0), 2 replicates, 2 levels.
SOURCE = [
    "model.hidden=[64,32]",
    "training.steps=60it",
    "training.eval_every=20it",
    "levels=2",
    "replicates=2",
    "rewind=20it",
    "progress=false",
]
# The target: SGD, trained longer, the random-mask and reinit controls beside the tickets.
TARGET = [
    "model.hidden=[64,32]",
    "training.steps=100it",
    "training.eval_every=50it",
    "levels=2",
    "replicates=2",
    "optimizer=sgd",
    "optimizer.lr=0.05",
    "optimizer.momentum=0.9",
    "controls=[random_prune,random_reinit]",
    "progress=false",
]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer")
    cfg = compose_config([*SOURCE, f"output_dir={root}"])
    imp.run(cfg, console=QUIET)
    return root, imp.prepare(cfg)


def leaves(tree):
    return [np.asarray(a) for a in jax.tree.leaves(tree)]


def bitwise(a, b):
    return all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(leaves(a), leaves(b), strict=True))


@pytest.mark.slow
def test_a_transferred_ticket_starts_from_the_sources_mask_and_weights(source):
    root, found = source
    # The tickets first; the controls added by a second invocation to the finished levels (their
    # start read back through the transfer), as any experiment adds controls.
    imp.run(
        compose_config([*TARGET, "controls=[]", f"output_dir={root}", f"transfer.source={found.directory}"]),
        console=QUIET,
    )
    cfg = compose_config([*TARGET, f"output_dir={root}", f"transfer.source={found.directory}"])
    results = imp.run(cfg, console=QUIET)
    target = imp.prepare(cfg)
    assert cfg.transfer.source == found.directory  # the caller's config is left as given
    assert target.directory != found.directory
    for replicate in range(2):
        theta_k = found.rewind_point(replicate)
        for level in (1, 2):
            mine = target.load(target.level_dir(replicate, level), "ticket")
            theirs = found.load(found.level_dir(replicate, level), "ticket")
            assert bitwise(mine, theirs)  # mask, θk ⊙ mask and batch statistics, bit for bit
            metrics = json.load(open(os.path.join(target.level_dir(replicate, level), "metrics.json")))
            assert metrics["transfer"] == {
                "source": found.directory,
                "hash": found.directory.rsplit("-", 1)[1],
                "replicate": replicate,
                "level": level,
                "weights": "ticket",
            }
            assert metrics["start_step"] == 0  # trained from step 0 of the target's schedule
            # random_prune: another mask of the same per-layer counts on the source's θk (not on θk ⊙ mask)
            control = target.load(os.path.join(target.level_dir(replicate, level), "random_prune"), "ticket")
            assert pruning.counts(control["mask"], target.prunable) == pruning.counts(theirs["mask"], target.prunable)
            assert not bitwise(control["mask"], theirs["mask"])
            expected = jax.tree.map(lambda w, m: np.where(m, w, 0), theta_k["params"], control["mask"])
            assert bitwise(control["params"], expected)
            # random_reinit: the source's mask on fresh weights
            reinit = target.load(os.path.join(target.level_dir(replicate, level), "random_reinit"), "ticket")
            assert bitwise(reinit["mask"], theirs["mask"]) and not bitwise(reinit["params"], theirs["params"])
        # Level 0 is the target's own dense network, trained with its own optimizer.
        assert "transfer" not in json.load(open(os.path.join(target.level_dir(replicate, 0), "metrics.json")))
    assert {r["level"] for r in results} == {0, 1, 2}


@pytest.mark.slow
def test_init_weights_the_hash_and_the_command_line(source):
    root, found = source
    common = [*TARGET, "controls=[]", "replicates=1", "levels=1", f"output_dir={root}"]
    init = compose_config([*common, f"transfer.source={found.directory}", "transfer.weights=init"])
    imp.run(init, console=QUIET)
    target = imp.prepare(init)
    mine = target.load(target.level_dir(0, 1), "ticket")
    theta_0 = found.load(found.level_dir(0, 0), "ticket")["params"]
    mask = found.load(found.level_dir(0, 1), "ticket")["mask"]
    assert bitwise(mine["mask"], mask)
    assert bitwise(mine["params"], jax.tree.map(lambda w, m: np.where(m, w, 0), theta_0, mask))
    # The source is hashed by its identity, not its path, and not at all when unset.
    plain = imp.prepare(compose_config(common)).directory
    by_overrides = compose_config([*common, f"transfer.source='{' '.join(SOURCE)}'", "transfer.weights=init"])
    assert imp.prepare(by_overrides).directory == target.directory  # the same source, named by its overrides
    moved = root / "lr=0.1,elsewhere"  # a directory whose name looks like overrides is a directory
    os.symlink(found.directory, moved)
    assert (
        imp.prepare(compose_config([*common, f"transfer.source='{moved}'", "transfer.weights=init"])).directory
        == target.directory
    )
    assert (
        len(
            {
                plain,
                target.directory,
                imp.prepare(compose_config([*common, f"transfer.source={found.directory}"])).directory,
            }
        )
        == 3
    )
    assert "transfer" not in config.identity(compose_config(), "x")  # unset: every earlier hash unchanged


@pytest.mark.slow
def test_a_source_that_does_not_rewind_is_refused(tmp_path):
    """A source that retrains from trained weights (finetune) has tickets that do not start from
    θk under their masks: neither they nor random masks on θk would be what they are called."""
    cfg = compose_config([*SOURCE, "levels=1", "replicates=1", "retrain=finetune", f"output_dir={tmp_path}"])
    imp.run(cfg, console=QUIET)
    finetuned = imp.prepare(cfg).directory
    with pytest.raises(LotteryError, match=r"is retrain=finetune: its tickets do not start from its θk"):
        imp.prepare(
            compose_config(
                [*TARGET, "levels=1", "replicates=1", f"output_dir={tmp_path}", f"transfer.source={finetuned}"]
            )
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["model.hidden=[32,32]"],
            r"ticket has params hidden/0/bias of shape \(64,\), this experiment's model has "
            r"\(32,\); a ticket transfers to the same model",
        ),
        (["levels=3"], r"replicate_0/level_3 is not a finished level; the source must have levels 0\.\.3"),
        (["replicates=3"], r"replicate_2/level_0 is not a finished level"),
        (["rewind=20it"], r"rewind=20it: a transfer experiment trains its tickets from step 0"),
        (["controls=[invert]"], r"controls: invert reverses the ranking"),
        (
            ["rewind_optimizer=true"],
            r"rewind_optimizer=true: ticket transfer \(transfer.source is set\) makes this "
            r"experiment's tickets and does not use it; leave rewind_optimizer at false",
        ),
        (["transfer.weights=theta"], r"transfer.weights='theta' is not an option; choose one of: ticket, init"),
        (
            ["pruning.structure=neurons"],
            r"pruned weights; this experiment has pruning.structure=neurons: set "
            r"pruning.structure=weights",
        ),
    ],
)
def test_what_cannot_transfer_is_one_line(source, overrides, message):
    root, found = source
    cfg = compose_config([*TARGET, f"output_dir={root}", f"transfer.source={found.directory}", *overrides])
    with pytest.raises(LotteryError, match=message):
        imp.prepare(cfg)


@pytest.mark.slow
def test_a_source_whose_result_is_not_json_is_refused_in_one_line(source, tmp_path):
    root, found = source
    copy = tmp_path / os.path.basename(found.directory)  # the same experiment (by its config.yaml), damaged
    shutil.copytree(found.directory, copy)
    damaged = copy / "replicate_1" / "level_2" / "metrics.json"
    damaged.write_text('{"level": 2, "replic')
    cfg = compose_config([*TARGET, f"output_dir={tmp_path / 'runs'}", f"transfer.source={copy}"])
    with pytest.raises(LotteryError) as error:
        imp.prepare(cfg)
    assert str(error.value) == (
        f"transfer.source: {damaged}: not a readable lottery result; the source is damaged "
        f"there: delete {damaged.parent} and run the source experiment again"
    )
    assert not os.path.exists(tmp_path / "runs")


def test_a_missing_source_is_named_before_anything_is_written(tmp_path):
    cfg = compose_config(
        [
            "levels=1",
            "training.steps=20it",
            f"output_dir={tmp_path / 'runs'}",
            f"transfer.source={tmp_path / 'nothing'}",
        ]
    )
    with pytest.raises(LotteryError) as error:
        imp.run(cfg, console=QUIET)
    assert str(error.value) == (
        f"transfer.source: {tmp_path / 'nothing'} holds no experiment (no config.yaml); give an "
        "experiment's directory (<output_dir>/<name>-<hash>) or the overrides that run it, and "
        "run it first"
    )
    assert not os.path.exists(tmp_path / "runs")  # nothing written
