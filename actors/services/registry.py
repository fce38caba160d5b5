"""Registry: the A2A agent registry (cards, discovery, messages held for absent agents).

Vocabulary (the decisions live in ``actors.services.registry_state``, without Thespian)
    card         an A2A AgentCard plus the agent's actor ``path`` and ``status``, by name
    deliverable  registered with a status other than ``unavailable``
    held         DeliverToAgent for an agent that is not deliverable: the message waits,
                 bounded per agent and in all, for ``hold_seconds``, and is sent to the
                 agent's actor when it registers (or becomes available again)
    loss         held messages that will never be delivered; each loss is a structlog event
                 (``messages_expired``, ``messages_overflowed``, ``messages_discarded``) and is
                 counted in RegistryStatistics (with the last few in ``recent_losses``)

Args (all optional): ``max_held`` (100 per agent), ``max_held_total`` (10000),
``hold_seconds`` (60), ``overflow`` (``reject``: a full queue refuses the new message with
HoldLimitReached; ``drop_oldest``: it drops its oldest), ``max_losses`` (50 loss reports kept),
``max_syncs`` (64 SyncEvents waiting). Unknown args fail the start.

Expiry is swept at the start of every message the registry handles (commands and the
supervision events it subscribes to), and at the next deadline through ``call_later``, so an
idle registry reports expiries on time too.

Cards follow supervision. The registry subscribes to supervision events (with replay); an
exit of an actor (``child_exited``, ``child_terminated``, ``start_failed``) removes the cards
registered at that path or below it, whatever the restart type: a restarted agent registers
again from its ``on_start``, and messages sent for it meanwhile are held. Events are applied
in arrival order. Messages forwarded to an agent's actor that come back undelivered are held
again and the card becomes ``unavailable``.

The registry keeps its state in memory: after a restart of the registry itself, agents
have to register again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from actors.core.worker import Worker
from actors.errors import Backpressure
from actors.services.registry_state import (
    Deliveries,
    Forwarded,
    Kept,
    Loss,
    Refusal,
    RegistryConfig,
    RegistryState,
    Waiters,
    rebuild_payload,
)
from protocols._base import Message
from protocols.common import ErrorName, ErrorReply
from protocols.registry import (
    AgentFound,
    AgentRegistered,
    AgentsFound,
    AgentUnregistered,
    AgentUpdated,
    DeliverToAgent,
    EventsSynced,
    FindAgents,
    GetAgent,
    GetRegistryStatistics,
    ListAgents,
    MessageForwarded,
    MessageHeld,
    RegisterAgent,
    SyncEvents,
    UnregisterAgent,
    UpdateStatus,
    _Sweep,
)
from protocols.supervision import SupervisionEvent, exited_path

log = structlog.get_logger("understudy.registry")

_LOSS_EVENTS = {
    "expired": "messages_expired",
    "overflowed": "messages_overflowed",
    "discarded": "messages_discarded",
}

Reply = Callable[[Message], None]


class Registry(Worker):
    """The A2A registry worker; see the module doc for its protocol and rules."""

    def on_start(self) -> None:
        """Validate the args, start empty, and follow supervision events from the start."""
        self._config = RegistryConfig.model_validate(self.args)
        self._state = RegistryState(self._config)
        self._applied = 0
        self._syncs: Waiters[Reply] = Waiters(self._config.max_syncs)
        self._sweep_at: float | None = None
        self._sweep_token: int | None = None
        self._log = log.bind(actor="registry", path=self.path)
        self.subscribe_events(replay=True)
        self._log.info("registry_started", **self._config.model_dump())

    def _clock(self) -> float:
        return time.monotonic()

    # --- Registry.handle: the messages we accept ------------------------------------------

    def handle(self, message: Message) -> Message | None:
        """Sweep expired messages, send any backlog, then handle ``message``."""
        now = self._clock()
        self._report(self._state.sweep(now))
        for deliveries in self._state.backlog():
            self._send(deliveries)
        try:
            reply = self._dispatch(message, now)
        except Refusal as refusal:
            self._log.info(
                "request_refused", kind=message.kind, error=refusal.error, detail=refusal.message
            )
            reply = ErrorReply(error=refusal.error, message=refusal.message)
        self._schedule_sweep(now)
        return reply

    def _dispatch(self, message: Message, now: float) -> Message | None:
        match message:
            case SupervisionEvent():
                self._on_event(message)
                return None
            case _Sweep():
                self._sweep_at = self._sweep_token = None
                return None
            case RegisterAgent():
                return self._register(message)
            case UpdateStatus():
                card, deliveries = self._state.update_status(message.name, message.status)
                self._log.info("agent_status_updated", agent=card.name, status=card.status)
                return AgentUpdated(card=card, delivered=self._send(deliveries))
            case UnregisterAgent():
                card = self._state.unregister(message.name)
                self._log.info("agent_unregistered", agent=card.name, agent_path=card.path)
                return AgentUnregistered(card=card)
            case GetAgent():
                return AgentFound(card=self._state.directory.get(message.name))
            case ListAgents():
                return AgentsFound(cards=self._state.directory.cards())
            case FindAgents():
                return AgentsFound(cards=self._state.directory.cards(message))
            case DeliverToAgent():
                return self._deliver(message, now)
            case GetRegistryStatistics():
                return self._state.statistics()
            case SyncEvents():
                return self._sync(message)
            case _:
                self._log.warning("unexpected_message", kind=message.kind)
                return ErrorReply(
                    error=ErrorName.NOT_SUPPORTED,
                    message=f"the registry does not handle {message.kind!r}",
                )

    def _register(self, message: RegisterAgent) -> Message:
        card, deliveries = self._state.register(message.card)
        delivered = self._send(deliveries)
        self._log.info(
            "agent_registered",
            agent=card.name,
            agent_path=card.path,
            status=card.status,
            delivered=delivered,
        )
        return AgentRegistered(card=card, delivered=delivered)

    def _deliver(self, message: DeliverToAgent, now: float) -> Message:
        payload = rebuild_payload(message)
        outcome: Forwarded | Kept = self._state.deliver(message.name, payload, now)
        if isinstance(outcome, Forwarded):
            try:
                self.send(outcome.path, outcome.message)
            except Backpressure:
                outcome = self._state.hold_back(message.name, payload, now)
            else:
                return MessageForwarded(name=message.name, path=outcome.path)
        if outcome.dropped is not None:
            self._report([outcome.dropped])
        return MessageHeld(name=message.name, held=outcome.held, expires_in=outcome.expires_in)

    def _sync(self, message: SyncEvents) -> Message | None:
        if message.seq <= self._applied:
            return EventsSynced(seq=self._applied)
        for evicted in self._syncs.add(message.seq, self.defer_reply()):
            evicted(
                ErrorReply(
                    error=ErrorName.SYNC_ABANDONED,
                    message=(
                        f"more than {self._config.max_syncs} SyncEvents requests were waiting"
                    ),
                )
            )
        return None

    # --- Supervision events ---------------------------------------------------------------

    def _on_event(self, event: SupervisionEvent) -> None:
        self._applied = max(self._applied, event.seq)
        path = exited_path(event)
        if path is not None and path != self.path:
            for card in self._state.agent_exited(path):
                self._log.info(
                    "agent_removed",
                    agent=card.name,
                    agent_path=card.path,
                    supervision_event=event.event,
                    reason=event.reason,
                )
        for reply in self._syncs.release(self._applied):
            reply(EventsSynced(seq=self._applied))

    # --- Sending, losses and the sweep timer ------------------------------------------------

    def _send(self, deliveries: Deliveries | None) -> int:
        """Send held messages to their agent; hold again what backpressure refuses."""
        if deliveries is None:
            return 0
        items = deliveries.items
        for index, held in enumerate(items):
            try:
                self.send(deliveries.path, held.message)
            except Backpressure as exc:
                self._state.put_back(deliveries, items[index:])
                self._log.warning(
                    "delivery_postponed",
                    agent=deliveries.name,
                    waiting=len(items) - index,
                    detail=str(exc),
                )
                return index
        if items:
            self._log.info(
                "held_messages_delivered",
                agent=deliveries.name,
                agent_path=deliveries.path,
                count=len(items),
            )
        return len(items)

    def _report(self, losses: list[Loss]) -> None:
        for loss in losses:
            if loss.messages:
                self._log.warning(
                    _LOSS_EVENTS[loss.reason],
                    agent=loss.agent,
                    count=len(loss.messages),
                    kinds=sorted({m.kind for m in loss.messages}),
                )

    def _schedule_sweep(self, now: float) -> None:
        """Keep one timer, at the earliest deadline of the held messages."""
        deadline = self._state.held.next_deadline()
        if deadline is None or (self._sweep_at is not None and self._sweep_at <= deadline):
            return
        if self._sweep_token is not None:
            self.cancel_call(self._sweep_token)
        self._sweep_at = deadline
        self._sweep_token = self.call_later(max(0.0, deadline - now), _Sweep())

    # --- Worker hooks -------------------------------------------------------------------

    def on_undelivered(self, path: str, messages: list[Message], reason: str) -> None:
        """Hold again messages the agent's actor never handled; its card becomes unavailable."""
        now = self._clock()
        self._log.warning(
            "messages_undelivered", agent_path=path, count=len(messages), reason=reason
        )
        self._report(self._state.undelivered(path, messages, now))
        self._schedule_sweep(now)

    def on_stop(self, reason: str) -> None:
        """Report every held message as discarded and answer waiting SyncEvents."""
        self._report(self._state.discard_all())
        for reply in self._syncs.release(2**63):
            reply(
                ErrorReply(
                    error=ErrorName.SYNC_ABANDONED, message=f"the registry stopped: {reason}"
                )
            )


__all__ = ["Registry"]
