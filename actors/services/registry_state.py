"""The A2A registry's decisions, without Thespian: cards, held messages, counters.

Vocabulary
    card         an AgentCard, keyed by its agent's ``name``; ``path`` is its actor
    deliverable  registered with a status other than ``unavailable``
    held         a message for an agent that is not deliverable; it waits, bounded per agent
                 (``max_held``) and in all (``max_held_total``), for ``hold_seconds``
    loss         messages that will never be delivered: expired, overflowed (a bound was
                 reached) or discarded (sent back undelivered with no agent left at that
                 path, or held when the registry stopped)

Time is passed in (``now``, monotonic seconds) so tests control it; the registry sweeps
expired messages at the start of every message it handles. Every loss is returned to the
caller (which logs it) and kept in the statistics: nothing is dropped silently.
"""

from __future__ import annotations

import importlib
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from protocols._base import Message, message_class
from protocols.errors import MessageInvalid, UnknownMessageKind
from protocols.registry import (
    AgentCard,
    AgentStatus,
    DeliverToAgent,
    FindAgents,
    HeldLoss,
    RegistryStatistics,
)

#: How many emptied paths the directory remembers the agent names of.
MAX_FORMER_PATHS = 1000

_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

T = TypeVar("T")


class RegistryConfig(BaseModel):
    """The registry's args (all optional), validated when it starts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_held: int = Field(default=100, ge=1, description="held messages per agent")
    max_held_total: int = Field(default=10_000, ge=1, description="held messages in all")
    hold_seconds: float = Field(default=60.0, ge=0, description="how long a message waits")
    overflow: Literal["reject", "drop_oldest"] = Field(
        default="reject", description="a full queue refuses the new message or drops its oldest"
    )
    max_losses: int = Field(default=50, ge=0, description="loss reports kept for statistics")
    max_syncs: int = Field(default=64, ge=1, description="SyncEvents requests waiting at once")


class Refusal(Exception):
    """A command is refused; ``error`` names the ErrorReply's error."""

    def __init__(self, error: str, message: str) -> None:
        self.error = error
        self.message = message
        super().__init__(f"{error}: {message}")


@dataclass(frozen=True, slots=True)
class Held:
    """One held message and when it expires."""

    message: Message
    held_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class Loss:
    """Messages for ``agent`` that will never be delivered."""

    agent: str
    reason: Literal["expired", "overflowed", "discarded"]
    messages: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class Forwarded:
    """DeliverToAgent: send ``message`` to ``path`` now."""

    path: str
    message: Message


@dataclass(frozen=True, slots=True)
class Kept:
    """DeliverToAgent: the message is held; ``held`` now wait; ``dropped`` made room for it."""

    held: int
    expires_in: float
    dropped: Loss | None = None


@dataclass(frozen=True, slots=True)
class Deliveries:
    """Held messages to send to the agent ``name`` at ``path``, in the order they arrived."""

    name: str
    path: str
    items: tuple[Held, ...]


# --- Held messages ----------------------------------------------------------------------------


class HeldMessages:
    """Messages waiting for agents, per agent in arrival order, bounded and expiring."""

    def __init__(self, config: RegistryConfig) -> None:
        self._config = config
        self._queues: dict[str, deque[Held]] = {}
        self._total = 0

    def hold(self, agent: str, message: Message, now: float) -> tuple[Held, list[Held]]:
        """Hold ``message`` for ``agent``; return it and the messages dropped to make room.

        Raises:
            Refusal: HoldLimitReached, the agent's queue (``overflow: reject``) or the
                registry (``max_held_total``) is full.
        """
        config = self._config
        queue = self._queues.setdefault(agent, deque())
        drop = 0
        if len(queue) >= config.max_held:
            if config.overflow == "reject":
                self._set(agent, queue)
                msg = f"{len(queue)} messages already wait for agent {agent!r} (max_held)"
                raise Refusal("HoldLimitReached", msg)
            drop = len(queue) - config.max_held + 1
        if self._total - drop >= config.max_held_total:
            # checked before dropping anything: a refusal changes nothing
            self._set(agent, queue)
            msg = f"{self._total} messages already wait in the registry (max_held_total)"
            raise Refusal("HoldLimitReached", msg)
        dropped = [queue.popleft() for _ in range(drop)]
        held = Held(message, now, now + config.hold_seconds)
        queue.append(held)
        self._total += 1 - drop
        return held, dropped

    def expire(self, now: float) -> dict[str, list[Held]]:
        """Remove and return, per agent, the messages whose time is up (``now >= expires_at``)."""
        expired: dict[str, list[Held]] = {}
        for agent in list(self._queues):
            queue = self._queues[agent]
            kept = deque(h for h in queue if h.expires_at > now)
            if len(kept) != len(queue):
                expired[agent] = [h for h in queue if h.expires_at <= now]
                self._total -= len(expired[agent])
                self._set(agent, kept)
        return expired

    def take(self, agent: str) -> list[Held]:
        """Remove and return every message held for ``agent``, oldest first."""
        queue = self._queues.pop(agent, deque())
        self._total -= len(queue)
        return list(queue)

    def put_back(self, agent: str, items: Iterable[Held]) -> None:
        """Return ``items`` (taken earlier, oldest first) to the front of ``agent``'s queue."""
        items = list(items)
        if not items:
            return
        queue = self._queues.setdefault(agent, deque())
        queue.extendleft(reversed(items))
        self._total += len(items)

    def count(self, agent: str | None = None) -> int:
        """Return how many messages wait for ``agent`` (or in all)."""
        if agent is None:
            return self._total
        return len(self._queues.get(agent, ()))

    def by_agent(self) -> dict[str, int]:
        """Return agent -> number of held messages, for agents with any."""
        return {agent: len(queue) for agent, queue in sorted(self._queues.items())}

    def agents(self) -> list[str]:
        """Return the agents that have held messages."""
        return list(self._queues)

    def next_deadline(self) -> float | None:
        """Return the earliest expiry time of any held message (None when nothing is held)."""
        deadlines = [h.expires_at for queue in self._queues.values() for h in queue]
        return min(deadlines, default=None)

    def _set(self, agent: str, queue: deque[Held]) -> None:
        if queue:
            self._queues[agent] = queue
        else:
            self._queues.pop(agent, None)


# --- Cards --------------------------------------------------------------------------------------


def matches(card: AgentCard, query: FindAgents) -> bool:
    """Return True if ``card`` satisfies every filter given in ``query``."""
    return (
        (query.capability is None or card.has_capability(query.capability))
        and (query.skill_tag is None or card.has_skill_tag(query.skill_tag))
        and (query.skill_id is None or any(s.id == query.skill_id for s in card.skills))
        and (query.status is None or card.status == query.status)
    )


def is_under(path: str, ancestor: str) -> bool:
    """Return True if ``path`` is ``ancestor`` or lies below it in the tree."""
    return path == ancestor or path.startswith(ancestor + "/")


class AgentDirectory:
    """The registered cards, by agent name, and who was registered at the paths now empty."""

    def __init__(self) -> None:
        self._cards: dict[str, AgentCard] = {}
        self._former: dict[str, list[str]] = {}  # path -> names of removed cards, oldest first

    def register(self, card: AgentCard) -> AgentCard:
        """Add ``card``, or replace the card of the same name at the same path.

        Raises:
            Refusal: InvalidCard (see ``AgentCard.problems``), or DuplicateAgent when another
                actor holds the name.
        """
        problems = card.problems()
        if problems:
            raise Refusal("InvalidCard", f"card {card.name!r}: " + "; ".join(problems))
        existing = self._cards.get(card.name)
        if existing is not None and existing.path != card.path:
            msg = (
                f"agent {card.name!r} is registered by {existing.path!r}, "
                f"cannot register it for {card.path!r}"
            )
            raise Refusal("DuplicateAgent", msg)
        self._cards[card.name] = card
        self._former.pop(card.path, None)
        return card

    def get(self, name: str) -> AgentCard:
        """Return the card of ``name``.

        Raises:
            Refusal: UnknownAgent.
        """
        card = self._cards.get(name)
        if card is None:
            raise Refusal("UnknownAgent", f"no agent named {name!r} is registered")
        return card

    def find(self, name: str) -> AgentCard | None:
        """Return the card of ``name``, or None."""
        return self._cards.get(name)

    def set_status(self, name: str, status: AgentStatus) -> AgentCard:
        """Change the status of ``name`` and return the new card.

        Raises:
            Refusal: UnknownAgent.
        """
        card = self.get(name).model_copy(update={"status": status})
        self._cards[name] = card
        return card

    def remove(self, name: str) -> AgentCard:
        """Remove and return the card of ``name``.

        Raises:
            Refusal: UnknownAgent.
        """
        card = self.get(name)
        del self._cards[name]
        return card

    def remove_under(self, path: str) -> list[AgentCard]:
        """Remove and return the cards whose actor is ``path`` or below it.

        Their names are remembered per path (the last ``MAX_FORMER_PATHS`` paths), so that
        messages still in flight to those actors can be held for the agents' return.
        """
        gone = sorted(
            (c for c in self._cards.values() if is_under(c.path, path)), key=lambda c: c.name
        )
        for card in gone:
            del self._cards[card.name]
            names = self._former.pop(card.path, [])
            self._former[card.path] = [*names, card.name]
        while len(self._former) > MAX_FORMER_PATHS:
            del self._former[next(iter(self._former))]
        return gone

    def former_names(self, path: str) -> list[str]:
        """Return the names whose cards at ``path`` were removed by an exit (oldest first)."""
        return list(self._former.get(path, ()))

    def names_at(self, path: str) -> list[str]:
        """Return the names registered by the actor at ``path``."""
        return sorted(name for name, card in self._cards.items() if card.path == path)

    def cards(self, query: FindAgents | None = None) -> list[AgentCard]:
        """Return the cards (matching ``query``), sorted by name."""
        return [
            card
            for _name, card in sorted(self._cards.items())
            if query is None or matches(card, query)
        ]


def deliverable(card: AgentCard | None) -> bool:
    """Return True if messages for this card go to its actor now."""
    return card is not None and card.status != "unavailable"


# --- Payloads ---------------------------------------------------------------------------------


def rebuild_payload(
    command: DeliverToAgent, importer: Callable[[str], object] = importlib.import_module
) -> Message:
    """Return the message ``command`` carries, importing ``payload_module`` if the kind is new.

    Raises:
        Refusal: UnknownPayloadKind (no class has the kind, even after the import) or
            PayloadInvalid (the payload does not validate against its class).
    """
    module = command.payload_module
    if message_class(command.payload_kind) is None and module:
        if not _MODULE_NAME.match(module):
            msg = f"payload_module must be a dotted module name, got {module!r}"
            raise Refusal("UnknownPayloadKind", msg)
        try:
            importer(module)
        except Exception as exc:  # any import failure leaves the kind unknown
            msg = f"cannot import {module!r} for kind {command.payload_kind!r}: {exc}"
            raise Refusal("UnknownPayloadKind", msg) from exc
    try:
        return command.unwrap()
    except UnknownMessageKind as exc:
        msg = f"no message class has the kind {command.payload_kind!r}"
        raise Refusal("UnknownPayloadKind", msg) from exc
    except MessageInvalid as exc:
        raise Refusal("PayloadInvalid", str(exc)) from exc


# --- The registry --------------------------------------------------------------------------


@dataclass
class _Counters:
    forwarded: int = 0
    delivered: int = 0
    expired: int = 0
    overflowed: int = 0
    losses: deque[HeldLoss] = field(default_factory=deque)


class RegistryState:
    """Cards and held messages together: what the Registry worker does, minus the sending.

    Methods that deliver return what to send; the caller sends it and hands back what it
    could not send (``put_back``). Methods that lose messages return the losses, which are
    also counted and kept (the last ``max_losses``) for ``statistics()``.
    """

    def __init__(
        self, config: RegistryConfig, *, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.directory = AgentDirectory()
        self.held = HeldMessages(config)
        self._wall_clock = wall_clock
        self._counters = _Counters()

    # --- commands ---

    def register(self, card: AgentCard) -> tuple[AgentCard, Deliveries | None]:
        """Register ``card``; return it and the held messages to send to it now."""
        card = self.directory.register(card)
        return card, self._release(card.name)

    def update_status(self, name: str, status: AgentStatus) -> tuple[AgentCard, Deliveries | None]:
        """Change the status of ``name``; return the card and the held messages now due."""
        card = self.directory.set_status(name, status)
        return card, self._release(name)

    def unregister(self, name: str) -> AgentCard:
        """Remove the card of ``name``; later messages for it are held."""
        return self.directory.remove(name)

    def deliver(self, name: str, message: Message, now: float) -> Forwarded | Kept:
        """Forward ``message`` to a deliverable agent, or hold it.

        Raises:
            Refusal: HoldLimitReached (the refused message is counted as overflowed).
        """
        card = self.directory.find(name)
        if card is not None and deliverable(card) and self.held.count(name) == 0:
            self._counters.forwarded += 1
            return Forwarded(card.path, message)
        return self._hold(name, message, now)

    def hold_back(self, name: str, message: Message, now: float) -> Kept:
        """Hold a message that ``deliver`` forwarded but that could not be sent.

        Raises:
            Refusal: HoldLimitReached.
        """
        self._counters.forwarded -= 1
        return self._hold(name, message, now)

    def _hold(self, name: str, message: Message, now: float) -> Kept:
        try:
            held, dropped = self.held.hold(name, message, now)
        except Refusal:
            self._record(Loss(name, "overflowed", (message,)))
            raise
        loss = Loss(name, "overflowed", tuple(h.message for h in dropped)) if dropped else None
        if loss is not None:
            self._record(loss)
        return Kept(self.held.count(name), held.expires_at - now, loss)

    def sweep(self, now: float) -> list[Loss]:
        """Expire the held messages whose time is up; return them as losses."""
        losses = [
            Loss(agent, "expired", tuple(h.message for h in items))
            for agent, items in sorted(self.held.expire(now).items())
        ]
        for loss in losses:
            self._record(loss)
        return losses

    def backlog(self) -> list[Deliveries]:
        """Return (and take) the held messages of agents that are deliverable now.

        Messages are held for a deliverable agent only when an earlier send was put back.
        """
        found = [self._release(name) for name in self.held.agents()]
        return [d for d in found if d is not None]

    def put_back(self, deliveries: Deliveries, unsent: Iterable[Held]) -> None:
        """Hold again the part of ``deliveries`` that could not be sent (oldest first)."""
        unsent = list(unsent)
        self.held.put_back(deliveries.name, unsent)
        self._counters.delivered -= len(unsent)

    def agent_exited(self, path: str) -> list[AgentCard]:
        """Remove the cards of the actor at ``path`` (gone) and of the actors below it."""
        return self.directory.remove_under(path)

    def undelivered(self, path: str, messages: Iterable[Message], now: float) -> list[Loss]:
        """Hold again, for its agent, messages that the actor at ``path`` never handled.

        The agents registered at ``path`` become ``unavailable`` (their actor is not there), so
        the messages wait until the agent registers again or expire. When the card was already
        removed (its actor exited), they wait for the agent last registered at ``path``; with
        no agent known there, they are lost (``discarded``).
        """
        messages = list(messages)
        names = self.directory.names_at(path)
        for name in names:
            self.directory.set_status(name, "unavailable")
        agent = next(iter(names or self.directory.former_names(path)[-1:]), None)
        if agent is None:
            loss = Loss(path, "discarded", tuple(messages))
            self._record(loss)
            return [loss]
        losses: list[Loss] = []
        for message in messages:
            try:
                _held, dropped = self.held.hold(agent, message, now)
            except Refusal:
                losses.append(Loss(agent, "overflowed", (message,)))
                continue
            if dropped:
                losses.append(Loss(agent, "overflowed", tuple(h.message for h in dropped)))
        for loss in losses:
            self._record(loss)
        return losses

    def discard_all(self) -> list[Loss]:
        """Drop every held message (the registry is stopping); return them as losses."""
        losses = [
            Loss(agent, "discarded", tuple(h.message for h in self.held.take(agent)))
            for agent in sorted(self.held.agents())
        ]
        for loss in losses:
            self._record(loss)
        return losses

    def statistics(self) -> RegistryStatistics:
        """Return the counters for GetRegistryStatistics."""
        cards = self.directory.cards()
        by_status: dict[str, int] = {}
        for card in cards:
            by_status[card.status] = by_status.get(card.status, 0) + 1
        c = self._counters
        return RegistryStatistics(
            registered=len(cards),
            by_status=by_status,
            held=self.held.count(),
            held_by_agent=self.held.by_agent(),
            forwarded=c.forwarded,
            delivered=c.delivered,
            expired=c.expired,
            overflowed=c.overflowed,
            recent_losses=list(c.losses),
        )

    # --- internals ---

    def _release(self, name: str) -> Deliveries | None:
        card = self.directory.find(name)
        if card is None or not deliverable(card) or self.held.count(name) == 0:
            return None
        items = tuple(self.held.take(name))
        self._counters.delivered += len(items)  # put_back subtracts what was not sent
        return Deliveries(name, card.path, items)

    def _record(self, loss: Loss) -> None:
        if not loss.messages:
            return
        c = self._counters
        if loss.reason == "expired":
            c.expired += len(loss.messages)
        elif loss.reason == "overflowed":
            c.overflowed += len(loss.messages)
        if self.config.max_losses == 0:
            return
        c.losses.append(
            HeldLoss(
                agent=loss.agent,
                reason=loss.reason,
                count=len(loss.messages),
                kinds=sorted({m.kind for m in loss.messages}),
                at=self._wall_clock(),
            )
        )
        while len(c.losses) > self.config.max_losses:
            c.losses.popleft()


# --- SyncEvents waiters -------------------------------------------------------------------------


class Waiters(Generic[T]):
    """Requests waiting until event ``seq`` is applied; at most ``limit`` at once."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._waiting: deque[tuple[int, T]] = deque()

    def add(self, seq: int, item: T) -> list[T]:
        """Wait for ``seq``; return the oldest waiters evicted to stay within the limit."""
        self._waiting.append((seq, item))
        evicted: list[T] = []
        while len(self._waiting) > self._limit:
            evicted.append(self._waiting.popleft()[1])
        return evicted

    def release(self, applied: int) -> list[T]:
        """Remove and return the waiters whose ``seq`` is at most ``applied``."""
        ready = [item for seq, item in self._waiting if seq <= applied]
        self._waiting = deque((seq, item) for seq, item in self._waiting if seq > applied)
        return ready

    def __len__(self) -> int:
        return len(self._waiting)


__all__ = [
    "MAX_FORMER_PATHS",
    "AgentDirectory",
    "Deliveries",
    "Forwarded",
    "Held",
    "HeldMessages",
    "Kept",
    "Loss",
    "Refusal",
    "RegistryConfig",
    "RegistryState",
    "Waiters",
    "deliverable",
    "is_under",
    "matches",
    "rebuild_payload",
]
