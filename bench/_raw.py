"""Plain Thespian actors: the baselines the benchmarks compare Understudy against."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from thespian.actors import Actor, ActorAddress, ChildActorExited


@dataclass
class RawPing:
    """A small message, like a small typed message."""

    seq: int


class RawEcho(Actor):  # type: ignore[misc]
    """Answers every message with itself; "pid" answers the process id."""

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:  # noqa: N802
        if message == "pid":
            self.send(sender, os.getpid())
        elif isinstance(message, RawPing | str | bytes):
            self.send(sender, message)


class RawCounter(Actor):  # type: ignore[misc]
    """Counts RawPing; ("expect", n) answers once n have arrived; ("ack", n) acks each one."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.expect = 0
        self.asker: ActorAddress | None = None

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:  # noqa: N802
        if isinstance(message, RawPing):
            self.count += 1
            if message.seq < 0:  # windowed mode: acknowledge to the sender
                self.send(sender, "credit")
            self._check()
        elif isinstance(message, tuple) and message[0] == "expect":
            self.expect, self.asker = message[1], sender
            self._check()

    def _check(self) -> None:
        if self.asker is not None and self.count >= self.expect:
            self.send(self.asker, self.count)
            self.asker = None


class RawBurster(Actor):  # type: ignore[misc]
    """("burst", target, n) sends n RawPing at once; ("window", target, n, w) with w credits;
    ("pingpong", target, n) does n sequential request/replies and answers n."""

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:  # noqa: N802
        if isinstance(message, tuple) and message[0] == "burst":
            _, target, n = message
            for seq in range(n):
                self.send(target, RawPing(seq))
            self.send(sender, n)
        elif isinstance(message, tuple) and message[0] == "window":
            _, self.target, self.left, window = message
            self.asker = sender
            for _ in range(min(window, self.left)):
                self.left -= 1
                self.send(self.target, RawPing(-1))
            self.send(self.asker, "started")
        elif message == "credit":
            if self.left > 0:
                self.left -= 1
                self.send(self.target, RawPing(-1))
        elif isinstance(message, tuple) and message[0] == "pingpong":
            _, self.target, self.left = message
            self.asker, self.done = sender, 0
            self.send(self.target, RawPing(0))
        elif isinstance(message, RawPing):
            self.done += 1
            if self.done >= self.left:
                self.send(self.asker, self.done)
            else:
                self.send(self.target, RawPing(self.done))


class RawParent(Actor):  # type: ignore[misc]
    """Keeps one RawEcho child; replaces it when it exits. "child" answers the child's address."""

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:  # noqa: N802
        if message == "child":
            if getattr(self, "kid", None) is None:
                self.kid = self.createActor(RawEcho)
            self.send(sender, self.kid)
        elif isinstance(message, ChildActorExited):
            self.kid = self.createActor(RawEcho)


class RawTreeParent(Actor):  # type: ignore[misc]
    """("spawn", n) creates n RawEcho children one after another, each answering before the
    next is created (as a supervisor starts children in order), then answers n."""

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:  # noqa: N802
        if isinstance(message, tuple) and message[0] == "spawn":
            self.asker, self.todo, self.kids = sender, message[1], []
            self._next()
        elif isinstance(message, int):
            self._next()

    def _next(self) -> None:
        if len(self.kids) == self.todo:
            self.send(self.asker, len(self.kids))
            return
        kid = self.createActor(RawEcho)
        self.kids.append(kid)
        self.send(kid, "pid")


class RawPlacedEcho(RawEcho):
    """A RawEcho placed on the host whose capability ``raw.host`` matches (raw conventions)."""

    @staticmethod
    def actorSystemCapabilityCheck(  # noqa: N802 - Thespian's name
        capabilities: dict[str, Any], requirements: dict[str, Any]
    ) -> bool:
        return all(capabilities.get(k) == v for k, v in requirements.items())
