"""Where message faults apply: the active faults of one worker and their counters (pure).

The guardian sends every worker the faults active now (``_Faults``); before a user message
reaches ``handle``, the worker asks its ``FaultPoint`` whether one of them hits that message
(``protocols.faults`` says how faults match and trigger). Counters and random generators are
per fault and per worker path, so the same seed and the same message order hit the same
messages.
"""

from __future__ import annotations

import fnmatch
import random
from dataclasses import dataclass

from protocols.faults import START_FAULTS, MessageFault

__all__ = ["FaultHit", "FaultPoint", "StartFaults"]


@dataclass(frozen=True, slots=True)
class FaultHit:
    """A message a fault hit: which fault, the message's ordinal among those it matched here,
    and the seconds since the fault was injected."""

    fault: MessageFault
    ordinal: int
    at: float


_NOT_MESSAGES = ("start_failure", "slow_start", "slow_shutdown")


def _targets(fault: MessageFault, path: str) -> bool:
    return fnmatch.fnmatchcase(path, fault.target)


class FaultPoint:
    """The message faults active at one worker."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._active: list[tuple[MessageFault, float]] = []
        self._matched: dict[str, int] = {}
        self._hits: dict[str, int] = {}
        self._rngs: dict[str, random.Random] = {}

    @property
    def empty(self) -> bool:
        """No fault is active here."""
        return not self._active

    def set(self, faults: list[tuple[MessageFault, float]]) -> None:
        """Replace the active faults (``(fault, injected at)`` each); counters of faults still
        active are kept."""
        self._active = [(f, at) for f, at in faults if _targets(f, self.path)]
        ids = {f.id for f, _ in self._active}
        for table in (self._matched, self._hits, self._rngs):
            for key in [k for k in table if k not in ids]:
                del table[key]

    def decide(self, kind: str, sender: str | None, now: float) -> FaultHit | None:
        """The fault that hits a message of ``kind`` from ``sender`` arriving now, if any (the
        first active one whose trigger fires)."""
        for fault, injected in self._active:
            if fault.fault in _NOT_MESSAGES or not fault.matches(self.path, kind, sender):
                continue
            ordinal = self._matched.get(fault.id, 0) + 1
            self._matched[fault.id] = ordinal
            if fault.max_total is not None and self._hits.get(fault.id, 0) >= fault.max_total:
                continue
            rng = self.rng(fault)
            if fault.fires(ordinal, rng):
                self._hits[fault.id] = self._hits.get(fault.id, 0) + 1
                return FaultHit(fault, ordinal, max(0.0, now - injected))
        return None

    def slow_shutdown(self) -> float | None:
        """The seconds an active ``slow_shutdown`` fault holds this worker's stop, if any."""
        for fault, _ in self._active:
            if fault.fault == "slow_shutdown":
                return fault.seconds
        return None

    def active(self, fault_id: str) -> MessageFault | None:
        """The active fault ``fault_id`` here, if it still is."""
        return next((f for f, _ in self._active if f.id == fault_id), None)

    def rng(self, fault: MessageFault) -> random.Random:
        """The fault's generator here (for a delay's draw)."""
        rng = self._rngs.get(fault.id)
        if rng is None:
            rng = self._rngs[fault.id] = random.Random(f"{fault.seed}:{fault.id}:{self.path}")  # noqa: S311
        return rng


class StartFaults:
    """The ``start_failure`` and ``slow_start`` faults a supervisor applies to the workers it
    starts; their triggers count each worker's start attempts, across its incarnations."""

    def __init__(self) -> None:
        self._active: list[MessageFault] = []
        self._matched: dict[tuple[str, str], int] = {}
        self._hits: dict[str, int] = {}

    def set(self, faults: list[tuple[MessageFault, float]]) -> None:
        """Replace the active faults (those of other kinds are ignored)."""
        self._active = [f for f, _ in faults if f.fault in START_FAULTS]

    def decide(self, path: str) -> tuple[float, str | None]:
        """For a start of the worker at ``path``: the seconds to delay it and the reason to
        fail it with (None: it starts)."""
        delay, failure = 0.0, None
        for fault in self._active:
            if not _targets(fault, path):
                continue
            ordinal = self._matched[fault.id, path] = self._matched.get((fault.id, path), 0) + 1
            if fault.max_total is not None and self._hits.get(fault.id, 0) >= fault.max_total:
                continue
            rng = random.Random(f"{fault.seed}:{fault.id}:{path}:{ordinal}")  # noqa: S311
            if not fault.fires(ordinal, rng):
                continue
            self._hits[fault.id] = self._hits.get(fault.id, 0) + 1
            if fault.fault == "slow_start":
                delay += fault.seconds or 0.0
            elif failure is None:
                failure = f"injected start failure ({fault.id}, start {ordinal})"
        return delay, failure
