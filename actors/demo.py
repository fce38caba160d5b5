"""Demo workers for the default topology.yaml and the example experiments: an echo service,
dynamic jobs, and a relay that passes pings on to another worker (actor-to-actor traffic, which
the message ledger accounts for)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Literal

from actors.core.worker import Worker
from protocols._base import Message
from protocols.common import ErrorReply

__all__ = [
    "Echo",
    "Fail",
    "Ping",
    "Pong",
    "Relay",
]


class Ping(Message):
    """Ask a demo worker for a Pong."""

    kind: Literal["example.ping"] = "example.ping"
    token: str = ""


class Pong(Message):
    """A demo worker's answer: who answered, from which process."""

    kind: Literal["example.pong"] = "example.pong"
    token: str
    path: str
    pid: int


class Fail(Message):
    """Make a demo worker raise (to watch its supervisor restart it)."""

    kind: Literal["example.fail"] = "example.fail"
    text: str = "asked to fail"


class Echo(Worker):
    """Answers Ping with Pong; Fail raises."""

    def handle(self, message: Message) -> Message | None:
        """Answer Ping; raise on Fail."""
        if isinstance(message, Ping):
            return Pong(token=message.token, path=self.path, pid=os.getpid())
        if isinstance(message, Fail):
            raise RuntimeError(message.text)
        return None


class _Expired(Message):
    kind: Literal["example.relay_expired"] = "example.relay_expired"
    request_id: int


class Relay(Worker):
    """Answers Ping by asking ``args.to`` (a path) the same Ping and passing its answer (or its
    error) back; a request unanswered after ``args.timeout`` seconds (default 2) is answered
    with an ``AskTimeout`` error instead of waiting for ever."""

    def on_start(self) -> None:
        self._to = str(self.args["to"])
        self._timeout = float(self.args.get("timeout", 2.0))
        self._pending: dict[int, tuple[Callable[[Message], None], int]] = {}

    def handle(self, message: Message) -> Message | None:
        """Relay a Ping; expire a request that was not answered in time."""
        if isinstance(message, Ping):
            reply = self.defer_reply()
            request_id = self.request(self._to, message)
            timer = self.call_later(self._timeout, _Expired(request_id=request_id))
            self._pending[request_id] = (reply, timer)
        elif isinstance(message, _Expired):
            pending = self._pending.pop(message.request_id, None)
            if pending is not None:
                text = f"{self._to} did not answer within {self._timeout} s"
                pending[0](ErrorReply(error="AskTimeout", message=text))
        elif isinstance(message, Fail):
            raise RuntimeError(message.text)
        return None

    def on_reply(self, request_id: int, reply: Message) -> None:
        """Pass the answer (a Pong, or the error the request ended with) back."""
        pending = self._pending.pop(request_id, None)
        if pending is None:
            return
        self.cancel_call(pending[1])
        pending[0](reply)
