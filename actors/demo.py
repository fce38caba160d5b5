"""Demo workers for the default topology.yaml: an echo service and dynamic jobs."""

from __future__ import annotations

import os
from typing import Literal

from actors.core.worker import Worker
from protocols._base import Message

__all__ = [
    "Echo",
    "Fail",
    "Ping",
    "Pong",
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
