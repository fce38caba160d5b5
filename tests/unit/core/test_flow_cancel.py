"""Cancelling a flow (actors.core.flow.Flows.cancel) with a fake host: no ActorSystem."""

from __future__ import annotations

import itertools
from typing import Any

from actors.core.flow import All, Call, Flow, Flows, Sleep
from protocols.common import Ok


class FakeHost:
    """Records what a Flows asks of its worker host."""

    def __init__(self) -> None:
        self.ids = itertools.count(1)
        self.sent: list[tuple[int, str]] = []
        self.timers: dict[int, Any] = {}
        self.cancelled: list[int] = []
        self.forgotten: list[int] = []

    def send_to_path(self, path: str, message: Any, *, expect_reply: bool = False) -> int:
        del message, expect_reply
        rid = next(self.ids)
        self.sent.append((rid, path))
        return rid

    def set_timer(self, seconds: float, payload: Any) -> int:
        del seconds
        token = next(self.ids)
        self.timers[token] = payload
        return token

    def cancel_timer(self, token: int) -> None:
        self.cancelled.append(token)

    def forget_request(self, request_id: int) -> None:
        self.forgotten.append(request_id)

    def describe(self) -> str:
        return "fake"


class Stop(Exception):
    pass


def test_a_cancelled_flow_gets_the_error_at_its_step_and_forgets_its_requests() -> None:
    host = FakeHost()
    flows = Flows(host)  # type: ignore[arg-type]
    seen: list[str] = []

    def flow() -> Flow:
        try:
            yield Call("a", Ok(), timeout=5)
        except Stop:
            seen.append("stopped")
            yield Call("cleanup", Ok())
            seen.append("cleaned")

    fid = flows.start(flow())
    first = host.sent[0][0]

    assert flows.cancel(fid, Stop())
    assert ["stopped"] == seen
    assert [first] == host.forgotten
    assert not flows.on_reply(first, Ok())  # a late reply goes to the worker, not the flow
    cleanup = host.sent[-1][0]
    assert flows.on_reply(cleanup, Ok())
    assert ["stopped", "cleaned"] == seen
    assert not flows.cancel(fid, Stop())  # it has ended


def test_cancel_closes_every_sub_flow_of_an_all_and_drops_their_waits() -> None:
    host = FakeHost()
    flows = Flows(host)  # type: ignore[arg-type]
    closed: list[int] = []
    caught: list[Exception] = []

    def part(n: int) -> Flow:
        try:
            if n == 0:
                yield Sleep(10)
            yield Call(f"p{n}", Ok(), timeout=None)
        finally:
            closed.append(n)

    def top() -> Flow:
        try:
            yield All([part(0), part(1), part(2)])
        except Stop as exc:
            caught.append(exc)

    fid = flows.start(top())
    calls = [rid for rid, path in host.sent if path.startswith("p")]
    sleep_key = next(p[1][1] for p in host.timers.values() if p[1][0] == "sleep")

    flows.cancel(fid, Stop())

    assert [0, 1, 2] == sorted(closed)
    assert 1 == len(caught)
    assert sorted(calls) == sorted(host.forgotten)
    assert all(not flows.on_reply(rid, Ok()) for rid in calls)
    flows.on_timer(("sleep", sleep_key, 0))  # the sleep's timer fires late: nothing happens
    assert 1 == len(caught)
