"""The registry's pure decisions: held messages, cards, queries, losses (no ActorSystem)."""

from __future__ import annotations

import types
from typing import Any, Literal

import pytest
from pydantic import ValidationError

from actors.services.registry_state import (
    MAX_FORMER_PATHS,
    AgentDirectory,
    Deliveries,
    Forwarded,
    HeldMessages,
    Kept,
    Refusal,
    RegistryConfig,
    RegistryState,
    Waiters,
    is_under,
    rebuild_payload,
)
from protocols import Message
from protocols.registry import (
    AgentCapabilities,
    AgentCard,
    AgentExtension,
    AgentSkill,
    DeliverToAgent,
    FindAgents,
)
from protocols.supervision import SupervisionEvent, exited_path


class Memo(Message):
    kind: Literal["test.registry_memo"] = "test.registry_memo"
    n: int


def memo(n: int) -> Memo:
    return Memo(n=n)


def card(
    name: str,
    path: str | None = None,
    *,
    tags: tuple[str, ...] = ("general",),
    streaming: bool = False,
    extensions: tuple[str, ...] = (),
    **fields: Any,
) -> AgentCard:
    return AgentCard(
        name=name,
        description=f"{name} agent",
        version="1",
        path=path or f"root/agents/{name}",
        capabilities=AgentCapabilities(
            streaming=streaming, extensions=[AgentExtension(uri=u) for u in extensions]
        ),
        skills=[AgentSkill(id=f"{name}-skill", name="skill", description="d", tags=list(tags))],
        **fields,
    )


def config(**overrides: Any) -> RegistryConfig:
    return RegistryConfig(**overrides)


def ns(held: list[Any]) -> list[int]:
    return [h.message.n for h in held]


def nums(messages: tuple[Message, ...]) -> list[int]:
    return [m.n for m in messages if isinstance(m, Memo)]


# --- HeldMessages -----------------------------------------------------------------------------


def test_held_messages_keep_arrival_order_per_agent() -> None:
    held = HeldMessages(config())
    for n in range(3):
        held.hold("a", memo(n), now=float(n))
    held.hold("b", memo(9), now=0.0)

    taken = held.take("a")

    assert [0, 1, 2] == ns(taken)
    assert 1 == held.count()
    assert 0 == held.count("a")


def test_a_message_expires_when_now_reaches_its_deadline() -> None:
    held = HeldMessages(config(hold_seconds=10))
    held.hold("a", memo(1), now=0.0)
    held.hold("a", memo(2), now=5.0)

    early = held.expire(now=9.999)
    due = held.expire(now=10.0)

    assert {} == early
    assert {"a": [1]} == {agent: ns(items) for agent, items in due.items()}
    assert 15.0 == held.next_deadline()


def test_hold_seconds_zero_expires_at_the_next_sweep() -> None:
    held = HeldMessages(config(hold_seconds=0))
    held.hold("a", memo(1), now=3.0)

    assert ["a"] == list(held.expire(now=3.0))
    assert held.next_deadline() is None


def test_a_full_queue_rejects_the_new_message_by_default() -> None:
    held = HeldMessages(config(max_held=2))
    held.hold("a", memo(1), now=0.0)
    held.hold("a", memo(2), now=0.0)

    with pytest.raises(Refusal) as refused:
        held.hold("a", memo(3), now=0.0)

    assert "HoldLimitReached" == refused.value.error
    assert "'a'" in refused.value.message
    assert [1, 2] == ns(held.take("a"))


def test_drop_oldest_makes_room_and_returns_what_it_dropped() -> None:
    held = HeldMessages(config(max_held=2, overflow="drop_oldest"))
    held.hold("a", memo(1), now=0.0)
    held.hold("a", memo(2), now=0.0)

    _new, dropped = held.hold("a", memo(3), now=0.0)

    assert [1] == ns(dropped)
    assert [2, 3] == ns(held.take("a"))


def test_the_total_bound_refuses_whatever_the_overflow_policy() -> None:
    held = HeldMessages(config(max_held_total=2, overflow="drop_oldest"))
    held.hold("a", memo(1), now=0.0)
    held.hold("b", memo(2), now=0.0)

    with pytest.raises(Refusal) as refused:
        held.hold("c", memo(3), now=0.0)

    assert "HoldLimitReached" == refused.value.error
    assert "max_held_total" in refused.value.message


def test_put_back_restores_the_front_of_the_queue() -> None:
    held = HeldMessages(config())
    for n in range(4):
        held.hold("a", memo(n), now=0.0)
    taken = held.take("a")
    held.hold("a", memo(9), now=1.0)

    held.put_back("a", taken[2:])

    assert [2, 3, 9] == ns(held.take("a"))


# --- Cards and queries ------------------------------------------------------------------------


def test_registering_the_same_name_from_another_path_is_a_duplicate() -> None:
    directory = AgentDirectory()
    directory.register(card("a"))

    with pytest.raises(Refusal) as refused:
        directory.register(card("a", path="root/other/a"))

    assert "DuplicateAgent" == refused.value.error
    assert "root/agents/a" in refused.value.message
    assert "root/agents/a" == directory.get("a").path


def test_registering_the_same_name_from_the_same_path_replaces_the_card() -> None:
    directory = AgentDirectory()
    directory.register(card("a", tags=("old",)))

    directory.register(card("a", tags=("new",)))

    assert ["new"] == directory.get("a").skills[0].tags


def test_a_card_with_problems_is_an_invalid_card() -> None:
    directory = AgentDirectory()
    broken = card("a").model_copy(update={"skills": [], "path": "root//a"})

    with pytest.raises(Refusal) as refused:
        directory.register(broken)

    assert "InvalidCard" == refused.value.error
    assert "skills" in refused.value.message
    assert "path" in refused.value.message
    assert [] == directory.cards()


def test_unknown_names_are_refused_as_unknown_agent() -> None:
    directory = AgentDirectory()

    for call in (directory.get, directory.remove, lambda name: directory.set_status(name, "busy")):
        with pytest.raises(Refusal) as refused:
            call("nobody")
        assert "UnknownAgent" == refused.value.error


def test_find_combines_every_given_filter() -> None:
    directory = AgentDirectory()
    directory.register(card("a", tags=("research", "web"), streaming=True))
    directory.register(card("b", tags=("research",), extensions=("urn:x:memo",)))
    directory.register(card("c", tags=("code",), streaming=True))
    directory.set_status("c", "busy")

    def find(**query: Any) -> list[str]:
        return [c.name for c in directory.cards(FindAgents(**query))]

    assert ["a", "b", "c"] == find()
    assert ["a", "b"] == find(skill_tag="RESEARCH")
    assert ["a", "c"] == find(capability="streaming")
    assert ["b"] == find(capability="urn:x:memo")
    assert ["a"] == find(capability="streaming", skill_tag="research")
    assert ["c"] == find(status="busy")
    assert ["b"] == find(skill_id="b-skill")
    assert [] == find(capability="pushNotifications")


def test_capability_flags_are_matched_by_json_or_python_name() -> None:
    c = card("a").model_copy(update={"capabilities": AgentCapabilities(push_notifications=True)})

    assert c.has_capability("pushNotifications")
    assert c.has_capability("push_notifications")
    assert not c.has_capability("streaming")


def test_an_exit_removes_the_cards_at_that_path_and_below() -> None:
    directory = AgentDirectory()
    directory.register(card("a", path="root/agents/a"))
    directory.register(card("b", path="root/agents/team/b"))
    directory.register(card("c", path="root/agents2/c"))

    gone = directory.remove_under("root/agents")

    assert ["a", "b"] == [c.name for c in gone]
    assert ["c"] == [c.name for c in directory.cards()]


def test_is_under_compares_whole_path_segments() -> None:
    assert is_under("root/a/b", "root/a")
    assert is_under("root/a", "root/a")
    assert not is_under("root/ab", "root/a")


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ("child_exited", "root/agents/a"),
        ("child_terminated", "root/agents/a"),
        ("start_failed", "root/agents/a"),
        ("child_started", None),
        ("child_restarted", None),
    ],
)
def test_only_exit_events_name_a_path_to_remove(event: str, expected: str | None) -> None:
    ev = SupervisionEvent(seq=1, time=0.0, supervisor="root/agents", child_id="a", event=event)

    assert expected == exited_path(ev)


# --- The registry state -----------------------------------------------------------------------


def test_messages_for_a_registered_agent_are_forwarded_at_once() -> None:
    state = RegistryState(config())
    state.register(card("a"))

    outcome = state.deliver("a", memo(1), now=0.0)

    assert Forwarded("root/agents/a", memo(1)) == outcome
    assert 1 == state.statistics().forwarded


def test_held_messages_are_released_by_registration_in_order() -> None:
    state = RegistryState(config(hold_seconds=30))
    first = state.deliver("a", memo(1), now=0.0)
    second = state.deliver("a", memo(2), now=10.0)

    _card, deliveries = state.register(card("a"))

    assert Kept(held=1, expires_in=30.0) == first
    assert Kept(held=2, expires_in=30.0) == second
    assert deliveries is not None
    assert ("a", "root/agents/a", [1, 2]) == (
        deliveries.name,
        deliveries.path,
        ns(list(deliveries.items)),
    )
    stats = state.statistics()
    assert (0, 2, 0) == (stats.held, stats.delivered, stats.forwarded)


def test_an_unavailable_agent_has_its_messages_held_until_it_is_available() -> None:
    state = RegistryState(config())
    state.register(card("a", status="unavailable"))

    kept = state.deliver("a", memo(1), now=0.0)
    _card, busy = state.update_status("a", "busy")

    assert isinstance(kept, Kept)
    assert busy is not None
    assert [1] == ns(list(busy.items))


def test_unregistering_makes_later_messages_wait_again() -> None:
    state = RegistryState(config())
    state.register(card("a"))

    state.unregister("a")

    assert isinstance(state.deliver("a", memo(1), now=0.0), Kept)


def test_sweep_reports_expired_messages_as_losses() -> None:
    state = RegistryState(config(hold_seconds=5), wall_clock=lambda: 1234.0)
    state.deliver("a", memo(1), now=0.0)
    state.deliver("a", memo(2), now=1.0)
    state.deliver("b", memo(3), now=4.0)

    losses = state.sweep(now=6.0)

    assert [("a", "expired", [1, 2])] == [
        (loss.agent, loss.reason, nums(loss.messages)) for loss in losses
    ]
    stats = state.statistics()
    assert (1, 2) == (stats.held, stats.expired)
    assert [("a", "expired", 2, ["test.registry_memo"], 1234.0)] == [
        (loss.agent, loss.reason, loss.count, loss.kinds, loss.at) for loss in stats.recent_losses
    ]


def test_a_refused_message_counts_as_overflowed() -> None:
    state = RegistryState(config(max_held=1))
    state.deliver("a", memo(1), now=0.0)

    with pytest.raises(Refusal):
        state.deliver("a", memo(2), now=0.0)

    stats = state.statistics()
    assert (1, 1) == (stats.held, stats.overflowed)
    assert "overflowed" == stats.recent_losses[0].reason


def test_drop_oldest_returns_the_dropped_message_as_a_loss() -> None:
    state = RegistryState(config(max_held=1, overflow="drop_oldest"))
    state.deliver("a", memo(1), now=0.0)

    kept = state.deliver("a", memo(2), now=0.0)

    assert isinstance(kept, Kept)
    assert kept.dropped is not None
    assert [1] == nums(kept.dropped.messages)
    assert 1 == state.statistics().overflowed


def test_recent_losses_keep_only_the_last_max_losses() -> None:
    state = RegistryState(config(hold_seconds=0, max_losses=2))
    for n in range(4):
        state.deliver(f"agent{n}", memo(n), now=float(n))
        state.sweep(now=float(n))

    stats = state.statistics()

    assert 4 == stats.expired
    assert ["agent2", "agent3"] == [loss.agent for loss in stats.recent_losses]


def test_put_back_holds_unsent_deliveries_before_newer_messages() -> None:
    state = RegistryState(config())
    state.register(card("a", status="unavailable"))
    for n in range(3):
        state.deliver("a", memo(n), now=0.0)
    _card, deliveries = state.update_status("a", "available")
    assert deliveries is not None

    state.put_back(deliveries, deliveries.items[1:])
    behind = state.deliver("a", memo(9), now=1.0)
    backlog = state.backlog()

    assert isinstance(behind, Kept)  # order: the backlog goes first
    assert [Deliveries] == [type(d) for d in backlog]
    assert [1, 2, 9] == ns(list(backlog[0].items))
    assert 4 == state.statistics().delivered


def test_hold_back_turns_a_forward_into_a_held_message() -> None:
    state = RegistryState(config())
    state.register(card("a"))
    state.deliver("a", memo(1), now=0.0)

    kept = state.hold_back("a", memo(1), now=0.0)

    assert 1 == kept.held
    assert (0, 1) == (state.statistics().forwarded, state.statistics().held)


def test_undelivered_messages_are_held_again_and_the_card_becomes_unavailable() -> None:
    state = RegistryState(config())
    state.register(card("a"))

    losses = state.undelivered("root/agents/a", [memo(1), memo(2)], now=0.0)

    assert [] == losses
    assert "unavailable" == state.directory.get("a").status
    assert {"a": 2} == state.statistics().held_by_agent
    _card, deliveries = state.register(card("a"))
    assert deliveries is not None
    assert [1, 2] == ns(list(deliveries.items))


def test_messages_undelivered_after_the_exit_wait_for_the_agent_last_at_that_path() -> None:
    state = RegistryState(config())
    state.register(card("a"))
    state.agent_exited("root/agents/a")

    losses = state.undelivered("root/agents/a", [memo(1)], now=0.0)
    _card, deliveries = state.register(card("a"))

    assert [] == losses
    assert deliveries is not None
    assert [1] == ns(list(deliveries.items))
    assert [] == state.directory.former_names("root/agents/a")


def test_the_directory_remembers_a_bounded_number_of_emptied_paths() -> None:
    directory = AgentDirectory()
    for n in range(MAX_FORMER_PATHS + 1):
        directory.register(card(f"a{n}"))
        directory.remove_under(f"root/agents/a{n}")

    assert [] == directory.former_names("root/agents/a0")
    assert ["a1"] == directory.former_names("root/agents/a1")


def test_undelivered_messages_with_no_agent_left_are_discarded_losses() -> None:
    state = RegistryState(config())

    losses = state.undelivered("root/agents/gone", [memo(1)], now=0.0)

    assert [("root/agents/gone", "discarded")] == [(loss.agent, loss.reason) for loss in losses]
    assert "discarded" == state.statistics().recent_losses[0].reason


def test_discard_all_reports_every_held_message() -> None:
    state = RegistryState(config())
    state.deliver("a", memo(1), now=0.0)
    state.deliver("b", memo(2), now=0.0)

    losses = state.discard_all()

    assert [("a", 1), ("b", 1)] == [(loss.agent, len(loss.messages)) for loss in losses]
    assert 0 == state.statistics().held


def test_statistics_count_cards_by_status_and_summarise() -> None:
    state = RegistryState(config())
    state.register(card("a"))
    state.register(card("b", status="busy"))
    state.deliver("c", memo(1), now=0.0)

    stats = state.statistics()

    assert (2, {"available": 1, "busy": 1}, 1) == (stats.registered, stats.by_status, stats.held)
    assert "2 agents (1 available), 1 held messages, 0 expired, 0 overflowed" == stats.summary()


# --- Payloads, config, waiters ------------------------------------------------------------------


def test_a_payload_is_rebuilt_as_its_message_class() -> None:
    assert memo(7) == rebuild_payload(DeliverToAgent.wrap("a", memo(7)))


def test_an_unknown_payload_kind_imports_its_module_first() -> None:
    imported: list[str] = []

    def importer(name: str) -> types.ModuleType:
        imported.append(name)

        class Late(Message):
            kind: Literal["test.registry_late"] = "test.registry_late"

        return types.ModuleType(name)

    command = DeliverToAgent(
        name="a", payload_kind="test.registry_late", payload_module="some.module"
    )

    assert "test.registry_late" == rebuild_payload(command, importer).kind
    assert ["some.module"] == imported


@pytest.mark.parametrize(
    ("command", "error"),
    [
        (DeliverToAgent(name="a", payload_kind="test.nothing"), "UnknownPayloadKind"),
        (
            DeliverToAgent(name="a", payload_kind="test.nothing", payload_module="no_such_mod_xyz"),
            "UnknownPayloadKind",
        ),
        (
            DeliverToAgent(name="a", payload_kind="test.nothing", payload_module="os; rm"),
            "UnknownPayloadKind",
        ),
        (
            DeliverToAgent(name="a", payload_kind="test.registry_memo", payload={"n": "x"}),
            "PayloadInvalid",
        ),
        (
            DeliverToAgent(name="a", payload_kind="test.registry_memo", payload={"n": 1, "x": 2}),
            "PayloadInvalid",
        ),
    ],
)
def test_bad_payloads_are_refused_by_name(command: DeliverToAgent, error: str) -> None:
    with pytest.raises(Refusal) as refused:
        rebuild_payload(command)

    assert error == refused.value.error


@pytest.mark.parametrize(
    "args",
    [
        {"max_held": 0},
        {"hold_seconds": -1},
        {"overflow": "drop_newest"},
        {"max_hold": 5},
    ],
)
def test_bad_registry_args_are_rejected(args: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RegistryConfig.model_validate(args)


def test_waiters_release_in_order_and_evict_the_oldest_beyond_the_limit() -> None:
    waiters: Waiters[str] = Waiters(limit=2)
    waiters.add(5, "five")
    waiters.add(3, "three")

    evicted = waiters.add(9, "nine")
    ready = waiters.release(5)

    assert ["five"] == evicted
    assert ["three"] == ready
    assert 1 == len(waiters)
