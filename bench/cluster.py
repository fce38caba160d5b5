"""Multi-host figures: ``python -m bench.cluster [--kills N] [--pauses N] [--asks N]``.

A member host in its own network namespace (a veth pair; loopback 127.0.0.2 where namespaces
cannot be made), joined with the real ``understudy join``:

1. detection latency: SIGKILL every process of the host, time until the ``host_down`` event
   (p50, p99, max over ``--kills`` kills; target p99 <= 3 s);
2. false ``host_down`` over ``--pauses`` SIGSTOPs of 2 s (target 0);
3. remote ask round trip, leader -> an actor on the member, against raw Thespian's remote ask
   between the same two addresses in the same run (a raw convention, no guard).

Prints a table and writes ``bench/results/cluster.json``. Everything started is stopped and
the namespace removed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import patch

from thespian.actors import ActorSystem

from actors import Runtime
from actors.core import transport_guard
from actors.core.keyring import create_key_file
from actors.core.runtime import free_port
from actors.demo import Ping
from actors.logs import configure_logging
from bench._raw import RawPing
from bench.run import pct, print_table, record, rows
from protocols.topology import (
    ChildSpec,
    ClusterConfig,
    Placement,
    SupervisorSpec,
    SystemConfig,
    Topology,
)
from tests.integration._netns import Netns, netns_host, netns_unavailable

RESULTS = Path(__file__).parent / "results"
samples: dict[str, list[float]] = {}


@contextlib.contextmanager
def _host() -> Iterator[tuple[str, str, Netns | None]]:
    """(leader address, member address, namespace or None for loopback)."""
    if netns_unavailable() is None:
        with netns_host(7) as ns:
            yield ns.gateway, ns.address, ns
    else:
        yield "127.0.0.1", "127.0.0.2", None


def _in(ns: Netns | None, argv: list[str]) -> list[str]:
    return ns.command(argv) if ns is not None else argv


def _member_pids(ns: Netns | None, proc: subprocess.Popen[bytes], address: str) -> set[int]:
    if ns is not None:
        return ns.pids()
    import psutil

    found = {proc.pid}
    for conn in psutil.net_connections("tcp"):
        if conn.laddr and conn.laddr.ip == address and conn.pid:
            found.add(conn.pid)
    return found


def _join(
    rt: Runtime, ns: Netns | None, gateway: str, address: str, secret: Path, state: Path
) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable,
        "-m",
        "actors.cli",
        "--log-level",
        "error",
        "join",
        f"{gateway}:{rt.admin_port}",
        "--name",
        "m1",
        "--listen",
        address,
        "--secret-file",
        str(secret),
        "--state-dir",
        str(state),
    ]
    return subprocess.Popen(_in(ns, argv))


def bench_understudy(kills: int, pauses: int, asks: int, tmp: Path) -> None:
    secret = tmp / "secret"
    create_key_file(secret)
    with _host() as (gateway, address, ns):
        system = SystemConfig(
            base="multiprocTCPBase",
            listen=gateway,
            state_dir=str(tmp / "leader"),
            cluster=ClusterConfig(secret_file=str(secret)),
        )
        root = SupervisorSpec(
            id="root",
            intensity=1000,
            period=1,
            children=[
                ChildSpec(id="job", start="actors.demo:Echo", placement=Placement(host="m1"))
            ],
        )
        latencies: list[float] = []
        false_downs = 0
        ask_times: list[float] = []
        with Runtime.start(Topology(system=system, root=root)) as rt:
            for round_ in range(kills):
                member = _join(rt, ns, gateway, address, secret, tmp / f"m1-{round_}")
                try:
                    seen = len(rt.events())
                    rt.wait_event("host_up", child_id="m1", after=seen, timeout=30)
                    rt.wait_event("child_restarted", child_id="job", after=seen, timeout=30)
                    if round_ == 0:
                        for _ in range(50):
                            rt.ask("root/job", Ping(token="warm"), timeout=10)
                        for _ in range(asks):
                            t0 = time.perf_counter()
                            rt.ask("root/job", Ping(token="x"), timeout=10)
                            ask_times.append(time.perf_counter() - t0)
                        for _ in range(pauses):
                            mark = len(rt.events())
                            pids = _member_pids(ns, member, address)
                            for pid in pids:
                                os.kill(pid, signal.SIGSTOP)
                            time.sleep(2.0)  # the fault: a 2 s pause
                            for pid in pids:
                                os.kill(pid, signal.SIGCONT)
                            rt.ask("root/job", Ping(token="after"), timeout=10)
                            false_downs += sum(
                                1 for e in rt.events()[mark:] if e.event == "host_down"
                            )
                    mark = len(rt.events())
                    pids = _member_pids(ns, member, address)
                    t_kill = time.time()
                    for pid in pids:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    down = rt.wait_event("host_down", child_id="m1", after=mark, timeout=30)
                    latencies.append(down.time - t_kill)
                finally:
                    with contextlib.suppress(ProcessLookupError):
                        member.send_signal(signal.SIGTERM)
                    member.wait(timeout=30)
                    for pid in _member_pids(ns, member, address) - {member.pid}:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
        samples["host_down_latency_s"] = [round(x, 4) for x in latencies]
        if latencies:
            record(
                f"host kill -> host_down p50 [{len(latencies)} kills]",
                statistics.median(latencies),
                None,
                "s",
                "p99 <= 3 s",
            )
            record("host kill -> host_down p99", pct(latencies, 99), None, "s", "<= 3 s")
            record("host kill -> host_down max", max(latencies), None, "s")
        record(f"false host_down over {pauses} pauses of 2 s", false_downs, None, "", "0")
        raw = bench_raw_remote(gateway, address, ns, asks)
        if ask_times:
            record(
                "remote ask round trip median",
                statistics.median(ask_times) * 1e6,
                statistics.median(raw) * 1e6 if raw else None,
                "us",
                "",
            )


def bench_raw_remote(gateway: str, address: str, ns: Netns | None, asks: int) -> list[float]:
    """Raw Thespian: a convention leader here, a member in the namespace, RawEcho placed there."""
    leader_port, member_port = free_port(gateway), free_port(gateway)
    root = str(Path(__file__).resolve().parents[1])
    member_code = "\n".join(
        [
            f"import sys; sys.path.insert(0, {root!r})",
            "from thespian.actors import ActorSystem",
            (
                f"caps = {{'Admin Port': {member_port}, "
                f"'Convention Address.IPv4': ({gateway!r}, {leader_port}), 'raw.host': 'm1'}}"
            ),
            "s = ActorSystem('multiprocTCPBase', caps, transientUnique=True)",
            "print('up', flush=True)",
            "sys.stdin.read()",
            "s.shutdown()",
        ]
    )
    env = dict(os.environ, THESPIAN_BASE_IPADDR=address)
    times: list[float] = []
    with transport_guard.uninstalled(), patch.dict(os.environ, {"THESPIAN_BASE_IPADDR": gateway}):
        leader = ActorSystem("multiprocTCPBase", {"Admin Port": leader_port}, transientUnique=True)
        member = subprocess.Popen(
            _in(ns, [sys.executable, "-c", member_code]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        try:
            assert member.stdout is not None
            member.stdout.readline()
            echo = None
            deadline = time.monotonic() + 30
            while echo is None and time.monotonic() < deadline:
                try:
                    echo = leader.createActor(
                        "bench._raw.RawPlacedEcho", targetActorRequirements={"raw.host": "m1"}
                    )
                except Exception:  # noqa: BLE001 - the member may not have registered yet
                    time.sleep(0.2)
            if echo is None:
                return []
            msg = RawPing(1)
            for _ in range(50):
                leader.ask(echo, msg, 10)
            for _ in range(asks):
                t0 = time.perf_counter()
                leader.ask(echo, msg, 10)
                times.append(time.perf_counter() - t0)
        finally:
            leader.shutdown()
            assert member.stdin is not None
            member.stdin.close()
            try:
                member.wait(timeout=20)
            except subprocess.TimeoutExpired:
                member.kill()
                member.wait()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--pauses", type=int, default=20)
    parser.add_argument("--asks", type=int, default=500)
    args = parser.parse_args()
    configure_logging("error")
    with tempfile.TemporaryDirectory() as tmp:
        bench_understudy(args.kills, args.pauses, args.asks, Path(tmp))
    print_table()
    RESULTS.mkdir(exist_ok=True)
    load = os.getloadavg()
    (RESULTS / "cluster.json").write_text(
        json.dumps({"rows": rows, "samples": samples, "loadavg": load}, indent=2)
    )


if __name__ == "__main__":
    main()
