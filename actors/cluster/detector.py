"""The phi accrual failure detector (Hayashibara et al.; as Akka and Cassandra use it), pure.

Each reply to a heartbeat is recorded with its arrival time. From the intervals between
replies (a sliding window) the detector estimates their mean and standard deviation, then
says how surprising the current silence is: ``phi = -log10(P(an interval this long))`` under
a normal distribution whose mean is lengthened by ``acceptable_pause`` (a pause that must not
count as a failure). phi 1 means a 10 % chance of a mistake if the host is declared down now,
phi 8 one in a hundred million. Akka computes the same with a logistic approximation; this one
uses ``math.erfc``, exact where it matters and never overflowing.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["HostHealth", "PhiAccrualDetector", "phi"]

HostHealth = Literal["up", "suspect", "down"]


def phi(elapsed: float, mean: float, std: float) -> float:
    """-log10 of the probability that a normal interval (``mean``, ``std``) is at least
    ``elapsed`` long: exact below 8 standard deviations, the tail's asymptote beyond."""
    x = (elapsed - mean) / (std * math.sqrt(2))
    if x < 5.5:
        return -math.log10(0.5 * math.erfc(x))
    # erfc(x) ~ exp(-x^2) / (x sqrt(pi)) (1 - 1/(2x^2)): no underflow however long the silence
    return (
        (x * x) / math.log(10)
        + math.log10(2 * x * math.sqrt(math.pi))
        - math.log10(1 - 1 / (2 * x * x))
    )


@dataclass
class PhiAccrualDetector:
    """One monitored host's heartbeat history."""

    expected_interval: float
    acceptable_pause: float = 2.0
    threshold: float = 8.0
    suspect_threshold: float = 3.0
    min_std: float = 0.1
    window: int = 200
    intervals: deque[float] = field(default_factory=deque)
    last: float | None = None

    def heartbeat(self, now: float) -> None:
        """A reply arrived at ``now``."""
        if self.last is not None:
            # A gap over 3 expected intervals is a pause, which ``acceptable_pause`` accounts
            # for; recorded, it would widen the distribution for the next ``window`` replies
            # and slow down the detection of a real failure (after a start-up stall or a few
            # tolerated SIGSTOPs), so it is left out of the history.
            gap = max(0.0, now - self.last)
            if gap <= 3 * self.expected_interval:
                self.intervals.append(gap)
            if len(self.intervals) > self.window:
                self.intervals.popleft()
        self.last = now

    def phi(self, now: float) -> float:
        """The suspicion at ``now`` (0 before the first reply)."""
        if self.last is None:
            return 0.0
        if self.intervals:
            mean = sum(self.intervals) / len(self.intervals)
            var = sum((x - mean) ** 2 for x in self.intervals) / len(self.intervals)
        else:  # one reply so far: assume the expected interval, as Akka's first-heartbeat does
            mean, var = self.expected_interval, (self.expected_interval / 4) ** 2
        std = max(math.sqrt(var), self.min_std)
        return phi(now - self.last, mean + self.acceptable_pause, std)

    def health(self, now: float) -> HostHealth:
        """``up``, ``suspect`` or ``down`` at ``now``."""
        value = self.phi(now)
        if value >= self.threshold:
            return "down"
        if value >= self.suspect_threshold:
            return "suspect"
        return "up"
