"""A worker that sends access requests as itself; at module level for multiprocTCPBase."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from actors import Worker
from protocols import Message, message_class


class Forward(Message):
    """Send the message of ``kind`` with ``body`` to ``to`` as this actor; answer its reply."""

    kind: Literal["test.forward"] = "test.forward"
    to: str
    message_kind: str
    body: dict[str, Any]


class Forwarder(Worker):
    def on_start(self) -> None:
        self._waiting: dict[int, Callable[[Message], None]] = {}

    def handle(self, message: Message) -> Message | None:
        if isinstance(message, Forward):
            cls = message_class(message.message_kind)
            assert cls is not None, message.message_kind
            answer = self.defer_reply()
            self._waiting[self.request(message.to, cls.model_validate(message.body))] = answer
        return None

    def on_reply(self, request_id: int, reply: Message) -> None:
        self._waiting.pop(request_id)(reply)
