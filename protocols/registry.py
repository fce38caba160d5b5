"""The A2A registry protocol: agent cards, the registry's commands and its replies.

An :class:`AgentCard` follows the AgentCard object of Google's Agent2Agent (A2A) protocol,
version 1.0 (``supportedInterfaces``, ``capabilities``, ``skills``, ``defaultInputModes`` ...),
with A2A's camelCase JSON names as aliases; Understudy adds two fields of its own, ``path``
(where the agent's actor lives in the tree) and ``status``. ``card.to_a2a_json()`` drops those
two and returns a valid A2A AgentCard JSON object.

The model checks types and shapes only. What A2A requires to be present and non-empty (a
name, at least one skill, tags on every skill ...) and Understudy's own rules (a well-formed
path, unique skill ids) are listed by ``card.problems()``; the registry refuses a card with
problems (``InvalidCard``), so every card it holds is valid A2A. A card of the wrong shape
(wrong types, unknown fields) never reaches the registry: the seam refuses the message as
``MessageInvalid``.

Commands and their replies (errors are ``ErrorReply`` with the ``error`` named)::

    RegisterAgent(card)            -> AgentRegistered      InvalidCard, DuplicateAgent
    UpdateStatus(name, status)     -> AgentUpdated         UnknownAgent
    UnregisterAgent(name)          -> AgentUnregistered    UnknownAgent
    GetAgent(name)                 -> AgentFound           UnknownAgent
    ListAgents()                   -> AgentsFound
    FindAgents(capability=..., skill_tag=..., skill_id=..., status=...) -> AgentsFound
    DeliverToAgent(name, payload_kind, payload)  -> MessageForwarded | MessageHeld
                                   UnknownPayloadKind, PayloadInvalid, HoldLimitReached
    GetRegistryStatistics()        -> RegistryStatistics
    SyncEvents(seq)                -> EventsSynced         SyncAbandoned
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from protocols._base import Message, message_class
from protocols.errors import MessageInvalid, UnknownMessageKind

#: Where the default topology runs the registry.
REGISTRY_PATH = "root/system/registry"

#: The A2A protocol version whose AgentCard this module follows.
A2A_PROTOCOL_VERSION = "1.0"

#: The protocol binding of an agent reached as an Understudy actor (A2A bindings are open strings).
ACTOR_BINDING = "UNDERSTUDY"

#: The URL scheme of an agent reached as an Understudy actor: ``understudy://<path>``.
ACTOR_URL_SCHEME = "understudy://"

AgentStatus = Literal["available", "busy", "unavailable"]
"""available: takes work; busy: registered, working (messages still go through);
unavailable: registered, but messages for it are held as if it were not registered."""

LossReason = Literal["expired", "overflowed", "discarded"]

#: Understudy's own fields of a card; ``to_a2a_json`` leaves them out.
UNDERSTUDY_FIELDS = frozenset({"path", "status"})

#: The boolean flags of A2A's AgentCapabilities, by JSON name, with their Python names.
CAPABILITY_FLAGS = {
    "streaming": "streaming",
    "pushNotifications": "push_notifications",
    "extendedAgentCard": "extended_agent_card",
}

_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9_.\-]+$")


class A2AModel(BaseModel):
    """Base of the A2A objects: frozen, strict about unknown fields, camelCase on the wire.

    Fields may be given by their Python name or by their A2A JSON name.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


class AgentInterface(A2AModel):
    """One way to reach the agent: a URL, a protocol binding and the A2A version spoken there."""

    url: str
    protocol_binding: str
    protocol_version: str = A2A_PROTOCOL_VERSION
    tenant: str | None = None


class AgentProvider(A2AModel):
    """The organization that runs the agent."""

    organization: str
    url: str


class AgentExtension(A2AModel):
    """A protocol extension the agent supports, named by its URI."""

    uri: str
    description: str | None = None
    required: bool = False
    params: dict[str, Any] | None = None


class AgentCapabilities(A2AModel):
    """Optional A2A features the agent supports."""

    streaming: bool | None = None
    push_notifications: bool | None = None
    extensions: list[AgentExtension] = Field(default_factory=list)
    extended_agent_card: bool | None = None


class AgentSkill(A2AModel):
    """A unit of work the agent is good at; ``tags`` are what FindAgents(skill_tag=...) matches."""

    id: str
    name: str
    description: str
    tags: list[str]
    examples: list[str] = Field(default_factory=list)
    input_modes: list[str] | None = None
    output_modes: list[str] | None = None
    security_requirements: list[dict[str, Any]] | None = None


class AgentCardSignature(A2AModel):
    """A JWS signature of the card (RFC 7515, JSON serialization)."""

    protected: str
    signature: str
    header: dict[str, Any] | None = None


class AgentCard(A2AModel):
    """An A2A AgentCard plus Understudy's ``path`` and ``status``.

    When ``supported_interfaces`` is not given, the card gets one interface: the agent's actor,
    ``understudy://<path>`` with the ``UNDERSTUDY`` binding. Security schemes and requirements
    are kept as A2A's JSON objects (``securitySchemes``: name -> scheme object).
    """

    name: str
    description: str
    version: str
    supported_interfaces: list[AgentInterface] | None = None
    provider: AgentProvider | None = None
    documentation_url: str | None = None
    capabilities: AgentCapabilities = Field(default_factory=AgentCapabilities)
    security_schemes: dict[str, dict[str, Any]] | None = None
    security_requirements: list[dict[str, Any]] | None = None
    default_input_modes: list[str] = Field(default_factory=lambda: ["text/plain"])
    default_output_modes: list[str] = Field(default_factory=lambda: ["text/plain"])
    skills: list[AgentSkill]
    signatures: list[AgentCardSignature] | None = None
    icon_url: str | None = None
    # --- Understudy's own fields (not part of A2A) ---
    path: str
    status: AgentStatus = "available"

    def interfaces(self) -> list[AgentInterface]:
        """Return the card's interfaces; the actor interface when none were given."""
        if self.supported_interfaces is not None:
            return list(self.supported_interfaces)
        return [AgentInterface(url=ACTOR_URL_SCHEME + self.path, protocol_binding=ACTOR_BINDING)]

    def to_a2a_json(self) -> dict[str, Any]:
        """Return the card as an A2A AgentCard JSON object (camelCase, no Understudy fields)."""
        data: dict[str, Any] = self.model_dump(
            mode="json", by_alias=True, exclude_none=True, exclude=set(UNDERSTUDY_FIELDS)
        )
        data["supportedInterfaces"] = [
            i.model_dump(mode="json", by_alias=True, exclude_none=True) for i in self.interfaces()
        ]
        return data

    @classmethod
    def from_a2a_json(
        cls, data: dict[str, Any], *, path: str, status: AgentStatus = "available"
    ) -> AgentCard:
        """Build a card from an A2A AgentCard JSON object and the agent's actor ``path``.

        Raises:
            pydantic.ValidationError: the object is not an AgentCard of A2A 1.0.
        """
        return cls.model_validate({**data, "path": path, "status": status})

    def problems(self) -> list[str]:
        """Return what keeps this card from being a valid A2A card in the registry, or [].

        A2A requires non-empty ``name``, ``description``, ``version``, interfaces, input and
        output modes and skills, and on each skill a non-empty id, name, description and tags;
        Understudy requires a well-formed actor path and unique skill ids.
        """
        found = _blank(self, ("name", "description", "version"), "")
        if not all(_PATH_SEGMENT.match(part) for part in self.path.split("/")):
            found.append(f"path must be child ids joined by '/', got {self.path!r}")
        if self.supported_interfaces is not None and not self.supported_interfaces:
            found.append("supportedInterfaces must list at least one interface (or be left out)")
        for index, interface in enumerate(self.interfaces()):
            found += _blank(
                interface,
                ("url", "protocol_binding", "protocol_version"),
                f"supportedInterfaces[{index}].",
            )
        found += [
            f"{to_camel(name)} must list at least one media type"
            for name in ("default_input_modes", "default_output_modes")
            if not getattr(self, name)
        ]
        if not self.skills:
            found.append("skills must list at least one skill")
        ids = [skill.id for skill in self.skills]
        for index, skill in enumerate(self.skills):
            found += _blank(skill, ("id", "name", "description"), f"skills[{index}].")
            if not skill.tags:
                found.append(f"skills[{index}].tags must list at least one tag")
            if skill.id in ids[:index]:
                found.append(f"skills[{index}].id {skill.id!r} is used by another skill")
        if self.provider is not None:
            found += _blank(self.provider, ("organization", "url"), "provider.")
        return found

    def has_capability(self, capability: str) -> bool:
        """Return True if ``capability`` is a true A2A capability flag or a declared extension.

        Flags are named as in A2A's JSON (``streaming``, ``pushNotifications``,
        ``extendedAgentCard``) or in snake_case; an extension is named by its URI.
        """
        caps = self.capabilities
        attribute = CAPABILITY_FLAGS.get(capability)
        if attribute is None and capability in CAPABILITY_FLAGS.values():
            attribute = capability
        if attribute is not None:
            return bool(getattr(caps, attribute))
        return any(ext.uri == capability for ext in caps.extensions)

    def has_skill_tag(self, tag: str) -> bool:
        """Return True if one of the card's skills carries ``tag`` (compared case-insensitively)."""
        wanted = tag.casefold()
        return any(t.casefold() == wanted for skill in self.skills for t in skill.tags)


def _blank(model: BaseModel, names: tuple[str, ...], prefix: str) -> list[str]:
    """Return a problem for each of the string fields ``names`` of ``model`` that is blank."""
    return [
        f"{prefix}{to_camel(name)} must not be empty"
        for name in names
        if not getattr(model, name).strip()
    ]


class HeldLoss(BaseModel):
    """Messages held for an agent that were never delivered, and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent: str
    reason: LossReason
    count: int
    kinds: list[str]
    at: float  # wall-clock time (time.time()) of the report


# --- Commands -------------------------------------------------------------------------------


class RegisterAgent(Message):
    """Add (or replace, same name and same path) an agent's card; held messages go to it."""

    kind: Literal["registry.register_agent"] = "registry.register_agent"
    card: AgentCard


class UpdateStatus(Message):
    """Change a registered agent's status."""

    kind: Literal["registry.update_status"] = "registry.update_status"
    name: str
    status: AgentStatus


class UnregisterAgent(Message):
    """Remove an agent's card; later messages for it are held again."""

    kind: Literal["registry.unregister_agent"] = "registry.unregister_agent"
    name: str


class GetAgent(Message):
    """Ask for one agent's card."""

    kind: Literal["registry.get_agent"] = "registry.get_agent"
    name: str


class ListAgents(Message):
    """Ask for every card, by name."""

    kind: Literal["registry.list_agents"] = "registry.list_agents"


class FindAgents(Message):
    """Ask for the cards matching every given filter (none given: every card), by name.

    ``capability`` is an A2A capability flag or extension URI (see AgentCard.has_capability),
    ``skill_tag`` a tag of one of the skills, ``skill_id`` the id of one of the skills.
    """

    kind: Literal["registry.find_agents"] = "registry.find_agents"
    capability: str | None = None
    skill_tag: str | None = None
    skill_id: str | None = None
    status: AgentStatus | None = None


class DeliverToAgent(Message):
    """Send a message to the agent registered as ``name``, holding it until the agent registers.

    The message travels as its kind and its JSON body (``wrap`` builds this from a Message);
    the registry rebuilds and validates it on arrival. ``payload_module`` names the module that
    defines the kind, imported by the registry if it does not know the kind yet.
    """

    kind: Literal["registry.deliver_to_agent"] = "registry.deliver_to_agent"
    name: str
    payload_kind: str
    payload: dict[str, Any] = Field(default_factory=dict)
    payload_module: str | None = None

    @classmethod
    def wrap(cls, name: str, message: Message) -> DeliverToAgent:
        """Return the command that delivers ``message`` to the agent ``name``."""
        body = message.model_dump(mode="json")
        body.pop("kind", None)
        return cls(
            name=name,
            payload_kind=message.kind,
            payload=body,
            payload_module=type(message).__module__,
        )

    def unwrap(self) -> Message:
        """Rebuild the carried message from the kinds registered in this process.

        Raises:
            UnknownMessageKind: no Message class has ``payload_kind``.
            MessageInvalid: ``payload`` does not validate against that class.
        """
        cls = message_class(self.payload_kind)
        if cls is None:
            raise UnknownMessageKind(self.payload_kind)
        try:
            return cls.model_validate({**self.payload, "kind": self.payload_kind})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<body>'}: {err['msg']}"
                for err in exc.errors()
            )
            msg = f"invalid {self.payload_kind!r} payload: {problems}"
            raise MessageInvalid(msg) from exc


class GetRegistryStatistics(Message):
    """Ask for the registry's counters (for ``understudy status``)."""

    kind: Literal["registry.get_statistics"] = "registry.get_statistics"


class SyncEvents(Message):
    """Answer once the registry has applied the supervision event numbered ``seq``.

    A caller that saw an event (``rt.wait_event(...).seq``) uses it to know that the registry
    has acted on it (e.g. removed the card of an agent that exited).
    """

    kind: Literal["registry.sync_events"] = "registry.sync_events"
    seq: int


# --- Replies --------------------------------------------------------------------------------


class AgentRegistered(Message):
    """The card is registered; ``delivered`` held messages were sent to the agent."""

    kind: Literal["registry.agent_registered"] = "registry.agent_registered"
    card: AgentCard
    delivered: int = 0


class AgentUpdated(Message):
    """The agent's status changed; ``delivered`` held messages were sent to it."""

    kind: Literal["registry.agent_updated"] = "registry.agent_updated"
    card: AgentCard
    delivered: int = 0


class AgentUnregistered(Message):
    """The card was removed."""

    kind: Literal["registry.agent_unregistered"] = "registry.agent_unregistered"
    card: AgentCard


class AgentFound(Message):
    """One agent's card."""

    kind: Literal["registry.agent_found"] = "registry.agent_found"
    card: AgentCard


class AgentsFound(Message):
    """The cards answering ListAgents or FindAgents, sorted by name."""

    kind: Literal["registry.agents_found"] = "registry.agents_found"
    cards: list[AgentCard]


class MessageForwarded(Message):
    """The agent is registered: the message was sent to its actor at ``path``."""

    kind: Literal["registry.message_forwarded"] = "registry.message_forwarded"
    name: str
    path: str


class MessageHeld(Message):
    """The agent is not registered (or unavailable): the message waits for it.

    ``held`` messages now wait for this agent; this one expires after ``expires_in`` seconds.
    """

    kind: Literal["registry.message_held"] = "registry.message_held"
    name: str
    held: int
    expires_in: float


class RegistryStatistics(Message):
    """The registry's counters.

    ``forwarded`` messages went straight to a registered agent, ``delivered`` ones after being
    held; ``expired`` and ``overflowed`` count held messages lost; ``recent_losses`` lists the
    last batches lost (``agent`` is the actor path when no agent was known).
    """

    kind: Literal["registry.statistics"] = "registry.statistics"
    registered: int
    by_status: dict[str, int] = Field(default_factory=dict)
    held: int = 0
    held_by_agent: dict[str, int] = Field(default_factory=dict)
    forwarded: int = 0
    delivered: int = 0
    expired: int = 0
    overflowed: int = 0
    recent_losses: list[HeldLoss] = Field(default_factory=list)

    def summary(self) -> str:
        """Return one line for ``understudy status``."""
        available = self.by_status.get("available", 0)
        return (
            f"{self.registered} agents ({available} available), {self.held} held messages, "
            f"{self.expired} expired, {self.overflowed} overflowed"
        )


class EventsSynced(Message):
    """The registry has applied every supervision event up to ``seq``."""

    kind: Literal["registry.events_synced"] = "registry.events_synced"
    seq: int


class _Sweep(Message):
    """Registry -> itself (through ``call_later``): expire held messages that are due."""

    kind: Literal["_registry.sweep"] = "_registry.sweep"


__all__ = [
    "A2A_PROTOCOL_VERSION",
    "ACTOR_BINDING",
    "ACTOR_URL_SCHEME",
    "CAPABILITY_FLAGS",
    "REGISTRY_PATH",
    "A2AModel",
    "AgentCapabilities",
    "AgentCard",
    "AgentCardSignature",
    "AgentExtension",
    "AgentFound",
    "AgentInterface",
    "AgentProvider",
    "AgentRegistered",
    "AgentSkill",
    "AgentStatus",
    "AgentUnregistered",
    "AgentUpdated",
    "AgentsFound",
    "DeliverToAgent",
    "EventsSynced",
    "FindAgents",
    "GetAgent",
    "GetRegistryStatistics",
    "HeldLoss",
    "ListAgents",
    "LossReason",
    "MessageForwarded",
    "MessageHeld",
    "RegisterAgent",
    "RegistryStatistics",
    "SyncEvents",
    "UnregisterAgent",
    "UpdateStatus",
]
