"""Plain Thespian actors used to show Thespian's defects next to Understudy's fixes."""

from __future__ import annotations

import os
from typing import Any

from thespian.actors import Actor, ActorAddress

from actors.core.workarounds import die_with_creator, die_with_parent
from protocols import codec
from protocols.common import Ok


class RawLeaf(Actor):  # type: ignore[misc]
    """Answers its pid; on ("protect", ppid) installs die_with_parent first."""

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:  # noqa: N802
        if isinstance(message, tuple) and message[0] == "protect":
            die_with_parent(message[1])
        self.send(sender, os.getpid())


class RawBoundLeaf(RawLeaf):
    """A RawLeaf bound to its creator from its creation (``die_with_creator``)."""

    def __init__(self) -> None:
        super().__init__()
        die_with_creator()


class RawParent(Actor):  # type: ignore[misc]
    """Creates a RawLeaf on "spawn" / "spawn-protected" and answers (pid, leaf pid address)."""

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:  # noqa: N802
        if message == "spawn-bound":
            self.asker = sender
            self.leaf = self.createActor(RawBoundLeaf)
            self.send(self.leaf, "pid")
        elif message in ("spawn", "spawn-protected"):
            self.asker = sender
            self.leaf = self.createActor(RawLeaf)
            self.send(
                self.leaf, ("protect", os.getpid()) if message == "spawn-protected" else "pid"
            )
        elif isinstance(message, int):
            self.send(self.asker, (os.getpid(), message))


class RawFlaky(Actor):  # type: ignore[misc]
    """Counts deliveries of "boom" and raises on each; "count" answers the count."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:  # noqa: N802
        if message == "boom":
            self.calls += 1
            raise ValueError("boom")
        if message == "count":
            self.send(sender, self.calls)


class RawDoubleReply(Actor):  # type: ignore[misc]
    """Answers a request frame twice: first a stale reply, then the real one."""

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:  # noqa: N802
        if isinstance(message, bytes):
            env = codec.decode_envelope(message)
            self.send(sender, codec.encode(Ok(), correlation_id=env.message_id - 1))
            self.send(sender, codec.encode(Ok(), correlation_id=env.message_id))
