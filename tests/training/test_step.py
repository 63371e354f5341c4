import pytest

from lottery.errors import LotteryError
from lottery.step import Step


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
