"""Fault injection: what to break, where, and when (typed specs), and what was broken.

Two specs. A ``MessageFault`` breaks the messages arriving at the actors whose path matches
``target`` (a glob: ``root/svc/*``); an ``ActorFault`` breaks the actors themselves. Both pick
messages the same way (``_Triggered``): optionally only those of a ``message_kind`` (a glob)
from a ``sender`` (a glob over the sender's path), then by a trigger: the ``nth`` one,
``every_nth`` one, or each with ``probability`` (drawn from a generator seeded with the
fault's ``seed``, its id and the target's path, so a run with the same seed and the same
message order hits the same messages), at most ``max_total`` times (per actor).

Message kinds: ``drop`` (the handler never sees it; the ledger counts it
``dropped_by_fault``), ``duplicate`` (the handler sees it twice), ``delay`` (the handler sees
it ``delay`` seconds later; later messages are not held back: a delay reorders), ``corrupt``
(it arrives schema-invalid: the sender gets the receiver's ``MessageInvalid`` error, the
ledger counts it ``dropped_by_fault``; with ``corrupt: truncated`` its encoded bytes are cut in
half and fail to decode instead: nobody is answered, the ledger counts it
``dropped_by_fault``), ``raise`` (the handler raises ``InjectedFault``: a crash of the worker,
restarted by its supervisor as any crash), ``reorder`` (the hit messages are held until
``window`` of them are, or ``window_seconds`` passed since the first, then handled in an order
shuffled by the fault's generator; messages it does not hit pass them; held ones whose worker
exits count ``dropped_by_fault``).

Actor kinds (``ActorFault``; ``pick`` chooses among the live actors ``target`` matches when
the fault is injected, with a generator seeded by ``seed`` and the fault's id; the chosen
paths are stored in ``paths``, and later incarnations at those paths are hit too):

* ``kill``: ``point: now`` SIGKILLs the picked actors' processes at once (done by the Runtime;
  multiprocTCPBase only: refused with ``NotSupported`` on simpleSystemBase, where actors have
  no process of their own). At a crash point, on a matching message, the worker SIGKILLs
  itself: ``before_handler``, ``after_handler`` (before its reply) or ``after_reply``; the
  message counts as handled exactly when its handler ran. On simpleSystemBase a crash-point
  kill is a crash with ``InjectedFault`` instead. The counters (``nth``, ``every_nth``,
  ``max_total``) start afresh in each incarnation.
* ``pause``: SIGSTOP the picked processes, SIGCONT after ``seconds`` (default 1), on heal, on
  ``heal_all`` and when the Runtime shuts down (multiprocTCPBase only).
* ``hang``: on a matching message the handler blocks ``seconds`` before running, or until the
  fault is healed (``seconds`` unset: at most ``HANG_LIMIT``). A healed hang ends early. On
  simpleSystemBase the whole system waits (one thread): only a bounded hang is accepted there.
* ``start_failure``: the worker's next starts fail with ``InjectedFault`` (applied by its
  supervisor at the start; the trigger counts start attempts across incarnations, and
  ``max_total`` bounds the failures).
* ``slow_start``: its starts take ``seconds`` longer (before ``on_start``).
* ``slow_shutdown``: asked to stop, it ignores the request for ``seconds``: past its shutdown
  time its supervisor kills it (``child_terminated`` with reason ``killed``).

Every application is journalled (``FaultInjected``): one entry per hit message, per picked
actor of a kill now or a pause, per faulted start and per held stop.
"""

from __future__ import annotations

import fnmatch
import random
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from protocols._base import Message

__all__ = [
    "ACTOR_FAULT_KINDS",
    "ANY_FAULT_KINDS",
    "HANG_LIMIT",
    "MESSAGE_FAULT_KINDS",
    "PAUSE_SECONDS",
    "REORDER_SECONDS",
    "START_FAULTS",
    "ActorFault",
    "ActorFaultKind",
    "AnyFault",
    "AnyFaultKind",
    "CrashPoint",
    "DelaySpec",
    "FaultInjected",
    "FaultJournal",
    "FaultsApplied",
    "GetFaultJournal",
    "HealFaults",
    "InjectFault",
    "KillPoint",
    "MessageFault",
    "MessageFaultKind",
    "PickFixed",
    "PickPercent",
    "TargetPick",
    "fault_from_dict",
]

MessageFaultKind = Literal["drop", "duplicate", "delay", "reorder", "corrupt", "raise"]
MESSAGE_FAULT_KINDS: tuple[MessageFaultKind, ...] = get_args(MessageFaultKind)
ActorFaultKind = Literal["kill", "hang", "pause", "start_failure", "slow_start", "slow_shutdown"]
ACTOR_FAULT_KINDS: tuple[ActorFaultKind, ...] = get_args(ActorFaultKind)
AnyFaultKind = Literal[MessageFaultKind, ActorFaultKind]
ANY_FAULT_KINDS: tuple[AnyFaultKind, ...] = (*MESSAGE_FAULT_KINDS, *ACTOR_FAULT_KINDS)
START_FAULTS = ("start_failure", "slow_start")
"""Faults a supervisor applies when it starts a worker (the trigger counts start attempts)."""
CrashPoint = Literal["before_handler", "after_handler", "after_reply"]
KillPoint = Literal["now", "before_handler", "after_handler", "after_reply"]
HANG_LIMIT = 300.0
"""The longest a ``hang`` fault blocks a handler (and a fault's ``seconds``), in seconds."""
PAUSE_SECONDS = 1.0
"""How long a ``pause`` stops a process when it gives no ``seconds``."""
REORDER_SECONDS = 0.2
"""How long a ``reorder`` fault holds a partial window by default, in seconds."""

Seconds = Annotated[float, Field(gt=0, le=HANG_LIMIT)]


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


class _Triggered(Message):
    """What message and actor faults share: where, which messages, and the trigger."""

    target: Annotated[str, Field(min_length=1)]
    message_kind: str | None = None
    sender: str | None = None
    nth: Annotated[int, Field(ge=1)] | None = None
    every_nth: Annotated[int, Field(ge=1)] | None = None
    probability: Annotated[float, Field(ge=0, le=1)] | None = None
    max_total: Annotated[int, Field(ge=1)] | None = None
    seed: int = 0
    id: str = ""
    """Given by the runtime when injected."""

    def _check_trigger(self) -> None:
        triggers = [t for t in (self.nth, self.every_nth, self.probability) if t is not None]
        if len(triggers) > 1:
            msg = "a fault takes at most one trigger: nth, every_nth or probability"
            raise ValueError(msg)

    def aims_at(self, path: str) -> bool:
        """Whether the actor at ``path`` is one this fault is about."""
        return fnmatch.fnmatchcase(path, self.target)

    def matches(self, path: str, kind: str, sender: str | None) -> bool:
        """Whether a message of ``kind`` from ``sender`` arriving at ``path`` is one this
        fault watches (its trigger then decides whether it is hit)."""
        if not self.aims_at(path):
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


class MessageFault(_Triggered):
    """A fault on the messages arriving at ``target`` (see the module doc)."""

    kind: Literal["faults.message_fault"] = "faults.message_fault"
    fault: MessageFaultKind
    delay: DelaySpec | None = None
    corrupt: Literal["invalid", "truncated"] = "invalid"
    """How a ``corrupt`` fault breaks the message: a schema-invalid field, or its encoded
    bytes cut in half (the receiver cannot decode it: nobody is answered)."""
    window: Annotated[int, Field(ge=2, le=1000)] = 4
    """How many messages a ``reorder`` shuffles together."""
    window_seconds: Annotated[float, Field(gt=0, le=60)] = REORDER_SECONDS
    """The longest a ``reorder`` holds a partial window (from its first message)."""

    @model_validator(mode="after")
    def _check(self) -> MessageFault:
        if self.corrupt != "invalid" and self.fault != "corrupt":
            msg = "`corrupt` (the mode) is valid only on a corrupt fault"
            raise ValueError(msg)
        self._check_trigger()
        if (self.fault == "delay") != (self.delay is not None):
            msg = "`delay` is required by a delay fault and valid only there"
            raise ValueError(msg)
        return self


class PickFixed(BaseModel):
    """Pick ``fixed`` of the matching actors (all of them when fewer match)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    fixed: Annotated[int, Field(ge=1)]


class PickPercent(BaseModel):
    """Pick ``percent`` of the matching actors (rounded up, at least one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    percent: Annotated[float, Field(gt=0, le=100)]


TargetPick = Literal["one", "all"] | PickFixed | PickPercent
_MESSAGE_TRIGGERED = ("hang",)
_NO_SECONDS = ("kill", "start_failure")
_NEED_SECONDS = ("slow_start", "slow_shutdown")


class ActorFault(_Triggered):
    """A fault on the actors ``target`` matches, chosen by ``pick`` (see the module doc)."""

    kind: Literal["faults.actor_fault"] = "faults.actor_fault"
    fault: ActorFaultKind
    pick: TargetPick = "all"
    paths: list[str] = Field(default_factory=list)
    """The live paths ``pick`` chose when the fault was injected (set by the runtime)."""
    point: KillPoint = "now"
    """Where a ``kill`` strikes: at once, or at a crash point on a matching message."""
    seconds: Seconds | None = None
    """hang: how long the handler blocks (unset: until healed); pause: how long the process
    is stopped (default ``PAUSE_SECONDS``); slow_start: the start's extra seconds;
    slow_shutdown: how long the stop request is ignored."""

    @model_validator(mode="after")
    def _check(self) -> ActorFault:
        if self.point != "now" and self.fault != "kill":
            msg = "`point` is valid only on a kill fault"
            raise ValueError(msg)
        if self.fault in _NEED_SECONDS and self.seconds is None:
            msg = f"a {self.fault} fault needs `seconds` (at most {HANG_LIMIT:g})"
            raise ValueError(msg)
        if self.fault in _NO_SECONDS and self.seconds is not None:
            msg = f"`seconds` is not valid on a {self.fault} fault"
            raise ValueError(msg)
        self._check_trigger()
        if not self.message_triggered and (
            self.message_kind is not None or self.sender is not None
        ):
            msg = (
                "`message_kind` and `sender` are valid only on faults triggered by a message "
                "(hang, kill at a crash point)"
            )
            raise ValueError(msg)
        if self.signalled and (
            self.nth is not None
            or self.every_nth is not None
            or self.probability is not None
            or self.max_total is not None
        ):
            msg = f"a {self.describe()} fault is applied once: it takes no trigger or max_total"
            raise ValueError(msg)
        return self

    @property
    def message_triggered(self) -> bool:
        """The fault strikes on a matching message (a hang, a kill at a crash point)."""
        return self.fault in _MESSAGE_TRIGGERED or (self.fault == "kill" and self.point != "now")

    @property
    def signalled(self) -> bool:
        """The runtime applies it at once by a signal (a kill now, a pause)."""
        return self.fault == "pause" or (self.fault == "kill" and self.point == "now")

    @property
    def pause_seconds(self) -> float:
        """How long a pause stops its processes."""
        return PAUSE_SECONDS if self.seconds is None else self.seconds

    def describe(self) -> str:
        """The fault's name as messages spell it (``kill now``, ``pause``)."""
        return f"{self.fault} {self.point}" if self.fault == "kill" else self.fault

    def aims_at(self, path: str) -> bool:
        """Whether the actor at ``path`` is one of those picked (``target`` until picked)."""
        if self.paths:
            return path in self.paths
        return fnmatch.fnmatchcase(path, self.target)


AnyFault = Annotated[MessageFault | ActorFault, Field(discriminator="kind")]


def fault_from_dict(spec: dict[str, Any]) -> MessageFault | ActorFault:
    """A fault from its dict form: an ``ActorFault`` when ``fault`` names an actor kind.

    Raises:
        ValidationError: ``spec`` is not a valid fault.
    """
    if spec.get("fault") in ACTOR_FAULT_KINDS:
        return ActorFault.model_validate(spec)
    return MessageFault.model_validate(spec)


class InjectFault(Message):
    """Runtime -> guardian: activate a fault; answered with the fault (its ``id`` set)."""

    kind: Literal["faults.inject"] = "faults.inject"
    spec: AnyFault


class HealFaults(Message):
    """Runtime -> guardian: deactivate the faults with these ids (all when empty); Ok."""

    kind: Literal["faults.heal"] = "faults.heal"
    ids: list[str] = Field(default_factory=list)


class FaultInjected(Message):
    """One injection, as the journal records it."""

    kind: Literal["faults.injected"] = "faults.injected"
    fault_id: str
    fault: AnyFaultKind
    target: str
    """The path of the actor it hit."""
    message_kind: str
    """The hit message's kind ("" when no message triggered it)."""
    ordinal: int
    """The index (1-based) of the hit message among those the fault matched at that target,
    of the start attempt for a start fault, of the stop request for a held stop; 0 for a
    kill now or a pause."""
    at: float
    """Seconds since the fault was injected."""


class FaultsApplied(Message):
    """Runtime -> guardian: injections the runtime applied itself (a kill now, a pause), for
    the journal; answered Ok."""

    kind: Literal["faults.applied"] = "faults.applied"
    injected: list[FaultInjected] = Field(default_factory=list)


class GetFaultJournal(Message):
    """Ask the guardian for every injection so far; answered FaultJournal."""

    kind: Literal["faults.get_journal"] = "faults.get_journal"


class FaultJournal(Message):
    """Every injection so far, and the faults active now."""

    kind: Literal["faults.journal"] = "faults.journal"
    injected: list[FaultInjected] = Field(default_factory=list)
    active: list[AnyFault] = Field(default_factory=list)
