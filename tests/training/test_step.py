import pytest

from lottery.errors import LotteryError
from lottery.step import Every, Step


@pytest.mark.parametrize(
    "text, iterations",
    [("500it", 500), ("2ep", 2 * 916), ("1ep100it", 916 + 100), ("0it", 0), ("0ep", 0), ("3ep0it", 3 * 916)],
)
def test_parse_converts_with_iterations_per_epoch(text, iterations):
    assert Step.parse(text, iterations_per_epoch=916).iteration == iterations


def test_epoch_and_iteration_parts_round_trip():
    step = Step.parse("1ep100it", 916)
    assert (step.ep, step.it) == (1, 100)
    assert str(step) == "1ep100it"
    assert str(Step.parse("2ep", 916)) == "2ep"
    assert str(Step.parse("15it", 916)) == "15it"
    assert str(Step.parse("1832it", 916)) == "2ep"  # the same point, written canonically


def test_steps_compare_by_iteration():
    assert Step.parse("1ep", 100) == Step.parse("100it", 100)
    assert Step.parse("1ep1it", 100) > Step.parse("100it", 100)


@pytest.mark.parametrize("text", ["500", "it", "2 epochs", "1.5ep", "-3it", "100it1ep", ""])
def test_malformed_step_names_the_key(text):
    with pytest.raises(LotteryError, match=r"^rewind=.*expected e\.g\. 500it, 2ep or 1ep100it"):
        Step.parse(text, 100, key="rewind")


@pytest.mark.parametrize(
    "text, every",
    [
        ("500it", Every(steps=500)),
        ("2ep", Every(steps=200)),
        ("30s", Every(seconds=30.0)),
        ("5min", Every(seconds=300.0)),
    ]
    + [("1h", Every(seconds=3600.0)), ("0.5s", Every(seconds=0.5))],
)
def test_an_interval_is_steps_or_a_duration(text, every):
    assert Every.parse(text, 100, "checkpoint_every") == every


def test_a_duration_looks_at_the_clock_at_every_epoch_end_and_steps_cut_where_they_fall():
    assert Every(steps=7).stops(3, 30, 10) == {10, 17, 24}  # from the range's start, as before durations
    assert Every(seconds=5.0).stops(3, 30, 10) == {10, 20}  # epoch ends inside (3, 30)
    assert Every(seconds=5.0).due(5.0) and not Every(seconds=5.0).due(4.9) and Every(steps=7).due(0.0)
    assert 15 not in Every(seconds=5.0).stops(3, 30, 10)  # not a stop of its own: never mid-epoch


@pytest.mark.parametrize("text", ["5m", "min", "-1s", "2 hours", "1.5ep"])
def test_a_malformed_interval_names_the_key_and_both_forms(text):
    with pytest.raises(LotteryError, match=r"^checkpoint_every=.*not an interval: expected steps .* or a duration"):
        Every.parse(text, 100, "checkpoint_every")
