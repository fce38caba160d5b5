"""The host agent: the leader's host keeper creates one on every host that joins, and asks it,
every heartbeat interval, whether the host is still there.

Partition safety: an agent that hears no heartbeat for ``stop_after`` seconds (shorter than
the leader's detection bound) concludes that its host is cut off from the leader, which will
declare it down and restart its children elsewhere; so it SIGKILLs the worker processes of
its host first (as broken links kill linked processes in OTP). No child then runs twice once
the partition heals; the host rejoins with a clean slate (the keeper sees it answer again).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import psutil
import structlog

from actors.core.seam import Address, FrameMeta, SeamActor
from actors.core.worker import WORKER_PROCESS_NAME, current_host, host_meets
from protocols import codec
from protocols._lifecycle import _Heartbeat, _HeartbeatAck

__all__ = ["HostAgent", "host_workers"]

log = structlog.get_logger("understudy.cluster")

_CHECK = "cluster.agent.check"


def host_workers(admin_pid: int) -> list[psutil.Process]:
    """The worker processes of a host: the children of its admin named as workers."""
    try:
        children = psutil.Process(admin_pid).children()
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.name() == WORKER_PROCESS_NAME:
                found.append(child)
    return found


class HostAgent(SeamActor):
    """Answers the keeper's heartbeats from the host it was placed on; stops the host's
    workers when the heartbeats stop."""

    def __init__(self) -> None:
        super().__init__()
        self._last: float | None = None
        self._stop_after = 0.0
        self._checking = False
        self._cut_off = False

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
            self._last, self._stop_after = time.monotonic(), msg.stop_after
            if self._cut_off:
                log.info("leader_heard_again", host=current_host())
                self._cut_off = False
            if self._stop_after > 0 and not self._checking:
                self._checking = True
                self.set_timer(self._stop_after / 4, _CHECK)
            self.reply(sender, env, _HeartbeatAck(seq=msg.seq, host=current_host() or "?"))
        else:
            log.warning("unexpected_message", actor=self.describe(), kind=msg.kind)

    def on_wakeup(self, payload: Any) -> None:
        """Check how long the leader has been silent."""
        if payload != _CHECK:
            return
        silence = time.monotonic() - (self._last or time.monotonic())
        if silence >= self._stop_after and not self._cut_off:
            self._cut_off = True
            victims = host_workers(os.getppid())
            log.error(
                "leader_lost",
                host=current_host(),
                silence=round(silence, 2),
                stopping=len(victims),
                reason="no heartbeat from the leader: its workers are restarted elsewhere",
            )
            for proc in victims:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
        self.set_timer(self._stop_after / 4, _CHECK)
