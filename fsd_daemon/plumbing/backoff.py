"""One capped exponential backoff, used wherever a retry delay is computed.

Invariant: the delay never exceeds ``cap`` and never overflows, however many failures in a
row (``2 ** n`` is only computed up to the exponent that reaches the cap, so a six-hour
outage with a failure every second stays a plain float computation).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field


def backoff_step(failures: int, base: float, cap: float) -> float:
    """``base * 2 ** (failures - 1)`` capped at ``cap``; 0 for no failure. Never overflows."""
    if failures <= 0 or base <= 0:
        return 0.0
    if cap <= base:
        return cap
    # The exponent at which the cap is reached; anything above it is the cap.
    limit = math.ceil(math.log2(cap / base)) + 1
    if failures > limit:
        return cap
    return min(cap, base * 2.0 ** (failures - 1))


def jittered(step: float, rand: Callable[[float, float], float] = random.uniform) -> float:
    """ "Equal jitter": between half the step and the step, so a restarted cluster is not
    hit by every client at once, and never above the step."""
    return step / 2 + rand(0.0, step / 2)


@dataclass
class Backoff:
    """Failure counter with the delay it implies: ``failed()`` returns the next delay,
    ``succeeded()`` resets it."""

    base: float
    cap: float
    jitter: bool = True
    failures: int = 0
    _rand: Callable[[float, float], float] = field(default=random.uniform, repr=False)

    def failed(self) -> float:
        self.failures += 1
        return self.delay()

    def delay(self) -> float:
        step = backoff_step(self.failures, self.base, self.cap)
        return jittered(step, self._rand) if self.jitter else step

    def succeeded(self) -> None:
        self.failures = 0
