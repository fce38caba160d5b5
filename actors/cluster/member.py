"""``understudy join``: run this host's ActorSystem as a member of a leader's convention.

The member opens a multiprocTCPBase ActorSystem bound to ``listen``, guarded by the
deployment secret (the leader's), whose capabilities name the leader's admin (Thespian's
``Convention Address.IPv4``), this host (``understudy.host``) and its placement capabilities
(``understudy.cap.<KEY>``). The leader's host keeper then places a host agent here and watches
the host; supervisors place children here by name or capability. The member stays in the
foreground until SIGTERM or SIGINT, then leaves gracefully: it asks its host agent to have
the leader move or stop the children placed here (each supervisor stops them in order and
starts them again where their placement allows), waits until they are gone (``leave_timeout``
at most), then shuts its ActorSystem down (the leader sees the host leave: ``host_down``).
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import threading
from pathlib import Path
from types import FrameType

import structlog

from actors.cluster.agent import AGENT_FILE_ENV
from actors.core.keyring import Keyring, SecretError, read_key_file, secret_path
from actors.core.runtime import free_port
from actors.core.seam import decode_reply, encode_external, open_system, unpack_address
from actors.core.worker import HOST_ENV, host_capabilities
from protocols import codec
from protocols._lifecycle import ActorRef, _Leave, _Left
from protocols.topology import HOST_NAME_PATTERN

__all__ = ["JoinError", "member_capabilities", "parse_leader", "run_member"]

log = structlog.get_logger("understudy.cluster")


class JoinError(Exception):
    """The member cannot join: a bad argument or a missing secret, said plainly."""


def parse_leader(leader: str) -> tuple[str, int]:
    """``ADDRESS:PORT`` -> (address, port).

    Raises:
        JoinError: not an IPv4 address and a port.
    """
    host, sep, port = leader.rpartition(":")
    try:
        ipaddress.IPv4Address(host)
        number = int(port)
    except ValueError:
        number = 0
    if not sep or not 0 < number < 65536:
        msg = f"LEADER must be ADDRESS:PORT (the leader's admin), got {leader!r}"
        raise JoinError(msg)
    return host, number


def member_capabilities(
    leader: tuple[str, int], name: str, capabilities: dict[str, str], admin_port: int
) -> dict[str, object]:
    """The ActorSystem capabilities of a member."""
    if not re.match(HOST_NAME_PATTERN, name):
        msg = f"--name must match {HOST_NAME_PATTERN}, got {name!r}"
        raise JoinError(msg)
    return {
        "Admin Port": admin_port,
        "Convention Address.IPv4": leader,
        **host_capabilities(name, capabilities),
    }


def run_member(
    *,
    leader: str,
    name: str,
    listen: str,
    capabilities: dict[str, str],
    secret_file: str | None,
    state_dir: str,
    admin_port: int | None,
    stop: threading.Event | None = None,
    leave_timeout: float = 30.0,
) -> None:
    """Join, then wait for SIGTERM / SIGINT (or ``stop``), then leave.

    Raises:
        JoinError: bad arguments, or no readable deployment secret.
    """
    address = parse_leader(leader)
    try:
        ipaddress.IPv4Address(listen)
    except ValueError:
        msg = f"--listen must be an IPv4 address, got {listen!r}"
        raise JoinError(msg) from None
    path = secret_path(secret_file, state_dir)
    try:
        read_key_file(path)
    except SecretError as exc:
        msg = f"the deployment secret (copy the leader's, mode 0600): {exc}"
        raise JoinError(msg) from exc
    port = admin_port or free_port(listen)
    caps = member_capabilities(address, name, capabilities, port)
    os.environ[HOST_ENV] = name  # inherited by the admin and every actor process it forks
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    agent_file = Path(state_dir).resolve() / "host-agent.json"
    agent_file.unlink(missing_ok=True)
    os.environ[AGENT_FILE_ENV] = str(agent_file)
    system = open_system("multiprocTCPBase", caps, keyring=Keyring(path.resolve()), listen=listen)
    log.info("host_joined", host=name, leader=leader, admin=f"{listen}:{port}")
    done = stop or threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not done.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        try:
            _drain(system, agent_file, leave_timeout)
        finally:
            system.shutdown()
            agent_file.unlink(missing_ok=True)
            log.info("host_left", host=name, leader=leader)


def _drain(system: object, agent_file: Path, timeout: float) -> None:
    """Ask this host's agent to have its children moved or stopped; wait for the answer."""
    try:
        ref = ActorRef.model_validate_json(agent_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("leave_without_agent", reason="the leader never reached this host's agent")
        return
    message_id = codec.new_message_id()
    frame = encode_external(_Leave(timeout=timeout), message_id=message_id, ask=True)
    raw = system.ask(unpack_address(ref), frame, timeout + 5)  # type: ignore[attr-defined]
    decoded = decode_reply(raw, message_id, max_size=codec.DEFAULT_MAX_SIZE) if raw else None
    if decoded is None or not isinstance(decoded[0].message, _Left):
        log.warning("leave_unanswered", timeout=timeout, agent=ref.key())
    elif decoded[0].message.remaining:
        log.warning("leave_incomplete", remaining=decoded[0].message.remaining)
    else:
        log.info("host_drained")
