"""The objective (lottery/objective.py): values from a results tree written here with known numbers,
the checks that reject a bad spec before anything runs, and a real run's printed and written value."""

import io
import json
import os
import re

import pytest
from omegaconf import OmegaConf
from rich.console import Console

from conftest import compose_config
from lottery import analysis, imp
from lottery.analysis import objective
from lottery.config import ObjectiveConfig
from lottery.errors import LotteryError
from test_analysis import write_metrics

# Pruning rate 0.5: levels 0..3 at 100, 50, 25, 12.5% remaining, evenly spaced by log10(2) in x.
DENSITY = [1.0, 0.5, 0.25, 0.125]
EARLY = {0: [0.90, 0.92, 0.88, 0.80], 1: [0.94, 0.96, 0.90, 0.84]}  # ticket, replicate -> per level
REINIT = {0: [0.85, 0.80, 0.70], 1: [0.87, 0.82, 0.72]}  # random_reinit at levels 1..3
LMC = {1: 0.01, 3: 0.03}  # barrier of replicate 0 at the measured levels; replicate 1: + 0.001


@pytest.fixture(scope="module")
def df(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tree") / "quickstart-abcd"
    os.makedirs(directory)
    OmegaConf.save(OmegaConf.create({"name": "quickstart", "pruning": {"rate": 0.5}}), directory / "config.yaml")
    for r in (0, 1):
        for level, density in enumerate(DENSITY):
            level_dir = directory / f"replicate_{r}" / f"level_{level}"
            # final accuracy: the early-stop one - 0.02
            write_metrics(level_dir, r, level, "ticket", density, EARLY[r][level] - 0.02, EARLY[r][level], 100)
            if level:
                write_metrics(
                    level_dir / "random_reinit", r, level, "random_reinit", density, 0.5, REINIT[r][level - 1], 50
                )
            if level in LMC:
                os.makedirs(level_dir / "lmc")
                (level_dir / "lmc" / "metrics.json").write_text(json.dumps({"barrier": LMC[level] + 0.001 * r}))
    return analysis.load_runs(str(directory))


def spec(**fields):
    """An ``objective:`` config: the defaults with ``fields``."""
    return OmegaConf.merge(OmegaConf.structured(ObjectiveConfig), fields)


def test_accuracy_at_a_level_is_the_mean_over_replicates(df):
    result = objective.compute(spec(name="accuracy", level=2), df)
    assert result.value == pytest.approx(0.89) and result.replicates == pytest.approx({0: 0.88, 1: 0.90})
    assert result.levels == [2] and result.percent_remaining == [25.0]
    assert result.key == "accuracy(at=early_stop,kind=ticket,level=2)"
    final = objective.compute(spec(name="accuracy", at="final"), df)  # neither level nor remaining: the last level
    assert final.value == pytest.approx(0.80) and final.key == "accuracy(at=final,kind=ticket,level=3)"
    # Only this invocation's levels and replicates.
    assert objective.compute(spec(name="accuracy"), df, last_level=2, replicates=1).replicates == pytest.approx(
        {0: 0.88}
    )


@pytest.mark.parametrize("remaining, level", [(100, 0), (40, 1), (36, 1), (35, 2), (30, 2), (9, 3), (12.5, 3)])
def test_remaining_picks_the_level_closest_in_log_density(df, remaining, level):
    # The geometric midpoint of 50% and 25% is 35.36%; past the last level, 12.5 * sqrt(1/2) = 8.84%.
    result = objective.compute(spec(name="accuracy", remaining=remaining), df)
    assert result.levels == [level]
    assert result.value == pytest.approx((EARLY[0][level] + EARLY[1][level]) / 2)
    assert result.key == f"accuracy(at=early_stop,kind=ticket,remaining={float(remaining)})"


def test_a_target_past_the_last_level_was_not_reached(df):
    with pytest.raises(LotteryError, match=r"^objective.remaining=8.8: not reached; the last level, 3, has 12.5% "):
        objective.compute(spec(name="accuracy", remaining=8.8), df)
    with pytest.raises(LotteryError, match=r"objective.level=3: not reached"):
        objective.compute(spec(name="accuracy", level=3), df, last_level=2)


def test_a_control_is_read_beside_its_ticket(df):
    assert objective.compute(spec(name="accuracy", kind="random_reinit", level=1), df).value == pytest.approx(0.86)
    # A control's level 0 is the dense network it shares with the ticket.
    assert objective.compute(spec(name="accuracy", kind="random_reinit", level=0), df).value == pytest.approx(0.92)
    with pytest.raises(LotteryError, match="no finished random_prune networks"):
        objective.compute(spec(name="accuracy", kind="random_prune"), df)


def test_lmc_barrier_at_a_measured_level(df):
    result = objective.compute(spec(name="lmc_barrier", level=3), df)
    assert result.value == pytest.approx(0.0305) and result.key == "lmc_barrier(level=3)"
    assert objective.compute(spec(name="lmc_barrier", remaining=14), df).levels == [3]
    with pytest.raises(LotteryError, match=r"level 2 \(25% remaining\) has no LMC measurement; add it to lmc.levels"):
        objective.compute(spec(name="lmc_barrier", level=2), df)


def test_auc_is_the_mean_accuracy_over_log_density(df):
    # Levels evenly spaced in x: the trapezoids over 3 steps are (y0/2 + y1 + y2 + y3/2) / 3.
    whole = {r: (y[0] / 2 + y[1] + y[2] + y[3] / 2) / 3 for r, y in EARLY.items()}
    result = objective.compute(spec(name="auc"), df)
    assert result.replicates == pytest.approx(whole) and result.value == pytest.approx(0.9)
    assert result.levels == [0, 1, 2, 3] and result.key == "auc(at=early_stop,kind=ticket,level=3)"
    assert objective.compute(spec(name="auc", remaining=12.5), df).value == pytest.approx(0.9)  # the last level exactly
    assert objective.compute(spec(name="auc", level=1), df).value == pytest.approx(
        ((0.90 + 0.92) / 2 + (0.94 + 0.96) / 2) / 2
    )
    assert objective.compute(spec(name="auc", remaining=100), df).value == pytest.approx(
        0.92
    )  # the dense network alone


def test_auc_to_a_target_between_levels_interpolates_its_accuracy(df):
    # 100 / 2**1.5 = 35.36% remaining: x = 1.5 steps, accuracy there halfway between levels 1 and 2.
    result = objective.compute(spec(name="auc", remaining=100 / 2**1.5), df)
    expected = {}
    for r, y in EARLY.items():
        at_end = (y[1] + y[2]) / 2
        expected[r] = ((y[0] + y[1]) / 2 + 0.5 * (y[1] + at_end) / 2) / 1.5
    assert expected == pytest.approx({0: 0.91, 1: 0.948333333})
    assert result.replicates == pytest.approx(expected) and result.levels == [0, 1, 2]
    with pytest.raises(LotteryError, match=r"^objective.remaining=12: not reached"):
        objective.compute(spec(name="auc", remaining=12), df)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["objective.name=best"],
            "objective.name='best' is not an objective; choose one of: none, accuracy, auc, lmc_barrier",
        ),
        (["objective.level=2"], "objective.level=2 is set but objective.name=none computes nothing"),
        (["objective.name=accuracy", "objective.at=middle"], "objective.at='middle' is not an option"),
        (
            ["objective.name=accuracy", "levels=2", "objective.level=3"],
            "objective.level=3 must be one of the levels 0..2",
        ),
        (["objective.name=accuracy", "objective.level=1", "objective.remaining=3.6"], "are both set"),
        (["objective.name=accuracy", "objective.remaining=0"], "objective.remaining=0.0 must be a percentage"),
        (["objective.name=accuracy", "objective.kind=random_prune"], "add it: controls=[random_prune]"),
        (["objective.name=accuracy", "dataset.validation=0"], "objective.at=early_stop needs a validation set"),
        (
            ["objective.name=lmc_barrier", "levels=2", "lmc.levels=[1]"],
            "lmc_barrier at level 2: not measured; add it to lmc.levels",
        ),
        (["objective.name=lmc_barrier", "objective.remaining=10"], "needs LMC measurements: set lmc.levels"),
        (
            [
                "objective.name=lmc_barrier",
                "controls=[random_reinit]",
                "objective.kind=random_reinit",
                "lmc.levels=[1]",
                "objective.level=1",
            ],
            "measured for tickets only",
        ),
        (
            ["objective.name=accuracy", "controls=[random_reinit]", "objective.kind=random_reinit", "levels=0"],
            "objective.kind=random_reinit with levels=0: controls train at pruned levels only",
        ),
    ],
)
def test_a_bad_spec_is_rejected_before_anything_runs(overrides, message):
    with pytest.raises(LotteryError, match=re.escape(message)):
        imp.check(compose_config(overrides))


@pytest.mark.parametrize(
    "overrides, message",
    [  # fc layers at 0.2 per level, the output at 0.1: 64.8% at level 2
        (
            ["objective.name=accuracy", "objective.remaining=1"],
            "objective.remaining=1: not reached; the last level, 2, has 64.8% of weights remaining; add levels",
        ),
        (["objective.name=auc", "objective.remaining=40"], "objective.remaining=40: not reached; the last level, 2"),
        (
            ["objective.name=lmc_barrier", "objective.remaining=70", "lmc.levels=[1]"],
            "objective.name=lmc_barrier at objective.remaining=70: its level, 2 (64.8% remaining), is not measured",
        ),
    ],
)
def test_an_objective_the_levels_cannot_reach_is_refused_before_any_training(small_config, overrides, message):
    cfg = small_config(*overrides)  # levels=2
    with pytest.raises(LotteryError, match=re.escape(message)):
        imp.run(cfg, console=Console(file=io.StringIO()))
    assert not os.path.exists(cfg.output_dir)  # nothing trained, nothing written
    imp.prepare(small_config(*overrides, "levels=30", "lmc.levels=[2]"))  # reached with more levels


def test_objectives_live_beside_each_other_and_a_repeat_rewrites_nothing(df, tmp_path):
    first = objective.compute(spec(name="accuracy", level=2), df)
    objective.write(str(tmp_path), first)
    path = tmp_path / objective.FILE
    stamp = os.stat(path).st_mtime_ns
    objective.write(str(tmp_path), objective.compute(spec(name="accuracy", level=2), df))
    assert os.stat(path).st_mtime_ns == stamp  # the same value: untouched
    objective.write(str(tmp_path), objective.compute(spec(name="auc"), df))
    written = json.loads(path.read_text())
    assert set(written) == {first.key, "auc(at=early_stop,kind=ticket,level=3)"}
    assert written[first.key]["value"] == first.value and written[first.key]["replicates"] == {"0": 0.88, "1": 0.9}
    assert written[first.key]["levels"] == [2] and written[first.key]["percent_remaining"] == [25.0]
    assert "time" in written[first.key] and os.listdir(tmp_path) == [objective.FILE]  # no partial file left


@pytest.mark.slow
def test_a_run_prints_writes_and_returns_the_value_of_its_tree(small_config):
    out = io.StringIO()
    cfg = small_config(
        "levels=1", "replicates=2", "training.steps=2ep", "objective.name=accuracy", "objective.remaining=80"
    )
    results = imp.run(cfg, console=Console(file=out, width=200))
    directory = imp.prepare(cfg).directory
    expected = objective.compute(cfg.objective, analysis.load_runs(directory))
    assert results.objective == expected.value and len(expected.replicates) == 2
    assert expected.levels == [1] and expected.key == "accuracy(at=early_stop,kind=ticket,remaining=80.0)"
    written = json.loads(open(os.path.join(directory, objective.FILE)).read())
    assert written[expected.key]["value"] == expected.value
    line = (
        f"objective (accuracy at 80% remaining, level 1 at {expected.percent_remaining[0]:.4g}%, early stop, "
        f"mean of 2 replicates): {expected.value:.4f}"
    )
    assert line in out.getvalue()
    # Asked again for another objective, the finished experiment trains nothing and keeps both.
    again = imp.run(
        small_config("levels=1", "replicates=2", "training.steps=2ep", "objective.name=auc"),
        console=Console(file=io.StringIO()),
    )
    assert again.objective == objective.compute(spec(name="auc"), analysis.load_runs(directory)).value
    assert set(json.loads(open(os.path.join(directory, objective.FILE)).read())) == {
        expected.key,
        "auc(at=early_stop,kind=ticket,level=1)",
    }
    with open(os.path.join(directory, "invocations.jsonl")) as f:
        last = json.loads(f.readlines()[-1])
    assert last["event"] == "end" and last["added"] == []
