"""The host agent: the leader's host keeper creates one on every host that joins, and asks it,
every heartbeat interval, whether the host is still there."""

from __future__ import annotations

from typing import Any

import structlog

from actors.core.seam import Address, FrameMeta, SeamActor
from actors.core.worker import current_host, host_meets
from protocols import codec
from protocols._lifecycle import _Heartbeat, _HeartbeatAck

__all__ = ["HostAgent"]

log = structlog.get_logger("understudy.cluster")


class HostAgent(SeamActor):
    """Answers the keeper's heartbeats from the host it was placed on."""

    @staticmethod
    def actorSystemCapabilityCheck(  # noqa: N802 - Thespian's name
        capabilities: dict[str, Any], requirements: dict[str, Any]
    ) -> bool:
        """Thespian asks it which host of the convention the agent is for."""
        return host_meets(capabilities, requirements)

    def describe(self) -> str:
        """Return the agent's name for logs."""
        return f"host-agent({current_host()})"

    def on_message(self, env: codec.Envelope, sender: Address, meta: FrameMeta) -> None:
        """Answer a heartbeat; log anything else."""
        msg = env.message
        if isinstance(msg, _Heartbeat):
            self.reply(sender, env, _HeartbeatAck(seq=msg.seq, host=current_host() or "?"))
        else:
            log.warning("unexpected_message", actor=self.describe(), kind=msg.kind)
