"""The registry protocol: AgentCard as A2A JSON (checked against a2a-sdk), and its messages."""

from __future__ import annotations

import subprocess
import sys
from typing import Any, Literal

import pytest
from pydantic import Field, ValidationError

from protocols import Message, MessageInvalid, UnknownMessageKind
from protocols.codec import decode, encode
from protocols.registry import (
    AgentCapabilities,
    AgentCard,
    AgentCardSignature,
    AgentExtension,
    AgentInterface,
    AgentProvider,
    AgentSkill,
    DeliverToAgent,
    RegisterAgent,
)


class Memo(Message):
    kind: Literal["test.registry_protocol_memo"] = "test.registry_protocol_memo"
    text: str
    tags: list[str] = Field(default_factory=list)


def full_card() -> AgentCard:
    """A card using every A2A field the model has."""
    return AgentCard(
        name="Researcher",
        description="Finds and summarises sources.",
        version="2.1.0",
        supported_interfaces=[
            AgentInterface(
                url="https://agents.example.com/a2a/v1",
                protocol_binding="JSONRPC",
                protocol_version="1.0",
                tenant="team-a",
            ),
            AgentInterface(
                url="https://agents.example.com/a2a/v0",
                protocol_binding="HTTP+JSON",
                protocol_version="0.3",
            ),
        ],
        provider=AgentProvider(organization="Example Org", url="https://example.com"),
        documentation_url="https://example.com/docs",
        capabilities=AgentCapabilities(
            streaming=True,
            push_notifications=False,
            extended_agent_card=True,
            extensions=[
                AgentExtension(
                    uri="urn:example:memo", description="memos", required=False, params={"depth": 2}
                )
            ],
        ),
        security_schemes={"bearer": {"httpAuthSecurityScheme": {"scheme": "Bearer"}}},
        security_requirements=[{"schemes": {"bearer": {"list": []}}}],
        default_input_modes=["text/plain", "application/json"],
        default_output_modes=["text/markdown"],
        skills=[
            AgentSkill(
                id="search",
                name="Search",
                description="Searches the web.",
                tags=["research", "web"],
                examples=["find papers on actors"],
                input_modes=["text/plain"],
                output_modes=["application/json"],
            ),
            AgentSkill(
                id="summarise", name="Summarise", description="Summarises text.", tags=["writing"]
            ),
        ],
        signatures=[
            AgentCardSignature(
                protected="eyJhbGciOiJFUzI1NiJ9", signature="c2ln", header={"kid": "key-1"}
            )
        ],
        icon_url="https://example.com/icon.png",
        path="root/agents/researcher",
        status="busy",
    )


def minimal_card() -> AgentCard:
    return AgentCard(
        name="m",
        description="minimal",
        version="1",
        path="root/agents/m",
        skills=[AgentSkill(id="s", name="s", description="d", tags=["t"])],
    )


# --- A2A JSON ------------------------------------------------------------------------------


def test_a2a_json_uses_camel_case_names_and_leaves_out_understudy_fields() -> None:
    data = full_card().to_a2a_json()

    assert "path" not in data
    assert "status" not in data
    assert {
        "supportedInterfaces",
        "defaultInputModes",
        "defaultOutputModes",
        "documentationUrl",
        "iconUrl",
        "securitySchemes",
        "securityRequirements",
    } <= set(data)
    assert "pushNotifications" in data["capabilities"]
    assert "extendedAgentCard" in data["capabilities"]
    assert "protocolBinding" in data["supportedInterfaces"][0]
    assert {"inputModes", "outputModes"} <= set(data["skills"][0])


def test_a_card_without_interfaces_is_reached_through_its_actor() -> None:
    data = minimal_card().to_a2a_json()

    assert [
        {
            "url": "understudy://root/agents/m",
            "protocolBinding": "UNDERSTUDY",
            "protocolVersion": "1.0",
        }
    ] == data["supportedInterfaces"]
    assert ["text/plain"] == data["defaultInputModes"]


def test_a_card_round_trips_through_a2a_json() -> None:
    card = full_card()

    again = AgentCard.from_a2a_json(card.to_a2a_json(), path=card.path, status=card.status)

    assert card == again


def test_a_card_accepts_python_names_and_a2a_names() -> None:
    by_alias = AgentCard.model_validate(
        {
            "name": "a",
            "description": "d",
            "version": "1",
            "path": "root/a",
            "defaultInputModes": ["text/plain"],
            "skills": [
                {
                    "id": "s",
                    "name": "s",
                    "description": "d",
                    "tags": ["t"],
                    "inputModes": ["image/png"],
                }
            ],
        }
    )

    assert ["image/png"] == by_alias.skills[0].input_modes


def test_unknown_card_fields_are_rejected() -> None:
    with pytest.raises(ValidationError):
        AgentCard.from_a2a_json({**minimal_card().to_a2a_json(), "colour": "red"}, path="root/a")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"name": " "}, "name must not be empty"),
        ({"skills": []}, "skills must list at least one skill"),
        ({"default_output_modes": []}, "defaultOutputModes"),
        ({"supported_interfaces": []}, "supportedInterfaces"),
        ({"path": "root/agents/"}, "path"),
        ({"path": "root agents"}, "path"),
    ],
)
def test_problems_name_the_field(change: dict[str, Any], problem: str) -> None:
    card = minimal_card().model_copy(update=change)

    assert any(problem in p for p in card.problems())


def test_problems_find_missing_tags_and_duplicate_skill_ids() -> None:
    skill = AgentSkill(id="s", name="s", description="d", tags=[])
    card = minimal_card().model_copy(update={"skills": [skill, skill]})

    problems = card.problems()

    assert "skills[0].tags must list at least one tag" in problems
    assert any("skills[1].id 's' is used by another skill" in p for p in problems)


def test_a_complete_card_has_no_problems() -> None:
    assert [] == full_card().problems()
    assert [] == minimal_card().problems()


# --- Validated by the published a2a-sdk -------------------------------------------------------


def _sdk_parse(data: dict[str, Any]) -> Any:
    """Parse A2A JSON the strict way: unknown fields fail, REQUIRED fields must be set."""
    a2a_types = pytest.importorskip("a2a.types")
    proto_utils = pytest.importorskip("a2a.utils.proto_utils")
    json_format = pytest.importorskip("google.protobuf.json_format")
    parsed = json_format.ParseDict(data, a2a_types.AgentCard())
    proto_utils.validate_proto_required_fields(parsed)
    return parsed


@pytest.mark.parametrize("card", [full_card(), minimal_card()], ids=["full", "minimal"])
def test_cards_are_valid_agent_cards_for_the_a2a_sdk(card: AgentCard) -> None:
    parsed = _sdk_parse(card.to_a2a_json())

    assert card.name == parsed.name
    assert [s.id for s in card.skills] == [s.id for s in parsed.skills]
    assert [i.url for i in card.interfaces()] == [i.url for i in parsed.supported_interfaces]
    assert card.capabilities.streaming is parsed.capabilities.streaming or (
        card.capabilities.streaming is None and not parsed.capabilities.streaming
    )


def test_the_sdk_client_reads_the_card_as_we_wrote_it() -> None:
    resolver = pytest.importorskip("a2a.client.card_resolver")
    card = full_card()

    assert _sdk_parse(card.to_a2a_json()) == resolver.parse_agent_card(card.to_a2a_json())


def test_the_sdk_converts_our_card_with_a_0_3_interface_to_a_valid_a2a_0_3_card() -> None:
    conversions = pytest.importorskip("a2a.compat.v0_3.conversions")
    v03 = pytest.importorskip("a2a.compat.v0_3.types")
    card = full_card()

    legacy = conversions.to_compat_agent_card(_sdk_parse(card.to_a2a_json()))
    revalidated = v03.AgentCard.model_validate(legacy.model_dump(mode="json", exclude_none=True))

    assert "https://agents.example.com/a2a/v0" == revalidated.url
    assert ["research", "web"] == revalidated.skills[0].tags


def test_a_card_with_problems_is_also_refused_by_the_sdk() -> None:
    errors = pytest.importorskip("a2a.utils.errors")
    card = minimal_card().model_copy(update={"skills": [], "default_input_modes": []})

    with pytest.raises(errors.InvalidParamsError):
        _sdk_parse(card.to_a2a_json())
    assert 2 == len(card.problems())


# --- Messages -----------------------------------------------------------------------------------


def test_register_agent_survives_the_codec_with_camel_case_on_the_wire() -> None:
    message = RegisterAgent(card=full_card())

    assert message == decode(encode(message))
    assert "defaultInputModes" in message.model_dump(mode="json")["card"]


def test_deliver_to_agent_carries_a_message_as_its_kind_and_body() -> None:
    command = DeliverToAgent.wrap("a", Memo(text="hi", tags=["x"]))

    assert ("test.registry_protocol_memo", {"text": "hi", "tags": ["x"]}) == (
        command.payload_kind,
        command.payload,
    )
    assert __name__ == command.payload_module
    assert Memo(text="hi", tags=["x"]) == decode(encode(command)).unwrap()  # type: ignore[attr-defined]


def test_unwrap_raises_codec_errors_for_bad_payloads() -> None:
    with pytest.raises(UnknownMessageKind):
        DeliverToAgent(name="a", payload_kind="test.nope").unwrap()
    with pytest.raises(MessageInvalid, match="text"):
        DeliverToAgent(name="a", payload_kind="test.registry_protocol_memo").unwrap()


def test_the_registry_protocol_never_imports_actors_or_thespian() -> None:
    code = (
        "import sys, protocols.registry;"
        " print(','.join(m for m in sys.modules if m.split('.')[0] in ('actors', 'thespian')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert "" == out.stdout.strip()
