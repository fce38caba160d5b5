"""Workers for the orchestrator tests (module level: imported by actor processes)."""

from __future__ import annotations

from actors import Worker
from protocols import Message
from protocols.agent import AgentResult, CancelGoal, RunGoal
from protocols.common import Ok
from protocols.registry import AgentCard, AgentSkill, RegisterAgent


class FailingDelegate(Worker):
    """Registers as a "general" agent and fails every goal it is given (counting them)."""

    def on_start(self) -> None:
        self.calls = 0
        card = AgentCard(
            name=self.child_id,
            description="always fails",
            version="1.0",
            path=self.path,
            skills=[
                AgentSkill(id="general", name="general", description="anything", tags=["general"])
            ],
        )
        self.send(str(self.args.get("registry", "root/system/registry")), RegisterAgent(card=card))

    def handle(self, message: Message) -> Message | None:
        if isinstance(message, RunGoal):
            self.calls += 1
            with (self.state_dir / f"{self.child_id}.calls").open("a") as fh:
                fh.write(f"{message.spec.goal}\n")
            return AgentResult(
                run_id=message.run_id,
                agent=self.path,
                success=False,
                error=f"delegate refuses (call {self.calls})",
            )
        return None


class StallingDelegate(Worker):
    """Registers as a "general" agent, takes every goal and never answers it; notes each goal
    and each CancelGoal in ``<state_dir>/<child id>.log``."""

    def on_start(self) -> None:
        card = AgentCard(
            name=self.child_id,
            description="never finishes",
            version="1.0",
            path=self.path,
            skills=[
                AgentSkill(id="general", name="general", description="anything", tags=["general"])
            ],
        )
        self.send(str(self.args.get("registry", "root/system/registry")), RegisterAgent(card=card))
        self.pending: dict[str, object] = {}

    def _note(self, line: str) -> None:
        with (self.state_dir / f"{self.child_id}.log").open("a") as fh:
            fh.write(f"{line}\n")

    def handle(self, message: Message) -> Message | None:
        if isinstance(message, RunGoal):
            self.pending[message.run_id] = self.defer_reply()
            self._note(f"goal {message.run_id}")
            return None
        if isinstance(message, CancelGoal):
            self._note(f"cancel {message.run_id}")
            return Ok()
        return None
