"""Workers used by the tests; at module level so multiprocTCPBase processes can import them."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from actors import Worker
from protocols import Message


class Ping(Message):
    kind: Literal["test.ping"] = "test.ping"
    token: str = ""


class Pong(Message):
    kind: Literal["test.pong"] = "test.pong"
    token: str
    path: str
    pid: int


class Crash(Message):
    kind: Literal["test.crash"] = "test.crash"
    text: str = "boom"
    error: Literal["ValueError", "KeyError", "RuntimeError"] = "ValueError"


class StopMe(Message):
    kind: Literal["test.stop_me"] = "test.stop_me"
    reason: str = "normal"


class Succeed(Message):
    """Echo reports a success to its supervisor (``Worker.report_success``), then answers Pong."""

    kind: Literal["test.succeed"] = "test.succeed"


class Hang(Message):
    kind: Literal["test.hang"] = "test.hang"
    seconds: float = 60.0


class GetArgs(Message):
    kind: Literal["test.get_args"] = "test.get_args"


class Args(Message):
    kind: Literal["test.args"] = "test.args"
    args: dict[str, object]


class Count(Message):
    kind: Literal["test.count"] = "test.count"


class Counted(Message):
    kind: Literal["test.counted"] = "test.counted"
    n: int


class Echo(Worker):
    """Answers Ping with Pong; Crash raises; StopMe stops; records on_stop to a file if asked."""

    def on_start(self) -> None:
        self.seen = 0
        if self.args.get("fail_start"):
            raise RuntimeError("refusing to start")
        marker = self.args.get("fail_start_if_exists")
        if marker and Path(str(marker)).exists():
            raise RuntimeError("marker says fail")
        self._journal("start")

    def handle(self, message: Message) -> Message | None:
        self.seen += 1
        if isinstance(message, Ping):
            return Pong(token=message.token, path=self.path, pid=os.getpid())
        if isinstance(message, Crash):
            raise {"ValueError": ValueError, "KeyError": KeyError, "RuntimeError": RuntimeError}[
                message.error
            ](message.text)
        if isinstance(message, StopMe):
            self.stop(message.reason)
            return None
        if isinstance(message, Succeed):
            self.report_success()
            return Pong(token="succeeded", path=self.path, pid=os.getpid())
        if isinstance(message, Hang):
            time.sleep(message.seconds)
            return None
        if isinstance(message, GetArgs):
            return Args(args=self.args)
        if isinstance(message, Count):
            return Counted(n=self.seen)
        return None

    def on_stop(self, reason: str) -> None:
        self._journal(f"stop:{reason}")
        if self.args.get("slow_stop"):
            time.sleep(float(self.args["slow_stop"]))  # simulates a cleanup that overruns

    def _journal(self, what: str) -> None:
        journal = self.args.get("journal")
        if journal:
            with Path(str(journal)).open("a") as fh:
                fh.write(f"{self.child_id}:{what}\n")


class NotAWorker:
    """Not a Worker subclass: starting it must fail at validation."""


class Watched(Message):
    kind: Literal["test.watched"] = "test.watched"
    events: list[str]
    state_dir: str


class GetWatched(Message):
    kind: Literal["test.get_watched"] = "test.get_watched"


class Watcher(Worker):
    """Subscribes to supervision events and lists what it saw as "event:child_id"."""

    def on_start(self) -> None:
        self.seen: list[str] = []
        self.subscribe_events(replay=bool(self.args.get("replay")))

    def handle(self, message: Message) -> Message | None:
        from protocols.supervision import SupervisionEvent

        if isinstance(message, SupervisionEvent):
            self.seen.append(f"{message.event}:{message.child_id}")
            return None
        if isinstance(message, GetWatched):
            return Watched(events=self.seen, state_dir=str(self.state_dir))
        return None


class Remind(Message):
    kind: Literal["test.remind"] = "test.remind"
    seconds: float
    note: str


class Reminded(Message):
    kind: Literal["test.reminded"] = "test.reminded"
    note: str


class Reminder(Worker):
    """Remind(seconds, note) answers Reminded(note) once call_later has delivered it back."""

    def on_start(self) -> None:
        self.waiting: dict[str, object] = {}

    def handle(self, message: Message) -> Message | None:
        if isinstance(message, Remind):
            self.waiting[message.note] = self.defer_reply()
            self.call_later(message.seconds, Reminded(note=message.note))
            return None
        if isinstance(message, Reminded):
            reply = self.waiting.pop(message.note)
            reply(message)  # type: ignore[operator]
        return None


def decide_by_reason(reason: str) -> tuple[str, float]:
    """A test decider: ValueError restarts after 0.2 s, KeyError stops, anything else escalates."""
    if reason.startswith("error:ValueError"):
        return "restart", 0.2
    if reason.startswith("error:KeyError"):
        return "stop", 0.0
    return "escalate", 0.0


class Provision(Message):
    kind: Literal["test.provision"] = "test.provision"
    pool: str
    count: int
    missing: str = ""


class Provisioned(Message):
    kind: Literal["test.provisioned"] = "test.provisioned"
    paths: list[str]
    tokens: list[str]
    missing_error: str


class Provisioner(Worker):
    """Runs a flow: start `count` pool children in parallel, ping each, ask a missing path."""

    def handle(self, message: Message) -> Message | None:
        if isinstance(message, Provision):
            self.run_flow(self._provision(message, self.defer_reply()))
        return None

    def _provision(self, order: Provision, answer: object):  # type: ignore[no-untyped-def]
        from actors.core.flow import Call, Gather, Sleep
        from protocols.supervision import StartChild

        infos = yield Gather(
            [Call(order.pool, StartChild(args={"n": i})) for i in range(order.count)]
        )
        paths = [f"{order.pool}/{info.id}" for info in infos]
        yield Sleep(0.01)
        pongs = yield Gather([Call(p, Ping(token=p)) for p in paths])
        error = ""
        if order.missing:
            try:
                yield Call(order.missing, Ping(), timeout=5)
            except Exception as exc:  # noqa: BLE001 - the test reads which error it was
                error = type(exc).__name__
        answer(
            Provisioned(
                paths=paths,
                tokens=[p.token for p in pongs],  # type: ignore[operator]
                missing_error=error,
            )
        )


class Meet(Message):
    kind: Literal["test.meet"] = "test.meet"
    n: int


class Met(Message):
    kind: Literal["test.met"] = "test.met"
    n: int


class Rendezvous(Worker):
    """Answers no Meet until ``n`` of them wait: only requests in flight together meet."""

    def on_start(self) -> None:
        self.waiting: list[Callable[[Message], None]] = []

    def handle(self, message: Message) -> Message | None:
        if isinstance(message, Meet):
            self.waiting.append(self.defer_reply())
            if len(self.waiting) >= message.n:
                waiting, self.waiting = self.waiting, []
                for answer in waiting:
                    answer(Met(n=len(waiting)))
        return None
