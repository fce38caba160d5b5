"""Workers for the fast-path tests and benchmarks (module level: imported by actor processes)."""

from __future__ import annotations

import os
import signal
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


class WaitDrained(Message):
    """Source: answer the items reported undelivered (Seen) once everything sent to ``target``
    was handled there or reported undelivered (nothing queued or in flight)."""

    kind: Literal["fast.wait_drained"] = "fast.wait_drained"
    target: str


class _CheckDrained(Message):
    kind: Literal["fast.check_drained"] = "fast.check_drained"


class WaitSeen(Message):
    """Sink: answer once ``count`` items have been handled."""

    kind: Literal["fast.wait_seen"] = "fast.wait_seen"
    count: int


class WaitAccounted(Message):
    """Sink: answer once the items handled plus those a gone sender lost reach ``count``."""

    kind: Literal["fast.wait_accounted"] = "fast.wait_accounted"
    count: int


class Accounted(Message):
    kind: Literal["fast.accounted"] = "fast.accounted"
    seqs: list[int]
    lost: int


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
    """Records the seq of every Item in order, and how many a gone sender lost; crashes on
    ``crash_on``; journals if asked; ``work`` seconds per Item make it a slow receiver."""

    def on_start(self) -> None:
        self.seen: list[int] = []
        self.lost = 0
        self.waiter: tuple[int, Callable[[Message], None]] | None = None
        self.accounted_waiter: tuple[int, Callable[[Message], None]] | None = None
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
            self._answer_accounted()
            return None
        if isinstance(message, WaitAccounted):
            if len(self.seen) + self.lost >= message.count:
                return Accounted(seqs=self.seen, lost=self.lost)
            self.accounted_waiter = (message.count, self.defer_reply())
            return None
        if isinstance(message, GetSeen):
            return Seen(seqs=self.seen)
        if isinstance(message, WaitSeen):
            if len(self.seen) >= message.count:
                return Seen(seqs=self.seen)
            self.waiter = (message.count, self.defer_reply())
            return None
        return message  # anything else (a Probe) is echoed back: the request/reply path

    def on_lost(self, sender: str, count: int, reason: str) -> None:
        self.lost += count
        self._answer_accounted()

    def _answer_accounted(self) -> None:
        waiter = self.accounted_waiter
        if waiter is not None and len(self.seen) + self.lost >= waiter[0]:
            waiter[1](Accounted(seqs=self.seen, lost=self.lost))
            self.accounted_waiter = None

    def on_stop(self, reason: str) -> None:
        if self.journal:
            self.journal.close()


class Source(Worker):
    """Sends bursts of Items; remembers which ones were reported undelivered."""

    def on_start(self) -> None:
        self.undelivered: list[int] = []
        self.draining: list[tuple[str, Callable[[Message], None]]] = []

    def handle(self, message: Message) -> Message | None:
        if isinstance(message, Burst):
            for seq in range(message.start, message.start + message.count):
                self.send(message.target, Item(seq=seq))
            return Sent(count=message.count)
        if isinstance(message, WaitDrained):
            self.draining.append((message.target, self.defer_reply()))
            self._check_drained()
        if isinstance(message, _CheckDrained):
            self._check_drained()
        return None

    def _check_drained(self) -> None:
        """Answer the waits whose target has nothing left in flight; look again in 10 ms."""
        still = []
        for target, answer in self.draining:
            if self.unacknowledged(target) == 0:
                answer(Seen(seqs=sorted(self.undelivered)))
            else:
                still.append((target, answer))
        self.draining = still
        if still:
            self.call_later(0.01, _CheckDrained())

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


class LossySink(Sink):
    """A Sink whose process loses every ``lose_every``-th data-path frame it sends (its
    acknowledgements), and that SIGKILLs itself on item ``kill_on`` (once: a marker file)."""

    def on_start(self) -> None:
        super().on_start()
        if self.args.get("lose_every"):
            from tests.integration._lossy import lose_every

            lose_every(int(self.args["lose_every"]))

    def handle(self, message: Message) -> Message | None:
        if isinstance(message, Item) and message.seq == self.args.get("kill_on"):
            marker = Path(str(self.args["marker"]))
            if not marker.exists():
                marker.write_text("killed\n")
                os.kill(os.getpid(), signal.SIGKILL)
        return super().handle(message)


class LossySource(Source):
    """A Source whose process loses every ``lose_every``-th data-path frame it sends."""

    def on_start(self) -> None:
        super().on_start()
        if self.args.get("lose_every"):
            from tests.integration._lossy import lose_every

            lose_every(int(self.args["lose_every"]))


class GetPid(Message):
    kind: Literal["fast.get_pid"] = "fast.get_pid"


class Pid(Message):
    kind: Literal["fast.pid"] = "fast.pid"
    pid: int


class KillableSource(Source):
    """A Source that answers its pid (the test SIGKILLs it mid-stream)."""

    def handle(self, message: Message) -> Message | None:
        if isinstance(message, GetPid):
            return Pid(pid=os.getpid())
        return super().handle(message)
