"""Where faults apply: the decisions of injected faults, pure (no Thespian, no clock).

The guardian sends every actor the faults active now (``_Faults``); before a user message
reaches ``handle``, the worker asks its ``FaultPoint`` whether one of them hits that message
(``protocols.faults`` says how faults match and trigger). Counters and random generators are
per fault and per worker path, so the same seed and the same message order hit the same
messages. A supervisor asks its ``StartFaults`` how a worker's start is faulted; the guardian
asks ``resolve_pick`` which actors an ``ActorFault`` picks; a worker keeps the messages a
``reorder`` holds in ``ReorderWindows``.
"""

from __future__ import annotations

import fnmatch
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from protocols.faults import (
    START_FAULTS,
    ActorFault,
    FaultInjected,
    MessageFault,
    PickFixed,
    TargetPick,
)

__all__ = [
    "FaultHit",
    "FaultPoint",
    "ReorderWindows",
    "StartDecision",
    "StartFaults",
    "pick_paths",
    "pick_rng",
    "resolve_pick",
]

Fault = MessageFault | ActorFault


@dataclass(frozen=True, slots=True)
class FaultHit:
    """What a fault hit: which fault, the ordinal of the message (or start, or stop) among
    those it matched here, and the seconds since the fault was injected."""

    fault: Fault
    ordinal: int
    at: float

    def entry(self, path: str, message_kind: str = "") -> FaultInjected:
        """This hit as the journal records it."""
        return FaultInjected(
            fault_id=self.fault.id,
            fault=self.fault.fault,
            target=path,
            message_kind=message_kind,
            ordinal=self.ordinal,
            at=self.at,
        )


def pick_paths(live: Iterable[str], target: str, pick: TargetPick, rng: random.Random) -> list[str]:
    """The paths among ``live`` that ``target`` matches, chosen by ``pick`` with ``rng``
    (sorted; the choice depends on the sorted candidates and the generator only)."""
    candidates = sorted({p for p in live if fnmatch.fnmatchcase(p, target)})
    if not candidates or pick == "all":
        return candidates
    if pick == "one":
        size = 1
    elif isinstance(pick, PickFixed):
        size = min(pick.fixed, len(candidates))
    else:
        size = max(1, math.ceil(len(candidates) * pick.percent / 100))
    return sorted(rng.sample(candidates, size))


def pick_rng(fault: ActorFault) -> random.Random:
    """The generator an actor fault picks its targets with: its seed and its id."""
    return random.Random(f"{fault.seed}:{fault.id}")  # noqa: S311 - not for security


def resolve_pick(fault: ActorFault, live: Iterable[str]) -> ActorFault:
    """``fault`` with ``paths`` set to the live actors it picks (possibly none)."""
    paths = pick_paths(live, fault.target, fault.pick, pick_rng(fault))
    return fault.model_copy(update={"paths": paths})


def _hits_messages(fault: Fault) -> bool:
    return isinstance(fault, MessageFault) or fault.message_triggered


class _Counters:
    """Per-fault counters of matched and hit events, and generators, at one path."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.matched: dict[str, int] = {}
        self.hits: dict[str, int] = {}
        self.rngs: dict[str, random.Random] = {}

    def keep(self, ids: set[str]) -> None:
        for table in (self.matched, self.hits, self.rngs):
            for key in [k for k in table if k not in ids]:
                del table[key]

    def rng(self, fault: Fault) -> random.Random:
        rng = self.rngs.get(fault.id)
        if rng is None:
            seed = f"{fault.seed}:{fault.id}:{self.path}"
            rng = self.rngs[fault.id] = random.Random(seed)  # noqa: S311 - not for security
        return rng

    def trigger(self, fault: Fault, injected: float, now: float) -> FaultHit | None:
        """Count one matching event; the hit, if the fault's trigger fires (before its
        ``max_total``)."""
        ordinal = self.matched[fault.id] = self.matched.get(fault.id, 0) + 1
        if fault.max_total is not None and self.hits.get(fault.id, 0) >= fault.max_total:
            return None
        if not fault.fires(ordinal, self.rng(fault)):
            return None
        self.hits[fault.id] = self.hits.get(fault.id, 0) + 1
        return FaultHit(fault, ordinal, max(0.0, now - injected))


class FaultPoint:
    """The faults active at one worker."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._active: list[tuple[Fault, float]] = []
        self._messages = _Counters(path)
        self._stops = _Counters(path)

    @property
    def empty(self) -> bool:
        """No fault triggered by messages is active here."""
        return not any(_hits_messages(f) for f, _ in self._active)

    def set(self, faults: list[tuple[Fault, float]]) -> None:
        """Replace the active faults (``(fault, injected at)`` each); counters of faults still
        active are kept."""
        self._active = [(f, at) for f, at in faults if f.aims_at(self.path)]
        ids = {f.id for f, _ in self._active}
        self._messages.keep(ids)
        self._stops.keep(ids)

    def decide(self, kind: str, sender: str | None, now: float) -> FaultHit | None:
        """The fault that hits a message of ``kind`` from ``sender`` arriving now, if any (the
        first active one whose trigger fires)."""
        for fault, injected in self._active:
            if not _hits_messages(fault) or not fault.matches(self.path, kind, sender):
                continue
            hit = self._messages.trigger(fault, injected, now)
            if hit is not None:
                return hit
        return None

    def slow_shutdown(self, now: float) -> FaultHit | None:
        """The ``slow_shutdown`` fault that holds this stop request, if any (its trigger
        counts the stop requests of this incarnation)."""
        for fault, injected in self._active:
            if fault.fault == "slow_shutdown":
                hit = self._stops.trigger(fault, injected, now)
                if hit is not None:
                    return hit
        return None

    def active(self, fault_id: str) -> Fault | None:
        """The active fault ``fault_id`` here, if it still is."""
        return next((f for f, _ in self._active if f.id == fault_id), None)

    def rng(self, fault: Fault) -> random.Random:
        """The fault's generator here (for a delay's draw, a reorder's shuffle)."""
        return self._messages.rng(fault)


@dataclass
class ReorderWindows:
    """The messages (their keys) each ``reorder`` fault holds at one worker."""

    held: dict[str, list[int]] = field(default_factory=dict)

    def hold(self, fault_id: str, key: int, window: int) -> bool:
        """Hold ``key``; True when the fault's window is full (release it now)."""
        keys = self.held.setdefault(fault_id, [])
        keys.append(key)
        return len(keys) >= window

    def first(self, fault_id: str) -> bool:
        """Whether the fault's window holds exactly one message (it just opened)."""
        return len(self.held.get(fault_id, ())) == 1

    def release(self, fault_id: str, rng: random.Random | None) -> list[int]:
        """The keys the fault held, in the order to hand them on: shuffled by ``rng``, or in
        arrival order without one (the fault was healed meanwhile)."""
        keys = self.held.pop(fault_id, [])
        if rng is not None:
            rng.shuffle(keys)
        return keys


@dataclass(frozen=True, slots=True)
class StartDecision:
    """How one start of a worker is faulted: extra seconds, the failure (None: it starts),
    and the hits to journal."""

    delay: float = 0.0
    failure: str | None = None
    hits: tuple[FaultHit, ...] = ()


class StartFaults:
    """The ``start_failure`` and ``slow_start`` faults a supervisor applies to the workers it
    starts; their triggers count each worker's start attempts, across its incarnations."""

    def __init__(self) -> None:
        self._active: list[tuple[ActorFault, float]] = []
        self._counters: dict[str, _Counters] = {}

    def set(self, faults: list[tuple[Fault, float]]) -> None:
        """Replace the active faults (those of other kinds are ignored)."""
        self._active = [
            (f, at) for f, at in faults if isinstance(f, ActorFault) and f.fault in START_FAULTS
        ]
        ids = {f.id for f, _ in self._active}
        for counters in self._counters.values():
            counters.keep(ids)

    def decide(self, path: str, now: float = 0.0) -> StartDecision:
        """How the start of the worker at ``path`` now is faulted."""
        delay, failure, hits = 0.0, None, []
        counters = self._counters.setdefault(path, _Counters(path))
        for fault, injected in self._active:
            if not fault.aims_at(path):
                continue
            hit = counters.trigger(fault, injected, now)
            if hit is None:
                continue
            hits.append(hit)
            if fault.fault == "slow_start":
                delay += fault.seconds or 0.0
            elif failure is None:
                failure = f"injected start failure ({fault.id}, start {hit.ordinal})"
        return StartDecision(delay, failure, tuple(hits))
