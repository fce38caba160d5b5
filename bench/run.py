"""Understudy vs raw Thespian, measured in the same run: ``python -m bench.run [--quick]``.

Prints one table (figure, Understudy, raw Thespian, ratio, target) and writes
``bench/results/latest.json``. Every ActorSystem started here is shut down; each on its own
free port. The figures (see the README's "Benchmarks" section):

1. ``Runtime.ask`` round trip vs ``ActorSystem.ask`` (median, p99), per base
2. actor-to-actor one-way throughput of small typed messages vs raw burst and windowed sends;
   the ask round trip and one-way throughput with frame authentication on vs off, and with the
   fault layer idle vs removed
3. actor-to-actor request/reply rate vs raw ping-pong
4. crash -> restarted child answers (exception, SIGKILL) vs raw kill -> replacement answers
5. supervisor with many children: start and shutdown time
6. codec encode/decode per message vs pickle; memory per actor process
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any
from unittest.mock import patch

import psutil
from thespian.actors import ActorSystem

from actors import Runtime
from actors.core import transport_guard
from actors.core.runtime import free_port
from actors.logs import configure_logging
from bench._raw import RawPing
from protocols import codec
from protocols.topology import ChildSpec, SupervisorSpec, SystemConfig, Topology
from tests.integration._fast_workers import Burst, Done, Pipeline, Seen, WaitSeen
from tests.integration._workers import Crash, Ping

RESULTS = Path(__file__).parent / "results"
FAST = "tests.integration._fast_workers"
ECHO = "tests.integration._workers:Echo"

rows: list[dict[str, Any]] = []


def record(
    figure: str,
    ours: float,
    raw: float | None,
    unit: str,
    target: str = "",
    higher_is_better: bool = False,
) -> None:
    """Add one row: Understudy's value, raw Thespian's, and their ratio."""
    ratio = None
    if raw:
        ratio = ours / raw
    rows.append(
        {
            "figure": figure,
            "understudy": ours,
            "raw_thespian": raw,
            "unit": unit,
            "ratio": ratio,
            "target": target,
            "higher_is_better": higher_is_better,
        }
    )


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class _Raw:
    """A raw Thespian system. Understudy's transport guard is process-wide (it patches
    Thespian's TCP transport module); raw Thespian is the baseline, so on multiprocTCPBase the
    system is created, and every call made, with the guard removed."""

    def __init__(self, system: Any, tcp: bool) -> None:
        self._system = system
        self._tcp = tcp

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._system, name)
        if not self._tcp or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with transport_guard.uninstalled():
                return attr(*args, **kwargs)

        return call

    @contextmanager
    def unguarded(self) -> Iterator[Any]:
        """The bare system, the guard removed for the whole block (for timed loops)."""
        with transport_guard.uninstalled() if self._tcp else nullcontext():
            yield self._system


@contextmanager
def raw_system(base: str) -> Iterator[Any]:
    tcp = base == "multiprocTCPBase"
    caps = {"Admin Port": free_port()} if tcp else {}
    with transport_guard.uninstalled() if tcp else nullcontext():
        system = ActorSystem(base, caps, transientUnique=True)
    raw = _Raw(system, tcp)
    try:
        yield raw
    finally:
        raw.shutdown()


@contextmanager
def unauthenticated_runtime(topology: Topology) -> Iterator[Runtime]:
    """The same build with frame authentication off (a benchmark baseline only): the system is
    started, and must be used, with the transport guard removed."""
    with (
        transport_guard.uninstalled(),
        patch.object(transport_guard, "install", _no_guard),
        # the same addresses as the guarded system (loopback), only the frames differ
        patch.dict(os.environ, {transport_guard.BASE_ADDRESS_ENV: "127.0.0.1"}),
    ):
        rt = Runtime.start(topology)
    try:
        yield rt
    finally:
        with transport_guard.uninstalled():
            rt.shutdown()


def _no_guard(**_: Any) -> None:
    """Stands in for transport_guard.install in the unauthenticated baseline."""


def topology(base: str, children: list[Any], **flags: Any) -> Topology:
    return Topology(
        system=SystemConfig(base=base),  # type: ignore[arg-type]
        root=SupervisorSpec(id="root", children=children, **flags),
    )


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


# --- 1. ask round trip -------------------------------------------------------------------------


def bench_ask(base: str, n: int) -> None:
    """Both systems run at once and are asked in alternating rounds, so drift in the machine's
    load falls on both alike."""
    raw: list[float] = []
    ours: list[float] = []
    with (
        raw_system(base) as system,
        Runtime.start(topology(base, [ChildSpec(id="echo", start=ECHO)])) as rt,
    ):
        echo = system.createActor("bench._raw.RawEcho")
        msg, ping = RawPing(1), Ping(token="x")
        with system.unguarded() as bare:
            timed(lambda: bare.ask(echo, msg, 5), 50)
        timed(lambda: rt.ask("root/echo", ping), 50)
        rounds = 20
        for _ in range(rounds):
            with system.unguarded() as bare:
                raw += timed(lambda: bare.ask(echo, msg, 5), n // rounds)
            ours += timed(lambda: rt.ask("root/echo", ping), n // rounds)
    us = 1e6
    record(
        f"ask round trip median [{base}]",
        statistics.median(ours) * us,
        statistics.median(raw) * us,
        "us",
        "<= 1.10x raw",
    )
    record(f"ask round trip p99 [{base}]", pct(ours, 99) * us, pct(raw, 99) * us, "us")


# --- 2. one-way throughput ------------------------------------------------------------------------


def bench_throughput(n: int, raw_n: int) -> None:
    base = "multiprocTCPBase"
    with raw_system(base) as system:
        burster = system.createActor("bench._raw.RawBurster")
        counter = system.createActor("bench._raw.RawCounter")
        t0 = time.perf_counter()
        system.ask(burster, ("burst", counter, raw_n), 600)
        got = system.ask(counter, ("expect", raw_n), 600)
        raw_burst = raw_n / (time.perf_counter() - t0)
        assert got == raw_n, f"raw burst: counted {got} of {raw_n}"
        counter2 = system.createActor("bench._raw.RawCounter")
        t0 = time.perf_counter()
        system.ask(burster, ("window", counter2, raw_n, 10), 600)
        got = system.ask(counter2, ("expect", raw_n), 600)
        raw_window = raw_n / (time.perf_counter() - t0)
        assert got == raw_n, f"raw window: counted {got} of {raw_n}"
    children = [
        ChildSpec(id="sink", start=f"{FAST}:Sink"),
        ChildSpec(id="source", start=f"{FAST}:Source"),
    ]
    with Runtime.start(topology(base, children)) as rt:
        rt.ask("root/source", Burst(target="root/sink", count=1000), timeout=60)
        rt.ask("root/sink", WaitSeen(count=1000), timeout=60)
        t0 = time.perf_counter()
        rt.ask("root/source", Burst(target="root/sink", start=1000, count=n), timeout=600)
        seen = rt.ask("root/sink", WaitSeen(count=1000 + n), timeout=600)
        ours = n / (time.perf_counter() - t0)
        assert isinstance(seen, Seen) and len(seen.seqs) == 1000 + n
    record(
        "one-way typed msgs/s vs raw burst [multiprocTCPBase]",
        ours,
        raw_burst,
        "msg/s",
        ">= 20,000/s and >= 10x raw burst",
        higher_is_better=True,
    )
    record(
        "one-way typed msgs/s vs raw window=10 [multiprocTCPBase]",
        ours,
        raw_window,
        "msg/s",
        "",
        higher_is_better=True,
    )


# --- 2b. the cost of frame authentication --------------------------------------------------------


_PAIR_CHILDREN = [
    ChildSpec(id="echo", start=ECHO),
    ChildSpec(id="sink", start=f"{FAST}:Sink"),
    ChildSpec(id="source", start=f"{FAST}:Source"),
]


def _paired(
    off: Runtime,
    on: Runtime,
    n: int,
    burst: int,
    off_context: Callable[[], AbstractContextManager[Any]],
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """The ask round trip and one-way throughput of two trees of ``_PAIR_CHILDREN``, measured
    in interleaved rounds (``off``'s calls inside ``off_context``)."""
    ping = Ping(token="x")
    asks: dict[str, list[float]] = {"on": [], "off": []}
    rates: dict[str, list[float]] = {"on": [], "off": []}
    sent = {"on": 0, "off": 0}

    def one_way(rt: Runtime, side: str) -> float:
        t0 = time.perf_counter()
        rt.ask("root/source", Burst(target="root/sink", start=sent[side], count=burst), timeout=600)
        sent[side] += burst
        seen = rt.ask("root/sink", WaitSeen(count=sent[side]), timeout=600)
        assert isinstance(seen, Seen) and len(seen.seqs) == sent[side]
        return burst / (time.perf_counter() - t0)

    with off_context():
        timed(lambda: off.ask("root/echo", ping), 50)
    timed(lambda: on.ask("root/echo", ping), 50)
    rounds = 10
    for _ in range(rounds):
        with off_context():
            asks["off"] += timed(lambda: off.ask("root/echo", ping), n // rounds)
            rates["off"].append(one_way(off, "off"))
        asks["on"] += timed(lambda: on.ask("root/echo", ping), n // rounds)
        rates["on"].append(one_way(on, "on"))
    return asks, rates


def _record_pair(
    asks: dict[str, list[float]],
    rates: dict[str, list[float]],
    what: str,
    off_name: str,
    slack: float,
) -> None:
    us = 1e6
    record(
        f"ask round trip median, {what} [multiprocTCPBase]",
        statistics.median(asks["on"]) * us,
        statistics.median(asks["off"]) * us,
        f"us (raw column: {off_name})",
        f"<= {1 + slack:.2f}x {off_name}",
    )
    record(
        f"one-way typed msgs/s, {what} [multiprocTCPBase]",
        statistics.median(rates["on"]),
        statistics.median(rates["off"]),
        f"msg/s (raw column: {off_name})",
        f">= {1 - slack:.2f}x {off_name}",
        higher_is_better=True,
    )


def bench_auth(n: int, burst: int) -> None:
    """The ask round trip and one-way throughput of the same build with frame authentication
    on (HMAC tags, restricted unpickler) and off, interleaved in rounds."""
    tree = topology("multiprocTCPBase", _PAIR_CHILDREN)
    with unauthenticated_runtime(tree) as off, Runtime.start(tree) as on:
        asks, rates = _paired(off, on, n, burst, transport_guard.uninstalled)
    _record_pair(asks, rates, "authentication on vs off", "auth off", 0.05)


def bench_fault_layer(n: int, burst: int) -> None:
    """The ask round trip and one-way throughput with the fault layer installed and idle (no
    fault active: the default) and removed (``system.fault_injection: false``), interleaved in
    rounds on multiprocTCPBase."""
    tree = topology("multiprocTCPBase", _PAIR_CHILDREN)
    removed = tree.model_copy(
        update={"system": tree.system.model_copy(update={"fault_injection": False})}
    )
    with Runtime.start(removed) as off, Runtime.start(tree) as on:
        asks, rates = _paired(off, on, n, burst, nullcontext)
    _record_pair(asks, rates, "fault layer idle vs removed", "layer removed", 0.03)


# --- 3. request/reply -----------------------------------------------------------------------------


def bench_request_reply(n: int, raw_n: int) -> None:
    base = "multiprocTCPBase"
    with raw_system(base) as system:
        burster = system.createActor("bench._raw.RawBurster")
        echo = system.createActor("bench._raw.RawEcho")
        t0 = time.perf_counter()
        got = system.ask(burster, ("pingpong", echo, raw_n), 600)
        raw = raw_n / (time.perf_counter() - t0)
        assert got == raw_n
    children = [
        ChildSpec(id="sink", start=f"{FAST}:Sink"),
        ChildSpec(id="requester", start=f"{FAST}:Requester"),
    ]
    with Runtime.start(topology(base, children)) as rt:
        rt.ask("root/requester", Pipeline(target="root/sink", count=100), timeout=60)
        t0 = time.perf_counter()
        done = rt.ask(
            "root/requester", Pipeline(target="root/sink", count=n, window=256), timeout=600
        )
        ours = n / (time.perf_counter() - t0)
        assert done == Done(count=n)
    record(
        "request/reply per s, pipelined vs raw ping-pong [multiprocTCPBase]",
        ours,
        raw,
        "req/s",
        ">= 1.5x raw",
        higher_is_better=True,
    )


# --- 4. crash -> restarted child answers ---------------------------------------------------


def _raw_replacement(system: Any, parent: Any, kill: Callable[[Any], None]) -> float:
    child = system.ask(parent, "child", 5)
    assert system.ask(child, "pid", 5) is not None
    t0 = time.perf_counter()
    kill(child)
    while True:
        child = system.ask(parent, "child", 5)
        if system.ask(child, RawPing(0), 0.5) is not None:
            return time.perf_counter() - t0


def bench_restart(base: str, n: int) -> None:
    """Raw Thespian's replacement and Understudy's restart, both systems up, in alternating
    rounds (machine load falls on both alike)."""
    ms = 1e3
    tcp = base == "multiprocTCPBase"
    spec = [ChildSpec(id="echo", start=ECHO)]
    raw: list[float] = []
    crash: list[float] = []
    killed: list[float] = []
    with (
        raw_system(base) as system,
        Runtime.start(topology(base, spec, intensity=10 * n, period=1.0)) as rt,
    ):
        parent = system.createActor("bench._raw.RawParent")
        if tcp:

            def kill(child: Any) -> None:
                os.kill(system.ask(child, "pid", 5), signal.SIGKILL)
        else:
            from thespian.actors import ActorExitRequest

            def kill(child: Any) -> None:
                system.tell(child, ActorExitRequest())

        rt.ask("root/echo", Ping())
        rounds = 5
        for _ in range(rounds):
            raw += [_raw_replacement(system, parent, kill) for _ in range(n // rounds)]
            for _ in range(n // rounds):
                t0 = time.perf_counter()
                try:
                    rt.ask("root/echo", Crash())
                except Exception:  # noqa: BLE001, S110 - ActorCrashed is the point
                    pass
                rt.ask("root/echo", Ping())
                crash.append(time.perf_counter() - t0)
            if tcp:
                for _ in range(n // rounds):
                    pid = rt.which_children("root")[0].pid
                    assert pid is not None
                    t0 = time.perf_counter()
                    os.kill(pid, signal.SIGKILL)
                    rt.ask("root/echo", Ping())
                    killed.append(time.perf_counter() - t0)
    target = "median <= 10 ms, p99 <= 25 ms" if tcp else "median <= 0.1 ms"
    record(
        f"exception -> restarted answers median [{base}]",
        statistics.median(crash) * ms,
        statistics.median(raw) * ms,
        "ms",
        target,
    )
    record(
        f"exception -> restarted answers p99 [{base}]",
        pct(crash, 99) * ms,
        pct(raw, 99) * ms,
        "ms",
        target,
    )
    if killed:
        record(
            f"SIGKILL -> restarted answers median [{base}]",
            statistics.median(killed) * ms,
            statistics.median(raw) * ms,
            "ms",
            target,
        )
        record(
            f"SIGKILL -> restarted answers p99 [{base}]",
            pct(killed, 99) * ms,
            pct(raw, 99) * ms,
            "ms",
            target,
        )


# --- 5. many children -----------------------------------------------------------------------------


def bench_many_children(base: str, n: int, rounds: int = 3) -> None:
    """Raw Thespian and Understudy in alternating rounds; the medians are recorded."""
    raw: list[float] = []
    start: list[float] = []
    stop: list[float] = []
    children = [ChildSpec(id=f"w{i}", start=ECHO) for i in range(n)]
    for _ in range(rounds):
        with raw_system(base) as system:
            parent = system.createActor("bench._raw.RawTreeParent")
            t0 = time.perf_counter()
            system.ask(parent, ("spawn", n), 600)
            raw.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        rt = Runtime.start(topology(base, children))
        start.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        rt.shutdown()
        stop.append(time.perf_counter() - t0)
    tcp = base == "multiprocTCPBase"
    record(
        f"start {n} children [{base}]",
        statistics.median(start),
        statistics.median(raw),
        "s",
        "<= 1.2x raw" if tcp else "<= 0.15 s",
    )
    record(f"shutdown {n} children [{base}]", statistics.median(stop), None, "s")


# --- 6. codec and memory --------------------------------------------------------------------------


def bench_codec(n: int) -> None:
    msg = Ping(token="abc")
    raw = RawPing(1)
    us = 1e6
    enc = min(timed(lambda: [codec.encode(msg) for _ in range(n)], 5)) / n
    data = codec.encode(msg)
    dec = min(timed(lambda: [codec.decode(data) for _ in range(n)], 5)) / n
    penc = min(timed(lambda: [pickle.dumps(raw) for _ in range(n)], 5)) / n
    pdata = pickle.dumps(raw)
    pdec = min(timed(lambda: [pickle.loads(pdata) for _ in range(n)], 5)) / n  # noqa: S301
    record("codec encode per message vs pickle", enc * us, penc * us, "us")
    record("codec decode per message vs pickle", dec * us, pdec * us, "us")


def _uss(pid: int) -> float:
    return float(psutil.Process(pid).memory_full_info().uss) / 2**20


def bench_memory() -> None:
    base = "multiprocTCPBase"
    with raw_system(base) as system:
        echo = system.createActor("bench._raw.RawEcho")
        raw = _uss(system.ask(echo, "pid", 5))
    with Runtime.start(topology(base, [ChildSpec(id="echo", start=ECHO)])) as rt:
        pid = rt.which_children("root")[0].pid
        assert pid is not None
        ours = _uss(pid)
    record("memory per actor process (USS)", ours, raw, "MiB", "<= 4.2 MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    parser.add_argument(
        "--only",
        choices=[
            "ask",
            "auth",
            "faults",
            "throughput",
            "reqrep",
            "restart",
            "children",
            "codec",
            "memory",
        ],
        action="append",
        help="run only these figures (repeatable)",
    )
    args = parser.parse_args()
    configure_logging("error")
    q = args.quick
    only = set(args.only or [])
    started = time.time()
    load_before = os.getloadavg()

    def want(name: str) -> bool:
        return not only or name in only

    if want("ask"):
        for base in ("simpleSystemBase", "multiprocTCPBase"):
            bench_ask(base, 200 if q else 2000)
    if want("auth"):
        bench_auth(200 if q else 2000, 2_000 if q else 10_000)
    if want("faults"):
        bench_fault_layer(200 if q else 2000, 2_000 if q else 10_000)
    if want("throughput"):
        bench_throughput(5_000 if q else 50_000, 500 if q else 2000)
    if want("reqrep"):
        bench_request_reply(2_000 if q else 20_000, 300 if q else 2000)
    if want("restart"):
        for base in ("simpleSystemBase", "multiprocTCPBase"):
            bench_restart(base, 10 if q else 50)
    if want("children"):
        bench_many_children("simpleSystemBase", 200 if q else 1000)
        bench_many_children("multiprocTCPBase", 20 if q else 100)
    if want("codec"):
        bench_codec(2_000 if q else 20_000)
    if want("memory"):
        bench_memory()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "latest.json"
    report = {
        "when": started,
        "quick": q,
        # 1-, 5- and 15-minute load averages when the run began and ended (2 cores here)
        "load_average": {"start": load_before, "end": os.getloadavg()},
        "rows": rows,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table()
    print(f"\nload average (1, 5, 15 min) at start {load_before}, at end {os.getloadavg()}")
    print(f"written: {out}")


def print_table() -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Understudy vs raw Thespian (same run)")
    for col in ("figure", "understudy", "raw thespian", "ratio", "target"):
        table.add_column(col, justify="right" if col not in ("figure", "target") else "left")
    for row in rows:
        raw = "-" if row["raw_thespian"] is None else f"{row['raw_thespian']:,.2f}"
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        table.add_row(  # escaped: "[multiprocTCPBase]" is not rich markup
            escape(row["figure"]),
            f"{row['understudy']:,.2f} {row['unit']}",
            raw,
            ratio,
            row["target"],
        )
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
