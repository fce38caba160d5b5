"""Hosts of a cluster: what the Runtime and the CLI see (``rt.hosts()``, ``understudy hosts``).

The first host (the one that ran ``understudy up``) is the leader; every other host joined it
with ``understudy join``. The leader's failure detector (phi accrual) gives each host a status:
``up``, ``suspect`` (replies are late) or ``down`` (declared lost: its children exited with
reason ``noconnection``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from protocols._base import Message

__all__ = ["GetHosts", "HostInfo", "HostStatus", "Hosts"]

HostStatus = Literal["up", "suspect", "down"]


class HostInfo(Message):
    """One host of the cluster."""

    kind: Literal["cluster.host_info"] = "cluster.host_info"
    name: str
    address: str = Field(description="the host's admin address, host:port")
    status: HostStatus
    capabilities: dict[str, str] = Field(default_factory=dict)
    children: int = Field(default=0, description="children of the tree running there")
    last_seen: float | None = Field(
        default=None, description="when it last answered a heartbeat (unix time)"
    )
    leader: bool = False


class GetHosts(Message):
    """Ask the guardian for the hosts; answered Hosts."""

    kind: Literal["cluster.get_hosts"] = "cluster.get_hosts"


class Hosts(Message):
    kind: Literal["cluster.hosts"] = "cluster.hosts"
    hosts: list[HostInfo]
