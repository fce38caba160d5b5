"""Hosts in network namespaces (a veth pair each, addresses only inside them): a host killed
whole, a host paused for 2 s, a partition. Skipped, with the reason, where namespaces cannot
be created; the loopback variant (test_cluster.py) covers join, placement and remote exits
everywhere."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from actors import Runtime
from actors.demo import Ping, Pong
from protocols.supervision import ChildInfo
from protocols.topology import (
    ChildSpec,
    ClusterConfig,
    Placement,
    SupervisorSpec,
    SystemConfig,
    Topology,
)
from tests.integration._netns import Netns, netns_host, netns_unavailable

_WHY = netns_unavailable()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_WHY is not None, reason=_WHY or ""),
]

ECHO = "actors.demo:Echo"


class Hosted:
    def __init__(self, rt: Runtime, host: Netns, member: subprocess.Popen[bytes]) -> None:
        self.rt, self.host, self.member = rt, host, member


@pytest.fixture
def hosted(tmp_path: Path) -> Iterator[Hosted]:
    """A leader in this namespace and the member m1 (capability gpu=yes) in its own; the
    child ``job`` placed by capability, which the leader has too (zone=any, gpu=yes)."""
    secret = tmp_path / "secret"
    from actors.core.keyring import create_key_file

    create_key_file(secret)
    with netns_host(1) as host:
        system = SystemConfig(
            base="multiprocTCPBase",
            listen=host.gateway,
            state_dir=str(tmp_path / "leader"),
            cluster=ClusterConfig(secret_file=str(secret), capabilities={"gpu": "yes"}),
        )
        root = SupervisorSpec(
            id="root",
            intensity=10,
            children=[ChildSpec(id="job", start=ECHO, placement=Placement(host="m1"))],
        )
        rt = Runtime.start(Topology(system=system, root=root))
        member = subprocess.Popen(
            host.command(
                [
                    sys.executable,
                    "-m",
                    "actors.cli",
                    "join",
                    f"{host.gateway}:{rt.admin_port}",
                    "--name",
                    "m1",
                    "--listen",
                    host.address,
                    "--secret-file",
                    str(secret),
                    "--state-dir",
                    str(tmp_path / "m1"),
                ]
            )
        )
        try:
            rt.wait_event("host_up", child_id="m1", timeout=30)
            rt.wait_event("child_restarted", child_id="job", timeout=30)
            yield Hosted(rt, host, member)
        finally:
            rt.shutdown()
            host.signal(signal.SIGCONT)
            if member.poll() is None:
                member.send_signal(signal.SIGTERM)
            try:
                member.wait(timeout=20)
            except subprocess.TimeoutExpired:
                member.kill()
                member.wait()


def _job(rt: Runtime) -> ChildInfo:
    return next(c for c in rt.which_children("root") if c.id == "job")


def test_a_host_killed_whole_is_declared_down_and_its_child_exits_noconnection(
    hosted: Hosted,
) -> None:
    rt = hosted.rt
    seen = len(rt.events())

    hosted.host.signal(signal.SIGKILL)
    down = rt.wait_event("host_down", child_id="m1", after=seen, timeout=10)
    exited = rt.wait_event("child_exited", child_id="job", after=seen, timeout=10)

    assert "m1" == down.host
    assert "noconnection" == exited.reason
    assert ("restarting", "placement: no host up with host 'm1'") == (
        _job(rt).status,
        _job(rt).reason,
    )


def test_a_host_paused_for_2_s_is_not_declared_down(hosted: Hosted) -> None:
    rt = hosted.rt
    seen = len(rt.events())
    before = _job(rt)

    hosted.host.signal(signal.SIGSTOP)
    time.sleep(2.0)  # the fault itself: a 2 s pause (not a synchronisation)
    hosted.host.signal(signal.SIGCONT)
    pong = rt.ask("root/job", Ping(token="after the pause"), timeout=10)

    assert isinstance(pong, Pong)
    assert before.pid == pong.pid
    assert [] == [e for e in rt.events()[seen:] if e.event in ("host_down", "child_exited")]


def test_a_partitioned_host_stops_its_children_so_none_runs_twice(hosted: Hosted) -> None:
    rt = hosted.rt
    seen = len(rt.events())
    old = psutil.Process(_job(rt).pid)

    hosted.host.cut()
    try:
        rt.wait_event("host_down", child_id="m1", after=seen, timeout=10)
        exited = rt.wait_event("child_exited", child_id="job", after=seen, timeout=10)
        gone, alive = psutil.wait_procs([old], timeout=10)  # the member stopped it itself
    finally:
        hosted.host.heal()
    rt.wait_event("host_up", child_id="m1", after=seen, timeout=30)
    rt.wait_event("child_restarted", child_id="job", after=seen, timeout=30)
    pong = rt.ask("root/job", Ping(token="healed"), timeout=10)

    assert "noconnection" == exited.reason
    assert [old] == gone and not alive
    assert isinstance(pong, Pong)
    assert pong.pid != old.pid
