"""Points in training, written the same way everywhere: ``500it``, ``2ep``, ``1ep100it``.

Follows open_lth's ``foundations/step.py``: a step is stored as an iteration count and converted
from epochs with the data set's iterations per epoch (``len(train) // batch_size``: every batch is
full, so the compiled training loop has one shape).
"""

import dataclasses
import re

from lottery.errors import LotteryError

_PATTERN = re.compile(r"^\s*(?:(\d+)ep)?\s*(?:(\d+)it)?\s*$")


@dataclasses.dataclass(frozen=True, order=True)
class Step:
    iteration: int
    iterations_per_epoch: int = dataclasses.field(compare=False)

    @classmethod
    def parse(cls, text: str, iterations_per_epoch: int, key: str = "step") -> "Step":
        """Parse ``500it``, ``2ep`` or ``1ep100it``; ``key`` names the config entry in errors."""
        match = _PATTERN.match(str(text))
        if not match or not any(match.groups()):
            raise LotteryError(f"{key}={text!r} is not a point in training: expected e.g. 500it, 2ep or 1ep100it")
        epochs, iterations = (int(g) if g else 0 for g in match.groups())
        return cls(epochs * iterations_per_epoch + iterations, iterations_per_epoch)

    @classmethod
    def length(cls, text: str, iterations_per_epoch: int, key: str) -> int:
        """``text`` as a number of iterations that must be more than 0 (a length or an interval)."""
        iterations = cls.parse(text, iterations_per_epoch, key).iteration
        if iterations <= 0:
            raise LotteryError(f"{key}={text} must be longer than 0 iterations")
        return iterations

    @property
    def ep(self) -> int:
        return self.iteration // self.iterations_per_epoch

    @property
    def it(self) -> int:
        """Iterations into the current epoch."""
        return self.iteration % self.iterations_per_epoch

    def __str__(self) -> str:
        if self.ep and self.it:
            return f"{self.ep}ep{self.it}it"
        return f"{self.ep}ep" if self.ep else f"{self.it}it"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|min|h)\s*$")
_SECONDS = {"s": 1.0, "min": 60.0, "h": 3600.0}


@dataclasses.dataclass(frozen=True)
class Every:
    """How often a level writes a checkpoint (config ``checkpoint_every``): every ``steps``
    iterations (``500it``, ``10ep``), or at the first epoch end after ``seconds`` of training since
    the level started in this process or since its last checkpoint (``30s``, ``5min``, ``1h``): then
    chunks end at least at every epoch, to look at the clock there. Where a checkpoint falls changes no bit
    (a resumed run is bitwise the run that was not stopped), so a wall-clock interval is as exact as
    a step count; it costs nothing on a level shorter than it (no checkpoint is written)."""

    steps: int = 0
    seconds: float = 0.0

    @classmethod
    def parse(cls, text: str, iterations_per_epoch: int, key: str) -> "Every":
        match = _DURATION.match(str(text))
        if match:
            seconds = float(match.group(1)) * _SECONDS[match.group(2)]
            if seconds <= 0:
                raise LotteryError(f"{key}={text} must be longer than 0 seconds")
            return cls(seconds=seconds)
        steps = _PATTERN.match(str(text))
        if not steps or not any(steps.groups()):
            raise LotteryError(
                f"{key}={text!r} is not an interval: expected steps (500it, 2ep, 1ep100it) or a duration "
                f"(30s, 5min, 1h)"
            )
        return cls(steps=Step.length(text, iterations_per_epoch, key))

    def stops(self, start: int, end: int, iterations_per_epoch: int) -> set:
        """The steps in (start, end) where a chunk ends to write a checkpoint (steps) or to look at
        the clock (a duration: every epoch's end)."""
        every = self.steps or iterations_per_epoch
        first = (start // every + 1) * every if self.seconds else start + every
        return set(range(first, end, every))

    def due(self, seconds_since: float) -> bool:
        """Whether a checkpoint is due at one of ``stops``, ``seconds_since`` the last (or the start)."""
        return not self.seconds or seconds_since >= self.seconds
