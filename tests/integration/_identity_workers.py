"""Workers for the identity tests; at module level so multiprocTCPBase processes import them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from actors import Worker
from protocols import Message
from protocols.identity import Identity


class WhoAmI(Message):
    kind: Literal["test.who_am_i"] = "test.who_am_i"


class YouAre(Message):
    kind: Literal["test.you_are"] = "test.you_are"
    identity: Identity | None


class AskWho(Message):
    """Ask the probe at ``path`` who I am, and answer with what it said."""

    kind: Literal["test.ask_who"] = "test.ask_who"
    path: str


class Probe(Worker):
    """Answers WhoAmI with the verified identity of the sender."""

    verify_senders = True

    def handle(self, message: Message) -> Message | None:
        if isinstance(message, WhoAmI):
            return YouAre(identity=self.sender)
        return None


class Unverified(Worker):
    """Like Probe, but does not ask for its senders' identities."""

    def handle(self, message: Message) -> Message | None:
        return YouAre(identity=self.sender)


class Relay(Worker):
    """Asks a probe on the caller's behalf, so the probe sees this actor as the sender."""

    def on_start(self) -> None:
        self._waiting: dict[int, Callable[[Message], None]] = {}

    def handle(self, message: Message) -> Message | None:
        if isinstance(message, AskWho):
            answer = self.defer_reply()
            self._waiting[self.request(message.path, WhoAmI())] = answer
        return None

    def on_reply(self, request_id: int, reply: Message) -> None:
        self._waiting.pop(request_id)(reply)
