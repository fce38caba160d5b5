"""Workers for the registry tests; at module level so multiprocTCPBase processes import them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from actors import Worker
from protocols import Message
from protocols.registry import (
    REGISTRY_PATH,
    AgentCapabilities,
    AgentCard,
    AgentRegistered,
    AgentSkill,
    RegisterAgent,
)


class Note(Message):
    """A payload delivered to an agent through the registry."""

    kind: Literal["test.registry_note"] = "test.registry_note"
    text: str


class WaitNotes(Message):
    """Answer with Notes once at least ``count`` notes have arrived."""

    kind: Literal["test.registry_wait_notes"] = "test.registry_wait_notes"
    count: int


class Notes(Message):
    kind: Literal["test.registry_notes"] = "test.registry_notes"
    notes: list[str]


class WaitRegistered(Message):
    """Answer with Registered once the registry has accepted this agent's card."""

    kind: Literal["test.registry_wait_registered"] = "test.registry_wait_registered"


class Registered(Message):
    kind: Literal["test.registry_registered"] = "test.registry_registered"
    name: str
    delivered: int


class CardAgent(Worker):
    """Registers its card from on_start; records the Notes it receives, in order.

    Args: ``registry`` (path), ``name``, ``tags`` (skill tags), ``streaming`` (capability).
    """

    def on_start(self) -> None:
        self.notes: list[str] = []
        self.registered: Registered | None = None
        self.note_waiters: list[tuple[int, Callable[[Message], None]]] = []
        self.registered_waiters: list[Callable[[Message], None]] = []
        name = str(self.args.get("name", self.child_id))
        tags = [str(t) for t in self.args.get("tags", ["general"])]
        card = AgentCard(
            name=name,
            description=f"test agent {name}",
            version="1.0.0",
            path=self.path,
            capabilities=AgentCapabilities(streaming=bool(self.args.get("streaming", False))),
            skills=[
                AgentSkill(id=f"{name}-main", name="main", description="does the work", tags=tags)
            ],
        )
        self.request(str(self.args.get("registry", REGISTRY_PATH)), RegisterAgent(card=card))

    def on_reply(self, request_id: int, reply: Message) -> None:
        if isinstance(reply, AgentRegistered):
            self.registered = Registered(name=reply.card.name, delivered=reply.delivered)
            for waiter in self.registered_waiters:
                waiter(self.registered)
            self.registered_waiters.clear()

    def handle(self, message: Message) -> Message | None:
        if isinstance(message, Note):
            self.notes.append(message.text)
            ready = [w for n, w in self.note_waiters if n <= len(self.notes)]
            self.note_waiters = [(n, w) for n, w in self.note_waiters if n > len(self.notes)]
            for waiter in ready:
                waiter(Notes(notes=self.notes))
            return None
        if isinstance(message, WaitNotes):
            if len(self.notes) >= message.count:
                return Notes(notes=self.notes)
            self.note_waiters.append((message.count, self.defer_reply()))
            return None
        if isinstance(message, WaitRegistered):
            if self.registered is not None:
                return self.registered
            self.registered_waiters.append(self.defer_reply())
            return None
        return None
