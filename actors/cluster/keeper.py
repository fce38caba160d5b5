"""The host keeper: on the leader, it watches every host of the convention.

Thespian tells it when a host's ActorSystem joins or leaves the convention (with the host's
capabilities: ``understudy.host`` names it). The keeper then places a host agent there and
sends it a heartbeat every ``heartbeat_interval``; a phi accrual detector
(``actors.cluster.detector``) turns the replies, or their absence, into the host's status,
which the keeper reports to the guardian (events ``host_up`` / ``host_suspect`` /
``host_down``; a ``down`` host's children exit ``noconnection``).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

import structlog

from actors.cluster.detector import HostHealth, PhiAccrualDetector
from actors.core.seam import Address, FrameMeta, SeamActor, unpack_address
from actors.core.worker import CAPABILITY_PREFIX, HOST_CAPABILITY
from protocols import codec
from protocols._lifecycle import (
    _Heartbeat,
    _HeartbeatAck,
    _HostChanged,
    _HostLeaving,
    _KeeperStart,
)
from protocols.topology import ClusterConfig

__all__ = ["HOST_AGENT", "HostKeeper"]

log = structlog.get_logger("understudy.cluster")

HOST_AGENT = "actors.cluster.agent.HostAgent"
_TICK = "cluster.tick"


@dataclass
class _Host:
    name: str
    admin: str
    agent: Address
    capabilities: dict[str, str]
    detector: PhiAccrualDetector
    status: HostHealth | None = None
    """None until its first reply."""
    last_seen: float | None = None


class HostKeeper(SeamActor):
    """Watches the hosts of the leader's convention."""

    def __init__(self) -> None:
        super().__init__()
        self._config = ClusterConfig()
        self._guardian: Address | None = None
        self._hosts: dict[str, _Host] = {}
        self._seq = itertools.count(1)

    def describe(self) -> str:
        """Return the keeper's name for logs."""
        return "host-keeper"

    def on_message(self, env: codec.Envelope, sender: Address, meta: FrameMeta) -> None:
        """Start, or take a heartbeat reply."""
        msg = env.message
        if isinstance(msg, _KeeperStart) and self._guardian is None:
            self._config = msg.cluster
            self._guardian = unpack_address(msg.guardian)
            self.watch_hosts()
            self.set_timer(self._config.heartbeat_interval, _TICK)
        elif isinstance(msg, _HeartbeatAck):
            self._heartbeat_reply(msg, sender)
        elif isinstance(msg, _HostLeaving):
            host = self._hosts.get(msg.host)
            if host is not None and host.agent == sender and self._guardian is not None:
                log.info("host_leaving", host=host.name)
                self.send_message(
                    self._guardian,
                    _HostChanged(
                        name=host.name,
                        address=host.admin,
                        status="leaving",
                        capabilities=host.capabilities,
                        reason="it is leaving the cluster",
                        last_seen=host.last_seen,
                    ),
                )
        else:
            log.warning("unexpected_message", actor=self.describe(), kind=msg.kind)

    def on_host_registration(
        self, admin: str, capabilities: dict[str, Any], *, added: bool
    ) -> None:
        """A host's ActorSystem joined or left the convention."""
        name = capabilities.get(HOST_CAPABILITY)
        if not isinstance(name, str):
            log.warning("host_unnamed", admin=admin, added=added)
            return
        known = self._hosts.get(name)
        if not added:
            if known is not None and known.admin == admin:
                self._report(known, "down", "it left the convention")
                del self._hosts[name]
            return
        if known is not None and known.admin != admin and known.status in ("up", "suspect"):
            log.error("host_name_taken", host=name, admin=admin, holder=known.admin)
            return
        caps = {
            key.removeprefix(CAPABILITY_PREFIX): str(value)
            for key, value in capabilities.items()
            if key.startswith(CAPABILITY_PREFIX)
        }
        config = self._config
        agent = self.spawn_on(HOST_AGENT, {HOST_CAPABILITY: name})
        self._hosts[name] = _Host(
            name,
            admin,
            agent,
            caps,
            PhiAccrualDetector(
                expected_interval=config.heartbeat_interval,
                acceptable_pause=config.acceptable_heartbeat_pause,
                threshold=config.threshold,
                suspect_threshold=config.suspect_threshold,
                min_std=config.min_std_deviation,
            ),
        )
        log.info("host_joining", host=name, admin=admin, capabilities=caps)

    def _heartbeat_reply(self, msg: _HeartbeatAck, sender: Address) -> None:
        host = self._hosts.get(msg.host)
        if host is None or host.agent != sender:
            return
        now = time.monotonic()
        host.detector.heartbeat(now)
        host.last_seen = time.time()
        if host.status != "up":
            self._report(host, "up", "it answers heartbeats")

    def on_wakeup(self, payload: Any) -> None:
        """Every heartbeat interval: ask every host, and judge each one's silence."""
        if payload != _TICK:
            return
        now = time.monotonic()
        config = self._config
        # A member cut off from the leader stops its workers before the leader declares it
        # down (about 2.8 s with the defaults) and restarts them elsewhere.
        stop_after = config.acceptable_heartbeat_pause + 2 * config.heartbeat_interval
        for host in list(self._hosts.values()):
            if host.status is not None:
                health = host.detector.health(now)
                if health != host.status and not (health == "up" and host.status == "down"):
                    silence = now - (host.detector.last or now)
                    self._report(
                        host,
                        health,
                        f"no heartbeat reply for {silence:.2f} s "
                        f"(phi {host.detector.phi(now):.1f})",
                    )
            self.send_message(host.agent, _Heartbeat(seq=next(self._seq), stop_after=stop_after))
        self.set_timer(self._config.heartbeat_interval, _TICK)

    def _report(self, host: _Host, status: HostHealth, reason: str) -> None:
        host.status = status
        if self._guardian is not None:
            self.send_message(
                self._guardian,
                _HostChanged(
                    name=host.name,
                    address=host.admin,
                    status=status,
                    capabilities=host.capabilities,
                    reason=reason,
                    last_seen=host.last_seen,
                ),
            )
