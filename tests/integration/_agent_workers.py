"""Workers for the agent tests; at module level so multiprocTCPBase processes can import them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from actors import Worker
from protocols import Message
from protocols.agent import AgentProgress


class GetProgress(Message):
    """Answer with the progress of ``run_id`` once its ``finished`` item arrived (or at timeout)."""

    kind: Literal["test.agent.get_progress"] = "test.agent.get_progress"
    run_id: str
    timeout: float = 10.0


class ProgressSeen(Message):
    kind: Literal["test.agent.progress_seen"] = "test.agent.progress_seen"
    items: list[AgentProgress]
    complete: bool


class _Expired(Message):
    kind: Literal["test.agent.progress_expired"] = "test.agent.progress_expired"
    run_id: str


class ProgressCollector(Worker):
    """Keeps every AgentProgress it receives; answers GetProgress without polling."""

    def on_start(self) -> None:
        self.items: list[AgentProgress] = []
        self.waiting: dict[str, list[Callable[[Message], None]]] = {}

    def handle(self, message: Message) -> Message | None:
        if isinstance(message, AgentProgress):
            self.items.append(message)
            if message.what == "finished":
                self._answer(message.run_id, complete=True)
            return None
        if isinstance(message, GetProgress):
            if self._finished(message.run_id):
                return self._seen(message.run_id, complete=True)
            self.waiting.setdefault(message.run_id, []).append(self.defer_reply())
            self.call_later(message.timeout, _Expired(run_id=message.run_id))
            return None
        if isinstance(message, _Expired):
            self._answer(message.run_id, complete=False)
        return None

    def _finished(self, run_id: str) -> bool:
        return any(i.run_id == run_id and i.what == "finished" for i in self.items)

    def _seen(self, run_id: str, *, complete: bool) -> ProgressSeen:
        return ProgressSeen(items=[i for i in self.items if i.run_id == run_id], complete=complete)

    def _answer(self, run_id: str, *, complete: bool) -> None:
        for answer in self.waiting.pop(run_id, []):
            answer(self._seen(run_id, complete=complete))
