"""Workers for the fail-fast tests; at module level so multiprocTCPBase processes import them."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from actors import Worker
from protocols import Message
from protocols.common import ErrorReply


class Block(Message):
    """Write this process's pid to the FIFO ``fifo``, then block (until killed)."""

    kind: Literal["test.block"] = "test.block"
    fifo: str


class Park(Message):
    """Answer later (never, unless the worker exits)."""

    kind: Literal["test.park"] = "test.park"


class Parked(Message):
    kind: Literal["test.parked"] = "test.parked"
    n: int = 0


class Boom(Message):
    kind: Literal["test.boom"] = "test.boom"


class Via(Message):
    """Ask the actor at ``path`` to block or park, on the test's behalf."""

    kind: Literal["test.via"] = "test.via"
    path: str
    what: Literal["block", "park"]
    fifo: str = ""


class GetOutcome(Message):
    kind: Literal["test.get_outcome"] = "test.get_outcome"


class Outcome(Message):
    """What the relayed request ended with."""

    kind: Literal["test.outcome"] = "test.outcome"
    reply_kind: str
    error: str | None = None
    reason: str | None = None


class Blocker(Worker):
    def on_start(self) -> None:
        self._parked: list[Callable[[Message], None]] = []

    def handle(self, message: Message) -> Message | None:
        if isinstance(message, Block):
            with Path(message.fifo).open("w") as fifo:
                fifo.write(str(os.getpid()))
            time.sleep(120)  # the test kills this process while it blocks here
            return None
        if isinstance(message, Park):
            self._parked.append(self.defer_reply())
            return None
        if isinstance(message, Parked):
            return Parked(n=len(self._parked))
        if isinstance(message, Boom):
            raise ValueError("boom")
        return None


class Relay(Worker):
    def on_start(self) -> None:
        self._outcome: Outcome | None = None
        self._waiting: list[Callable[[Message], None]] = []

    def handle(self, message: Message) -> Message | None:
        if isinstance(message, Via):
            request = Block(fifo=message.fifo) if message.what == "block" else Park()
            self.request(message.path, request)
            return None
        if isinstance(message, GetOutcome):
            if self._outcome is not None:
                return self._outcome
            self._waiting.append(self.defer_reply())
        return None

    def on_reply(self, request_id: int, reply: Message) -> None:
        error = reply if isinstance(reply, ErrorReply) else None
        self._outcome = Outcome(
            reply_kind=reply.kind,
            error=error.error if error else None,
            reason=error.reason if error else None,
        )
        waiting, self._waiting = self._waiting, []
        for answer in waiting:
            answer(self._outcome)
