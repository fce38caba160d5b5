"""Workers for the fast-path tests and benchmarks (module level: imported by actor processes)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from actors import Worker
from protocols import Message


class Item(Message):
    kind: Literal["fast.item"] = "fast.item"
    seq: int


class Burst(Message):
    """Source: send items seq in [start, start + count) to ``target``."""

    kind: Literal["fast.burst"] = "fast.burst"
    target: str
    start: int = 0
    count: int


class Sent(Message):
    kind: Literal["fast.sent"] = "fast.sent"
    count: int


class GetSeen(Message):
    kind: Literal["fast.get_seen"] = "fast.get_seen"


class Seen(Message):
    kind: Literal["fast.seen"] = "fast.seen"
    seqs: list[int]


class GetUndelivered(Message):
    kind: Literal["fast.get_undelivered"] = "fast.get_undelivered"


class WaitSeen(Message):
    """Sink: answer once ``count`` items have been handled."""

    kind: Literal["fast.wait_seen"] = "fast.wait_seen"
    count: int


class Pipeline(Message):
    """Requester: send ``count`` requests to ``target`` with at most ``window`` outstanding."""

    kind: Literal["fast.pipeline"] = "fast.pipeline"
    target: str
    count: int
    window: int = 64


class Probe(Message):
    kind: Literal["fast.probe"] = "fast.probe"
    seq: int


class Done(Message):
    kind: Literal["fast.done"] = "fast.done"
    count: int


class Sink(Worker):
    """Records the seq of every Item in order; crashes on ``crash_on``; journals if asked;
    ``work`` seconds per Item make it a slow receiver."""

    def on_start(self) -> None:
        self.seen: list[int] = []
        self.waiter: tuple[int, Callable[[Message], None]] | None = None
        journal = self.args.get("journal")
        self.journal = Path(str(journal)).open("a") if journal else None  # noqa: SIM115

    def handle(self, message: Message) -> Message | None:
        if isinstance(message, Item):
            if message.seq == self.args.get("crash_on"):
                if self.journal:
                    self.journal.write("crash\n")
                    self.journal.flush()
                raise RuntimeError(f"crash on {message.seq}")
            self.seen.append(message.seq)
            if self.args.get("work"):
                time.sleep(float(self.args["work"]))  # the work an Item costs: a slow receiver
            if self.journal:
                self.journal.write(f"{message.seq}\n")
                self.journal.flush()
            if self.waiter is not None and len(self.seen) >= self.waiter[0]:
                self.waiter[1](Seen(seqs=self.seen))
                self.waiter = None
            return None
        if isinstance(message, GetSeen):
            return Seen(seqs=self.seen)
        if isinstance(message, WaitSeen):
            if len(self.seen) >= message.count:
                return Seen(seqs=self.seen)
            self.waiter = (message.count, self.defer_reply())
            return None
        return message  # anything else (a Probe) is echoed back: the request/reply path

    def on_stop(self, reason: str) -> None:
        if self.journal:
            self.journal.close()


class Source(Worker):
    """Sends bursts of Items; remembers which ones were reported undelivered."""

    def on_start(self) -> None:
        self.undelivered: list[int] = []

    def handle(self, message: Message) -> Message | None:
        if isinstance(message, Burst):
            for seq in range(message.start, message.start + message.count):
                self.send(message.target, Item(seq=seq))
            return Sent(count=message.count)
        if isinstance(message, GetUndelivered):
            return Seen(seqs=sorted(self.undelivered))
        return None

    def on_undelivered(self, path: str, messages: list[Message], reason: str) -> None:
        self.undelivered.extend(m.seq for m in messages if isinstance(m, Item))


class Requester(Worker):
    """Pipelines requests to a target and answers when every reply has arrived."""

    def on_start(self) -> None:
        self.todo = 0
        self.outstanding = 0
        self.replies = 0
        self.target = ""
        self.done: Callable[[Message], None] | None = None

    def handle(self, message: Message) -> Message | None:
        if isinstance(message, Pipeline):
            self.todo, self.replies, self.target = message.count, 0, message.target
            self.window = message.window
            self.done = self.defer_reply()
            self._fill()
        return None

    def _fill(self) -> None:
        while self.todo > 0 and self.outstanding < self.window:
            self.request(self.target, Probe(seq=self.todo))
            self.todo -= 1
            self.outstanding += 1

    def on_reply(self, request_id: int, reply: Message) -> None:
        self.outstanding -= 1
        self.replies += 1
        self._fill()
        if self.todo == 0 and self.outstanding == 0 and self.done is not None:
            self.done(Done(count=self.replies))
            self.done = None
