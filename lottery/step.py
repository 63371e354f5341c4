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
