"""The A2A registry in a live tree: discovery, held messages, and cards following supervision."""

from __future__ import annotations

from typing import Any

import pytest

from actors import RequestRejected, Runtime
from protocols.registry import (
    AgentCard,
    AgentFound,
    AgentRegistered,
    AgentsFound,
    AgentSkill,
    AgentUnregistered,
    DeliverToAgent,
    EventsSynced,
    FindAgents,
    GetAgent,
    GetRegistryStatistics,
    ListAgents,
    MessageForwarded,
    MessageHeld,
    RegisterAgent,
    RegistryStatistics,
    SyncEvents,
    UnregisterAgent,
)
from protocols.topology import ChildSpec, SupervisorSpec
from tests.conftest import StartTree
from tests.integration._registry_workers import (
    Note,
    Notes,
    Registered,
    WaitNotes,
    WaitRegistered,
)

REGISTRY = "root/system/registry"
AGENT = "tests.integration._registry_workers:CardAgent"


def tree(agents: list[ChildSpec], **registry_args: Any) -> SupervisorSpec:
    return SupervisorSpec(
        id="root",
        children=[
            SupervisorSpec(
                id="system",
                children=[
                    ChildSpec(
                        id="registry", start="actors.services.registry:Registry", args=registry_args
                    )
                ],
            ),
            SupervisorSpec(id="agents", children=agents),
        ],
    )


def agent(name: str, **args: Any) -> ChildSpec:
    return ChildSpec(id=name, start=AGENT, args={"registry": REGISTRY, "name": name, **args})


def registered(rt: Runtime, name: str) -> Registered:
    reply = rt.ask(f"root/agents/{name}", WaitRegistered())
    assert isinstance(reply, Registered)
    return reply


def registry_restarts(rt: Runtime) -> int:
    """How often the registry was restarted: a handler that raised would show here."""
    (info,) = rt.which_children("root/system")
    return info.restarts


def names(reply: Any) -> list[str]:
    assert isinstance(reply, AgentsFound)
    return [card.name for card in reply.cards]


def test_agents_register_from_on_start_and_are_found_by_tag_and_capability(
    start_tree: StartTree,
) -> None:
    rt = start_tree(
        tree(
            [
                agent("alpha", tags=["research"], streaming=True),
                agent("beta", tags=["code", "Review"]),
            ]
        )
    )
    registered(rt, "alpha")
    registered(rt, "beta")

    found = rt.ask(REGISTRY, GetAgent(name="beta"))

    assert ["alpha", "beta"] == names(rt.ask(REGISTRY, ListAgents()))
    assert ["alpha"] == names(rt.ask(REGISTRY, FindAgents(skill_tag="research")))
    assert ["beta"] == names(rt.ask(REGISTRY, FindAgents(skill_tag="review")))
    assert ["alpha"] == names(rt.ask(REGISTRY, FindAgents(capability="streaming")))
    assert [] == names(rt.ask(REGISTRY, FindAgents(capability="streaming", skill_tag="code")))
    assert isinstance(found, AgentFound)
    assert "root/agents/beta" == found.card.path
    assert "available" == found.card.status


def test_unregistering_removes_the_card_and_unknown_names_are_refused(
    start_tree: StartTree,
) -> None:
    rt = start_tree(tree([agent("alpha")]))
    registered(rt, "alpha")

    gone = rt.ask(REGISTRY, UnregisterAgent(name="alpha"))
    with pytest.raises(RequestRejected) as lookup:
        rt.ask(REGISTRY, GetAgent(name="alpha"))
    with pytest.raises(RequestRejected) as again:
        rt.ask(REGISTRY, UnregisterAgent(name="alpha"))

    assert isinstance(gone, AgentUnregistered)
    assert "root/agents/alpha" == gone.card.path
    assert "UnknownAgent" == lookup.value.error
    assert "'alpha'" in lookup.value.detail
    assert "UnknownAgent" == again.value.error
    assert [] == names(rt.ask(REGISTRY, ListAgents()))


def test_bad_cards_are_refused_and_the_registry_keeps_running(start_tree: StartTree) -> None:
    rt = start_tree(tree([agent("alpha")]))
    registered(rt, "alpha")
    skill = AgentSkill(id="s", name="s", description="d", tags=["t"])
    impostor = AgentCard(
        name="alpha", description="d", version="1", skills=[skill], path="root/elsewhere"
    )
    no_skills = AgentCard(
        name="gamma", description="d", version="1", skills=[], path="root/agents/gamma"
    )

    with pytest.raises(RequestRejected) as duplicate:
        rt.ask(REGISTRY, RegisterAgent(card=impostor))
    with pytest.raises(RequestRejected) as invalid:
        rt.ask(REGISTRY, RegisterAgent(card=no_skills))
    with pytest.raises(RequestRejected) as unknown_kind:
        rt.ask(REGISTRY, DeliverToAgent(name="alpha", payload_kind="test.no_such_kind"))
    with pytest.raises(RequestRejected) as bad_payload:
        rt.ask(
            REGISTRY, DeliverToAgent(name="alpha", payload_kind="test.registry_note", payload={})
        )

    assert "DuplicateAgent" == duplicate.value.error
    assert "root/agents/alpha" in duplicate.value.detail
    assert "InvalidCard" == invalid.value.error
    assert "skills" in invalid.value.detail
    assert "UnknownPayloadKind" == unknown_kind.value.error
    assert "PayloadInvalid" == bad_payload.value.error
    assert "text" in bad_payload.value.detail
    found = rt.ask(REGISTRY, GetAgent(name="alpha"))
    assert isinstance(found, AgentFound)
    assert "root/agents/alpha" == found.card.path
    assert 0 == registry_restarts(rt)


def test_messages_for_an_absent_agent_are_held_and_delivered_in_order_when_it_registers(
    start_tree: StartTree,
) -> None:
    rt = start_tree(tree([]))

    first = rt.ask(REGISTRY, DeliverToAgent.wrap("gamma", Note(text="one")))
    second = rt.ask(REGISTRY, DeliverToAgent.wrap("gamma", Note(text="two")))
    waiting = rt.ask(REGISTRY, GetRegistryStatistics())
    rt.start_child("root/agents", agent("gamma"))
    arrival = registered(rt, "gamma")
    notes = rt.ask("root/agents/gamma", WaitNotes(count=2))
    direct = rt.ask(REGISTRY, DeliverToAgent.wrap("gamma", Note(text="three")))
    later = rt.ask("root/agents/gamma", WaitNotes(count=3))
    stats = rt.ask(REGISTRY, GetRegistryStatistics())

    assert isinstance(first, MessageHeld)
    assert isinstance(second, MessageHeld)
    assert (1, 2) == (first.held, second.held)
    assert isinstance(waiting, RegistryStatistics)
    assert {"gamma": 2} == waiting.held_by_agent
    assert 2 == arrival.delivered
    assert isinstance(notes, Notes)
    assert ["one", "two"] == notes.notes
    assert isinstance(direct, MessageForwarded)
    assert "root/agents/gamma" == direct.path
    assert isinstance(later, Notes)
    assert ["one", "two", "three"] == later.notes
    assert isinstance(stats, RegistryStatistics)
    assert (0, 2, 1, 0) == (stats.held, stats.delivered, stats.forwarded, stats.expired)
    assert 0 == registry_restarts(rt)


def test_expired_held_messages_are_reported_not_delivered(start_tree: StartTree) -> None:
    rt = start_tree(tree([], hold_seconds=0))

    held = rt.ask(REGISTRY, DeliverToAgent.wrap("ghost", Note(text="late")))
    stats = rt.ask(REGISTRY, GetRegistryStatistics())  # the sweep before it expires the note
    rt.start_child("root/agents", agent("ghost"))
    arrival = registered(rt, "ghost")

    assert isinstance(held, MessageHeld)
    assert 0.0 == held.expires_in
    assert isinstance(stats, RegistryStatistics)
    assert (0, 1) == (stats.held, stats.expired)
    assert 1 == len(stats.recent_losses)
    loss = stats.recent_losses[0]
    assert ("ghost", "expired", 1, ["test.registry_note"]) == (
        loss.agent,
        loss.reason,
        loss.count,
        loss.kinds,
    )
    assert 0 == arrival.delivered
    assert 0 == registry_restarts(rt)


def test_a_full_hold_queue_refuses_more_and_counts_the_overflow(start_tree: StartTree) -> None:
    rt = start_tree(tree([], max_held=1))

    rt.ask(REGISTRY, DeliverToAgent.wrap("busy", Note(text="kept")))
    with pytest.raises(RequestRejected) as full:
        rt.ask(REGISTRY, DeliverToAgent.wrap("busy", Note(text="refused")))
    stats = rt.ask(REGISTRY, GetRegistryStatistics())

    assert "HoldLimitReached" == full.value.error
    assert isinstance(stats, RegistryStatistics)
    assert (1, 1) == (stats.held, stats.overflowed)
    assert "overflowed" == stats.recent_losses[-1].reason


def test_a_card_disappears_when_its_agent_is_terminated_and_returns_on_restart(
    start_tree: StartTree,
) -> None:
    rt = start_tree(tree([agent("alpha", tags=["research"]), agent("beta")]))
    registered(rt, "alpha")
    registered(rt, "beta")

    rt.terminate_child("root/agents", "alpha")
    exited = rt.wait_event("child_terminated", child_id="alpha")
    synced = rt.ask(REGISTRY, SyncEvents(seq=exited.seq))
    with pytest.raises(RequestRejected) as missing:
        rt.ask(REGISTRY, GetAgent(name="alpha"))
    remaining = rt.ask(REGISTRY, ListAgents())
    held = rt.ask(REGISTRY, DeliverToAgent.wrap("alpha", Note(text="while down")))
    rt.restart_child("root/agents", "alpha")
    back = registered(rt, "alpha")
    notes = rt.ask("root/agents/alpha", WaitNotes(count=1))
    found = rt.ask(REGISTRY, FindAgents(skill_tag="research"))

    assert isinstance(synced, EventsSynced)
    assert synced.seq >= exited.seq
    assert "UnknownAgent" == missing.value.error
    assert ["beta"] == names(remaining)
    assert isinstance(held, MessageHeld)
    assert 1 == back.delivered
    assert isinstance(notes, Notes)
    assert ["while down"] == notes.notes
    assert ["alpha"] == names(found)
    assert ["alpha", "beta"] == names(rt.ask(REGISTRY, ListAgents()))
    assert 0 == registry_restarts(rt)


def test_registering_again_from_the_same_path_replaces_the_card(start_tree: StartTree) -> None:
    rt = start_tree(tree([agent("alpha", tags=["old"])]))
    registered(rt, "alpha")
    skill = AgentSkill(id="s", name="s", description="d", tags=["new"])
    card = AgentCard(
        name="alpha", description="renewed", version="2", skills=[skill], path="root/agents/alpha"
    )

    reply = rt.ask(REGISTRY, RegisterAgent(card=card))

    assert isinstance(reply, AgentRegistered)
    assert ["alpha"] == names(rt.ask(REGISTRY, FindAgents(skill_tag="new")))
    assert [] == names(rt.ask(REGISTRY, FindAgents(skill_tag="old")))
