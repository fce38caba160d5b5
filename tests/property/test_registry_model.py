"""Properties of the registry: held messages against a reference model, queries, A2A cards."""

from __future__ import annotations

import string
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actors.services.registry_state import (
    AgentDirectory,
    HeldMessages,
    Refusal,
    RegistryConfig,
    RegistryState,
    matches,
)
from protocols import Message
from protocols.registry import (
    AgentCapabilities,
    AgentCard,
    AgentExtension,
    AgentInterface,
    AgentProvider,
    AgentSkill,
    FindAgents,
)
from tests.strategies import json_objects, quarters


class Token(Message):
    kind: Literal["test.registry_token"] = "test.registry_token"
    n: int


AGENTS = ["a", "b", "c"]


# --- Held messages against a reference model --------------------------------------------------


class HeldMessagesMachine(RuleBasedStateMachine):
    """Every message held is taken, expired, dropped or still held: never lost or duplicated."""

    def __init__(self) -> None:
        super().__init__()
        self.config: RegistryConfig | None = None
        self.held: HeldMessages | None = None
        self.now = 0.0
        self.next_n = 0
        self.model: dict[str, list[tuple[int, float]]] = {a: [] for a in AGENTS}  # (n, deadline)
        self.accounted: list[int] = []  # taken, expired or dropped
        self.refused: list[int] = []

    @precondition(lambda self: self.held is None)
    @rule(
        max_held=st.integers(1, 4),
        max_total=st.integers(1, 8),
        hold=st.integers(0, 8).map(lambda n: n / 2),
        overflow=st.sampled_from(["reject", "drop_oldest"]),
    )
    def configure(self, max_held: int, max_total: int, hold: float, overflow: str) -> None:
        self.config = RegistryConfig(
            max_held=max_held, max_held_total=max_total, hold_seconds=hold, overflow=overflow
        )
        self.held = HeldMessages(self.config)

    @precondition(lambda self: self.held is not None)
    @rule(gap=quarters)
    def tick(self, gap: float) -> None:
        self.now += gap

    @precondition(lambda self: self.held is not None)
    @rule(agent=st.sampled_from(AGENTS))
    def hold(self, agent: str) -> None:
        assert self.held is not None and self.config is not None
        n = self.next_n
        self.next_n += 1
        queue = self.model[agent]
        total = sum(len(q) for q in self.model.values())
        drop = max(0, len(queue) - self.config.max_held + 1)
        refused = (drop > 0 and self.config.overflow == "reject") or (
            total - drop >= self.config.max_held_total
        )
        try:
            _held, dropped = self.held.hold(agent, Token(n=n), self.now)
        except Refusal as refusal:
            assert "HoldLimitReached" == refusal.error  # noqa: PT017 - a rule-based state machine step, not a raises check
            assert refused
            self.refused.append(n)
            return
        assert not refused
        expected_drop = queue[:drop]
        assert [x for x, _ in expected_drop] == [h.message.n for h in dropped]  # type: ignore[attr-defined]
        del queue[: len(expected_drop)]
        self.accounted.extend(x for x, _ in expected_drop)
        queue.append((n, self.now + self.config.hold_seconds))

    @precondition(lambda self: self.held is not None)
    @rule()
    def expire(self) -> None:
        assert self.held is not None
        expired = self.held.expire(self.now)
        for agent in AGENTS:
            due = [x for x, deadline in self.model[agent] if deadline <= self.now]
            assert due == [h.message.n for h in expired.get(agent, [])]  # type: ignore[attr-defined]
            self.model[agent] = [(x, d) for x, d in self.model[agent] if d > self.now]
            self.accounted.extend(due)

    @precondition(lambda self: self.held is not None)
    @rule(agent=st.sampled_from(AGENTS))
    def take(self, agent: str) -> None:
        assert self.held is not None
        taken = [h.message.n for h in self.held.take(agent)]  # type: ignore[attr-defined]
        assert [x for x, _ in self.model[agent]] == taken
        self.model[agent] = []
        self.accounted.extend(taken)

    @invariant()
    def counts_match_the_model_and_the_bounds(self) -> None:
        if self.held is None or self.config is None:
            return
        for agent in AGENTS:
            assert len(self.model[agent]) == self.held.count(agent)
            assert self.held.count(agent) <= self.config.max_held
        assert self.held.count() <= self.config.max_held_total
        deadlines = [d for q in self.model.values() for _, d in q]
        assert min(deadlines, default=None) == self.held.next_deadline()

    @invariant()
    def nothing_is_lost_or_duplicated(self) -> None:
        still = [x for q in self.model.values() for x, _ in q]
        everything = sorted(self.accounted + still + self.refused)
        assert list(range(self.next_n)) == everything


TestHeldMessages = HeldMessagesMachine.TestCase
TestHeldMessages.settings = settings(max_examples=150, stateful_step_count=40)


# --- Cards ------------------------------------------------------------------------------------


def model(cls: type[Any], **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Instances of a pydantic model from strategies for its fields (by Python name).

    ``st.builds`` would read the camelCase aliases in the model's signature and draw them too.
    """
    return st.fixed_dictionaries(fields).map(lambda values: cls(**values))


words = st.text(alphabet=string.ascii_lowercase + string.digits + "-", max_size=6)
texts = st.text(max_size=8)
mimes = st.sampled_from(["text/plain", "application/json", "image/png"])
paths = st.sampled_from(["root/agents/a", "root/x", "root/agents/team/b", "root//bad", "root "])

skills = model(
    AgentSkill,
    id=words,
    name=texts,
    description=texts,
    tags=st.lists(words, max_size=3),
    examples=st.lists(texts, max_size=2),
    input_modes=st.none() | st.lists(mimes, max_size=2),
    output_modes=st.none() | st.lists(mimes, max_size=2),
)
interfaces = model(
    AgentInterface,
    url=st.sampled_from(["https://a.example/a2a", "grpc://b.example", ""]),
    protocol_binding=st.sampled_from(["JSONRPC", "GRPC", "HTTP+JSON", ""]),
    protocol_version=st.sampled_from(["1.0", "0.3", ""]),
    tenant=st.none() | words,
)
extensions = model(
    AgentExtension,
    uri=st.sampled_from(["urn:x:a", "urn:x:b"]),
    description=st.none() | texts,
    required=st.booleans(),
    params=st.none() | json_objects,
)
capabilities = model(
    AgentCapabilities,
    streaming=st.none() | st.booleans(),
    push_notifications=st.none() | st.booleans(),
    extended_agent_card=st.none() | st.booleans(),
    extensions=st.lists(extensions, max_size=2),
)
cards = model(
    AgentCard,
    name=words,
    description=texts,
    version=st.sampled_from(["1", "2.0.1", ""]),
    supported_interfaces=st.none() | st.lists(interfaces, max_size=2),
    provider=st.none() | model(AgentProvider, organization=texts, url=texts),
    documentation_url=st.none() | texts,
    capabilities=capabilities,
    default_input_modes=st.lists(mimes, max_size=2),
    default_output_modes=st.lists(mimes, max_size=2),
    skills=st.lists(skills, max_size=3),
    icon_url=st.none() | texts,
    path=paths,
    status=st.sampled_from(["available", "busy", "unavailable"]),
)
names = st.text(alphabet=string.ascii_lowercase + string.digits + "-", min_size=1, max_size=6)
filled = st.text(alphabet=string.ascii_letters + " .", min_size=1, max_size=8).filter(str.strip)
valid_cards = model(
    AgentCard,
    name=names,
    description=filled,
    version=st.sampled_from(["1", "2.0.1"]),
    supported_interfaces=st.none()
    | st.lists(
        model(
            AgentInterface,
            url=st.just("https://a.example/a2a"),
            protocol_binding=st.sampled_from(["JSONRPC", "GRPC"]),
            protocol_version=st.sampled_from(["1.0", "0.3"]),
        ),
        min_size=1,
        max_size=2,
    ),
    capabilities=capabilities,
    default_input_modes=st.lists(mimes, min_size=1, max_size=2),
    default_output_modes=st.lists(mimes, min_size=1, max_size=2),
    skills=st.lists(
        model(
            AgentSkill,
            id=names,
            name=filled,
            description=filled,
            tags=st.lists(names, min_size=1, max_size=3),
        ),
        min_size=1,
        max_size=3,
        unique_by=lambda skill: skill.id,
    ),
    path=st.sampled_from(["root/agents/a", "root/x", "root/agents/team/b"]),
    status=st.sampled_from(["available", "busy", "unavailable"]),
)
queries = model(
    FindAgents,
    capability=st.none()
    | st.sampled_from(
        ["streaming", "pushNotifications", "extended_agent_card", "urn:x:a", "urn:x:c"]
    ),
    skill_tag=st.none() | words,
    skill_id=st.none() | words,
    status=st.none() | st.sampled_from(["available", "busy", "unavailable"]),
)


def _sdk_accepts(data: dict[str, Any]) -> bool:
    """Parse A2A JSON with a2a-sdk (unknown fields raise) and check its REQUIRED fields."""
    a2a_types = pytest.importorskip("a2a.types")
    proto_utils = pytest.importorskip("a2a.utils.proto_utils")
    errors = pytest.importorskip("a2a.utils.errors")
    json_format = pytest.importorskip("google.protobuf.json_format")
    parsed = json_format.ParseDict(data, a2a_types.AgentCard())
    try:
        proto_utils.validate_proto_required_fields(parsed)
    except errors.InvalidParamsError:
        return False
    return True


@settings(max_examples=150)
@given(cards | valid_cards)
def test_the_a2a_sdk_accepts_every_card_without_problems_and_refuses_only_cards_with_some(
    card: AgentCard,
) -> None:
    accepted = _sdk_accepts(card.to_a2a_json())

    if not card.problems():
        assert accepted
    if not accepted:
        assert card.problems()


@given(cards)
def test_a2a_json_round_trips_to_the_same_card(card: AgentCard) -> None:
    explicit = card.model_copy(update={"supported_interfaces": card.interfaces()})

    assert explicit == AgentCard.from_a2a_json(
        card.to_a2a_json(), path=card.path, status=card.status
    )


@given(st.lists(valid_cards, max_size=6, unique_by=lambda c: c.name), queries)
def test_find_agents_returns_exactly_the_matching_cards_sorted_by_name(
    found: list[AgentCard],
    query: FindAgents,
) -> None:
    directory = AgentDirectory()
    for card in found:
        directory.register(card)

    result = directory.cards(query)

    assert sorted((c for c in found if matches(c, query)), key=lambda c: c.name) == result
    assert directory.cards() == directory.cards(FindAgents())


@given(
    st.lists(st.tuples(st.sampled_from(AGENTS), quarters), max_size=20),
    st.integers(0, 8).map(lambda n: n / 2),
    quarters,
)
def test_sweep_counts_every_expired_message_once(
    deliveries: list[tuple[str, float]],
    hold: float,
    extra: float,
) -> None:
    state = RegistryState(RegistryConfig(hold_seconds=hold, max_held=100))
    now = 0.0
    for n, (agent, gap) in enumerate(deliveries):
        now += gap
        state.deliver(agent, Token(n=n), now)

    first = state.sweep(now + extra)
    second = state.sweep(now + extra)
    stats = state.statistics()

    assert [] == second
    assert len(deliveries) == stats.held + stats.expired
    assert stats.expired == sum(len(loss.messages) for loss in first)
