"""Fault injection: what to break, where, and when (typed specs), and what was broken.

A message fault applies to the messages arriving at the actors whose path matches ``target``
(a glob: ``root/svc/*``), optionally only those of a ``message_kind`` (a glob) and from a
``sender`` (a glob over the sender's path). Which of the matching messages it hits is decided
by its trigger: the ``nth`` one, ``every_nth`` one, or each with ``probability`` (drawn from a
generator seeded with the fault's ``seed``, its id and the target's path, so a run with the
same seed and the same message order hits the same messages), at most ``max_total`` times.

Kinds: ``drop`` (the handler never sees it; the ledger counts it ``dropped_by_fault``),
``duplicate`` (the handler sees it twice), ``delay`` (the handler sees it ``delay`` seconds
later; later messages are not held back: a delay reorders), ``corrupt`` (it arrives schema-
invalid: the sender gets the receiver's ``MessageInvalid`` error, the ledger counts it
``dropped_by_fault``; with ``corrupt: truncated`` its encoded bytes are cut in half and fail to
decode instead: nobody is answered, the ledger counts it ``dropped_by_fault``), ``raise`` (the
handler raises ``InjectedFault``: a crash of the worker, restarted by its supervisor as any
crash), ``reorder`` (the hit messages are held until ``window`` of them are, or 0.2 s passed,
then handled in a seeded shuffled order; messages it does not hit pass them), ``kill`` (the
worker's process is SIGKILLed at a crash ``point``: before the handler, after the handler but
before its reply, or after the reply; the message counts as handled exactly when its handler
ran; on simpleSystemBase, where a worker has no process of its own, it crashes with
``InjectedFault`` instead), ``hang`` (the handler starts ``seconds`` late, the worker answering
nothing meanwhile; on simpleSystemBase the whole system waits), ``start_failure`` (the worker's
next starts fail: the trigger counts its start attempts, across incarnations, and ``max_total``
bounds them; applied by its supervisor), ``slow_start`` (its starts take ``seconds`` longer),
``slow_shutdown`` (asked to stop, it ignores the request for ``seconds``: past its shutdown time
its supervisor kills it). A ``kill``'s counters (``nth``, ``every_nth``, ``max_total``) start
afresh in each incarnation of the worker.
"""

from __future__ import annotations

import fnmatch
import random
from typing import Annotated, Literal, get_args

from pydantic import Field, model_validator

from protocols._base import Message

__all__ = [
    "HANG_LIMIT",
    "MESSAGE_FAULT_KINDS",
    "START_FAULTS",
    "CrashPoint",
    "DelaySpec",
    "FaultInjected",
    "FaultJournal",
    "GetFaultJournal",
    "HealFaults",
    "InjectFault",
    "MessageFault",
    "MessageFaultKind",
]

MessageFaultKind = Literal[
    "drop",
    "duplicate",
    "delay",
    "reorder",
    "corrupt",
    "raise",
    "kill",
    "hang",
    "start_failure",
    "slow_start",
    "slow_shutdown",
]
MESSAGE_FAULT_KINDS: tuple[MessageFaultKind, ...] = get_args(MessageFaultKind)
START_FAULTS = ("start_failure", "slow_start")
"""Faults a supervisor applies when it starts a worker (the trigger counts start attempts)."""
_TIMED = ("hang", "slow_start", "slow_shutdown")
CrashPoint = Literal["before_handler", "after_handler", "after_reply"]
HANG_LIMIT = 300.0
"""The longest a ``hang`` fault blocks a handler, in seconds."""


class DelaySpec(Message):
    """How long a ``delay`` fault holds a message: a fixed time, or drawn uniformly or
    normally (never below 0), plus up to ``jitter`` seconds."""

    kind: Literal["faults.delay"] = "faults.delay"
    fixed: Annotated[float, Field(ge=0)] | None = None
    uniform: tuple[float, float] | None = None
    normal: tuple[float, float] | None = None
    jitter: Annotated[float, Field(ge=0)] = 0.0

    @model_validator(mode="after")
    def _one_shape(self) -> DelaySpec:
        given = [x for x in (self.fixed, self.uniform, self.normal) if x is not None]
        if len(given) != 1:
            msg = "a delay is one of fixed: S, uniform: [LOW, HIGH] or normal: [MEAN, STD]"
            raise ValueError(msg)
        if self.uniform is not None and not 0 <= self.uniform[0] <= self.uniform[1]:
            msg = f"uniform: [LOW, HIGH] needs 0 <= LOW <= HIGH, got {list(self.uniform)}"
            raise ValueError(msg)
        if self.normal is not None and (self.normal[0] < 0 or self.normal[1] < 0):
            msg = f"normal: [MEAN, STD] needs both >= 0, got {list(self.normal)}"
            raise ValueError(msg)
        return self

    def draw(self, rng: random.Random) -> float:
        """One delay, in seconds."""
        if self.fixed is not None:
            base = self.fixed
        elif self.uniform is not None:
            base = rng.uniform(*self.uniform)
        else:
            assert self.normal is not None  # noqa: S101 - checked by the validator
            base = max(0.0, rng.gauss(*self.normal))
        return base + (rng.uniform(0, self.jitter) if self.jitter else 0.0)


class MessageFault(Message):
    """A fault on the messages arriving at ``target`` (see the module doc)."""

    kind: Literal["faults.message_fault"] = "faults.message_fault"
    fault: MessageFaultKind
    target: Annotated[str, Field(min_length=1)]
    message_kind: str | None = None
    sender: str | None = None
    nth: Annotated[int, Field(ge=1)] | None = None
    every_nth: Annotated[int, Field(ge=1)] | None = None
    probability: Annotated[float, Field(ge=0, le=1)] | None = None
    max_total: Annotated[int, Field(ge=1)] | None = None
    delay: DelaySpec | None = None
    corrupt: Literal["invalid", "truncated"] = "invalid"
    """How a ``corrupt`` fault breaks the message: a schema-invalid field, or its encoded
    bytes cut in half (the receiver cannot decode it: nobody is answered)."""
    window: Annotated[int, Field(ge=2, le=1000)] = 4
    """How many messages a ``reorder`` shuffles together."""
    point: CrashPoint = "before_handler"
    """Where a ``kill`` strikes."""
    seconds: Annotated[float, Field(gt=0, le=HANG_LIMIT)] | None = None
    """How long a ``hang`` blocks."""
    seed: int = 0
    id: str = ""
    """Given by the runtime when injected."""

    @model_validator(mode="after")
    def _check(self) -> MessageFault:
        if (self.fault in _TIMED) != (self.seconds is not None):
            msg = "`seconds` is required by hang, slow_start and slow_shutdown and valid only there"
            raise ValueError(msg)
        if self.corrupt != "invalid" and self.fault != "corrupt":
            msg = "`corrupt` (the mode) is valid only on a corrupt fault"
            raise ValueError(msg)
        if self.point != "before_handler" and self.fault != "kill":
            msg = "`point` is valid only on a kill fault"
            raise ValueError(msg)
        triggers = [t for t in (self.nth, self.every_nth, self.probability) if t is not None]
        if len(triggers) > 1:
            msg = "a fault takes at most one trigger: nth, every_nth or probability"
            raise ValueError(msg)
        if (self.fault == "delay") != (self.delay is not None):
            msg = "`delay` is required by a delay fault and valid only there"
            raise ValueError(msg)
        return self

    def matches(self, path: str, kind: str, sender: str | None) -> bool:
        """Whether a message of ``kind`` from ``sender`` arriving at ``path`` is one this
        fault watches (its trigger then decides whether it is hit)."""
        if not fnmatch.fnmatchcase(path, self.target):
            return False
        if self.message_kind is not None and not fnmatch.fnmatchcase(kind, self.message_kind):
            return False
        return self.sender is None or (
            sender is not None and fnmatch.fnmatchcase(sender, self.sender)
        )

    def fires(self, ordinal: int, rng: random.Random) -> bool:
        """Whether the ``ordinal``-th (1-based) matching message is hit (before max_total)."""
        if self.nth is not None:
            return ordinal == self.nth
        if self.every_nth is not None:
            return ordinal % self.every_nth == 0
        if self.probability is not None:
            return rng.random() < self.probability
        return True


class InjectFault(Message):
    """Runtime -> guardian: activate a fault; answered with the fault (its ``id`` set)."""

    kind: Literal["faults.inject"] = "faults.inject"
    spec: MessageFault


class HealFaults(Message):
    """Runtime -> guardian: deactivate the faults with these ids (all when empty); Ok."""

    kind: Literal["faults.heal"] = "faults.heal"
    ids: list[str] = Field(default_factory=list)


class FaultInjected(Message):
    """One injection, as the journal records it."""

    kind: Literal["faults.injected"] = "faults.injected"
    fault_id: str
    fault: MessageFaultKind
    target: str
    """The path of the actor it hit."""
    message_kind: str
    ordinal: int
    """The index (1-based) of the hit message among those the fault matched at that target."""
    at: float
    """Seconds since the fault was injected."""


class GetFaultJournal(Message):
    """Ask the guardian for every injection so far; answered FaultJournal."""

    kind: Literal["faults.get_journal"] = "faults.get_journal"


class FaultJournal(Message):
    kind: Literal["faults.journal"] = "faults.journal"
    injected: list[FaultInjected] = Field(default_factory=list)
    active: list[MessageFault] = Field(default_factory=list)
