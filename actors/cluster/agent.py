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

from actors.core.seam import Address, FrameMeta, SeamActor, pack_address
from actors.core.worker import WORKER_PROCESS_NAME, current_host, host_meets
from protocols import codec
from protocols._lifecycle import _Heartbeat, _HeartbeatAck, _HostLeaving, _Leave, _Left

__all__ = ["AGENT_FILE_ENV", "HostAgent", "host_workers"]

AGENT_FILE_ENV = "UNDERSTUDY_AGENT_FILE"
"""Where the host agent writes its address (``host:port``), for ``understudy join`` to ask it
to leave (set by ``join``; inherited by the agent's process)."""

log = structlog.get_logger("understudy.cluster")

_CHECK = "cluster.agent.check"
_DRAIN = "cluster.agent.drain"
_DRAIN_EVERY = 0.1


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
        self._keeper: Address | None = None
        # ((asker, its request), deadline) while the host leaves
        self._leaving: tuple[tuple[Address, codec.Envelope], float] | None = None

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
        if isinstance(msg, _Leave):
            self._leave(msg, sender, env)
        elif isinstance(msg, _Heartbeat):
            if self._keeper is None:
                self._publish()
            self._keeper = sender
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

    def _publish(self) -> None:
        """Write this agent's address where ``understudy join`` looks for it."""
        path = os.environ.get(AGENT_FILE_ENV)
        if not path:
            return
        ref = pack_address(self.self_address)
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(ref.model_dump_json())
        os.replace(tmp, path)

    def _leave(self, msg: _Leave, sender: Address, env: codec.Envelope) -> None:
        """Have the leader move or stop this host's children, then answer when they are gone."""
        if self._keeper is None:
            self.reply(sender, env, _Left(remaining=len(host_workers(os.getppid()))))
            return
        log.info("host_leaving", host=current_host())
        self.send_message(self._keeper, _HostLeaving(host=current_host() or "?"))
        self._leaving = ((sender, env), time.monotonic() + msg.timeout)
        self.set_timer(_DRAIN_EVERY, _DRAIN)

    def on_wakeup(self, payload: Any) -> None:
        """Check how long the leader has been silent, or whether a leave is done."""
        if payload == _DRAIN and self._leaving is not None:
            (asker, request), deadline = self._leaving
            remaining = len(host_workers(os.getppid()))
            if remaining == 0 or time.monotonic() >= deadline:
                self._leaving = None
                self.reply(asker, request, _Left(remaining=remaining))
            else:
                self.set_timer(_DRAIN_EVERY, _DRAIN)
            return
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
