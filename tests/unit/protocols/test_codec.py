"""Examples of the codec's errors and of the Message base class's rules."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import msgpack
import pytest
from pydantic import ValidationError

import protocols._base
from protocols import (
    CodecError,
    DecodeError,
    Message,
    MessageInvalid,
    MessageTooLarge,
    UnknownMessageKind,
    message_class,
    registered_kinds,
)
from protocols._lifecycle import ActorRef, _Register
from protocols.codec import (
    FORMAT_VERSION,
    BadEnvelope,
    Envelope,
    decode,
    decode_envelope,
    decode_frame,
    encode,
    encode_frame,
    envelope_parts,
)
from protocols.common import ErrorReply, Ok
from protocols.supervision import (
    ChildInfo,
    Children,
    GetEvents,
    StartChild,
    TerminateChild,
)
from protocols.topology import ChildSpec, SupervisorSpec


def frame(*envelopes: Any, version: Any = FORMAT_VERSION, meta: Any = None) -> bytes:
    """Pack a frame by hand, bypassing the encoder's checks."""
    data: bytes = msgpack.packb([version, meta, list(envelopes)], use_bin_type=True)
    return data


@pytest.fixture
def isolated_registry() -> Iterator[None]:
    """Forget the Message classes a test defines once it is over."""
    registry = protocols._base._REGISTRY
    saved = dict(registry)
    yield
    registry.clear()
    registry.update(saved)


# --- Errors -----------------------------------------------------------------------------------


def test_an_unknown_kind_raises_unknown_message_kind_naming_the_kind() -> None:
    with pytest.raises(UnknownMessageKind) as info:
        decode(frame(["no.such.kind", 1, None, {}]))
    assert info.value.kind == "no.such.kind"
    assert "no.such.kind" in str(info.value)
    assert isinstance(info.value, CodecError)


def test_an_unknown_kind_in_a_frame_becomes_a_bad_envelope_with_its_ids() -> None:
    _meta, [item] = decode_frame(frame(["no.such.kind", 7, 3, {}]))
    assert isinstance(item, BadEnvelope)
    assert isinstance(item.error, UnknownMessageKind)
    assert (item.kind, item.message_id, item.correlation_id) == ("no.such.kind", 7, 3)


def test_a_field_of_the_wrong_type_raises_message_invalid_naming_the_field() -> None:
    with pytest.raises(MessageInvalid) as info:
        decode(frame(["supervision.terminate_child", 1, None, {"child_id": [1, 2]}]))
    assert "child_id" in str(info.value)
    assert "supervision.terminate_child" in str(info.value)


def test_a_missing_field_raises_message_invalid_naming_the_field() -> None:
    with pytest.raises(MessageInvalid, match="child_id"):
        decode(frame(["supervision.terminate_child", 1, None, {}]))


def test_an_extra_field_raises_message_invalid_naming_the_field() -> None:
    body = {"child_id": "a", "surprise": 1}
    with pytest.raises(MessageInvalid, match="surprise"):
        decode(frame(["supervision.terminate_child", 1, None, body]))


def test_an_invalid_nested_field_is_named_by_its_path() -> None:
    body = {
        "children": [{"id": "a", "status": "dancing", "type": "worker", "restart": "permanent"}]
    }
    with pytest.raises(MessageInvalid) as info:
        decode(frame(["supervision.children", 1, None, body]))
    assert "children.0.status" in str(info.value)


def test_an_invalid_child_spec_in_start_child_raises_message_invalid() -> None:
    body = {"spec": {"type": "worker", "id": "bad id!", "start": "pkg.mod:Cls"}}
    with pytest.raises(MessageInvalid, match="id"):
        decode(frame(["supervision.start_child", 1, None, body]))


def test_a_body_whose_kind_field_disagrees_with_the_envelope_raises_message_invalid() -> None:
    body = {"kind": "understudy.error", "child_id": "a"}
    with pytest.raises(MessageInvalid, match="kind"):
        decode(frame(["supervision.terminate_child", 1, None, body]))


def test_message_invalid_is_raised_from_the_validation_error() -> None:
    with pytest.raises(MessageInvalid) as info:
        decode(frame(["supervision.terminate_child", 1, None, {}]))
    assert isinstance(info.value.__cause__, ValidationError)


@pytest.mark.parametrize("version", [0, 2, "1", None, [1]])
def test_a_frame_of_another_format_version_raises_decode_error(version: Any) -> None:
    with pytest.raises(DecodeError, match="version"):
        decode(frame(envelope_parts(Ok(), 1), version=version))


@pytest.mark.parametrize("data", ["text", None, 12, [1, None, []], {"a": 1}])
def test_input_that_is_not_bytes_raises_decode_error(data: Any) -> None:
    with pytest.raises(DecodeError, match="expected bytes"):
        decode(data)


def test_bytearray_and_memoryview_inputs_are_decoded() -> None:
    data = encode(Ok())
    assert decode(bytearray(data)) == Ok()
    assert decode(memoryview(data)) == Ok()


def test_bytes_that_are_not_msgpack_raise_decode_error_from_the_msgpack_error() -> None:
    with pytest.raises(DecodeError) as info:
        decode(b"\xc1")  # 0xc1 is never used by msgpack
    assert info.value.__cause__ is not None
    assert not isinstance(info.value.__cause__, CodecError)


def test_truncated_bytes_raise_decode_error_from_the_msgpack_error() -> None:
    data = encode(TerminateChild(child_id="worker"))
    with pytest.raises(DecodeError) as info:
        decode(data[:-3])
    assert info.value.__cause__ is not None


def test_trailing_bytes_after_a_frame_raise_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode(encode(Ok()) + b"\x00")


def test_empty_bytes_raise_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode(b"")


@pytest.mark.parametrize(
    "value",
    [
        [],
        [FORMAT_VERSION, None],
        [FORMAT_VERSION, None, [], None],
        {"version": FORMAT_VERSION},
        "frame",
        42,
    ],
)
def test_a_value_that_is_not_a_three_element_frame_raises_decode_error(value: Any) -> None:
    with pytest.raises(DecodeError, match="3-element"):
        decode(msgpack.packb(value))


def test_a_frame_whose_meta_is_not_a_map_raises_decode_error() -> None:
    with pytest.raises(DecodeError, match="meta"):
        decode(frame(envelope_parts(Ok(), 1), meta=[1]))


def test_a_frame_whose_envelopes_are_not_an_array_raises_decode_error() -> None:
    data = msgpack.packb([FORMAT_VERSION, None, {"kind": "understudy.ok"}])
    with pytest.raises(DecodeError, match="envelopes must be an array"):
        decode_frame(data)


@pytest.mark.parametrize("count", [0, 2])
def test_decode_of_a_frame_without_exactly_one_envelope_raises_decode_error(count: int) -> None:
    data = encode_frame([envelope_parts(Ok(), n) for n in range(count)])
    with pytest.raises(DecodeError, match=f"got {count}"):
        decode(data)
    with pytest.raises(DecodeError, match=f"got {count}"):
        decode_envelope(data)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (["understudy.ok", 1, None], "4-element"),
        ("understudy.ok", "4-element"),
        ([7, 1, None, {}], "kind must be a string"),
        (["understudy.ok", "1", None, {}], "ids must be integers"),
        (["understudy.ok", 1, "2", {}], "ids must be integers"),
        (["understudy.ok", 1, None, []], "body of 'understudy.ok' must be a map"),
    ],
)
def test_a_malformed_envelope_raises_decode_error(raw: Any, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode(frame(raw))


def test_a_malformed_envelope_in_a_frame_keeps_the_ids_it_can_read() -> None:
    _meta, items = decode_frame(
        frame(
            ["understudy.ok", "not-an-id", 5, {}],
            "garbage",
            envelope_parts(Ok(), 9),
        )
    )
    first, second, third = items
    assert isinstance(first, BadEnvelope)
    assert isinstance(first.error, DecodeError)
    assert (first.kind, first.message_id, first.correlation_id) == ("understudy.ok", None, 5)
    assert isinstance(second, BadEnvelope)
    assert (second.kind, second.message_id, second.correlation_id) == (None, None, None)
    assert third == Envelope(Ok(), 9, None)


def test_an_invalid_body_in_the_middle_of_a_frame_does_not_hide_the_others() -> None:
    data = encode_frame(
        [
            envelope_parts(TerminateChild(child_id="a"), 1),
            ["supervision.terminate_child", 2, 1, {"child_id": 3.5}],
            envelope_parts(Ok(), 3, 1),
        ],
        meta={"link": "x"},
    )
    meta, [first, second, third] = decode_frame(data)
    assert meta == {"link": "x"}
    assert first == Envelope(TerminateChild(child_id="a"), 1, None)
    assert isinstance(second, BadEnvelope)
    assert isinstance(second.error, MessageInvalid)
    assert (second.kind, second.message_id, second.correlation_id) == (
        "supervision.terminate_child",
        2,
        1,
    )
    assert third == Envelope(Ok(), 3, 1)


def test_message_too_large_reports_the_size_and_the_limit() -> None:
    message = ErrorReply(error="ActorCrashed", message="x" * 2000)
    size = len(encode(message))
    with pytest.raises(MessageTooLarge) as info:
        encode(message, max_size=1024)
    assert (info.value.size, info.value.limit) == (size, 1024)
    assert str(size) in str(info.value)
    assert "1024" in str(info.value)
    with pytest.raises(MessageTooLarge):
        decode(encode(message), max_size=1024)


def test_a_message_exactly_at_the_size_limit_is_accepted() -> None:
    message = ErrorReply(error="ActorCrashed", message="x" * 2000)
    data = encode(message, message_id=1)
    assert encode(message, message_id=1, max_size=len(data)) == data
    assert decode(data, max_size=len(data)) == message


# --- What the wire carries ------------------------------------------------------------------


def test_the_body_on_the_wire_has_no_kind_and_uses_json_types() -> None:
    message = _Register(path="root/a", address=ActorRef(host="127.0.0.1", port=4321), pid=12)
    version, meta, [[kind, message_id, correlation_id, body]] = msgpack.unpackb(
        encode(message, message_id=5, correlation_id=4)
    )
    assert (version, meta, kind, message_id, correlation_id) == (
        FORMAT_VERSION,
        None,
        "_supervision.register",
        5,
        4,
    )
    assert {
        "path": "root/a",
        "address": {"host": "127.0.0.1", "port": 4321, "name": None},
        "pid": 12,
        "roles": [],
        "host": None,
    } == body


@pytest.mark.parametrize(
    "address",
    [
        {"host": "127.0.0.1"},
        {"port": 80},
        {},
        {"host": "127.0.0.1", "port": 80, "name": "x"},
        {"host": "not-an-ip", "port": 80},
        {"host": "127.0.0.1", "port": 0},
        "gASVCAAAAAAAAACMBHBvc2l4lC4=",
    ],
)
def test_an_address_field_is_validated_data_never_pickle(address: object) -> None:
    data = msgpack.packb(
        [
            FORMAT_VERSION,
            None,
            [["_supervision.register", 1, None, {"path": "root/a", "address": address, "pid": 1}]],
        ]
    )

    with pytest.raises(MessageInvalid):
        decode(data)


def test_nested_specs_and_messages_round_trip() -> None:
    spec = SupervisorSpec(
        id="pool",
        strategy="simple_one_for_one",
        template=ChildSpec(id="job", start="pkg.mod:Job", restart="temporary", args={"n": [1]}),
    )
    for message in (
        StartChild(spec=spec),
        StartChild(args={"a": {"b": [1, 2.5, None, True]}}),
        Children(
            children=[ChildInfo(id="a", status="running", type="worker", restart="permanent")]
        ),
        GetEvents(barrier={"sup-1": 3}, wait_event="child_started"),
    ):
        assert decode(encode(message)) == message


def test_a_message_without_fields_decodes_from_an_empty_body() -> None:
    assert decode(frame(["understudy.ok", 1, None, {}])) == Ok()


# --- The Message base class ---------------------------------------------------------------


def test_every_registered_kind_maps_to_a_class_declaring_that_kind() -> None:
    kinds = registered_kinds()
    assert kinds
    for kind, cls in kinds.items():
        assert cls.model_fields["kind"].default == kind
        assert message_class(kind) is cls


def test_registered_kinds_returns_a_copy() -> None:
    kinds = registered_kinds()
    kinds["test.injected"] = Ok
    assert message_class("test.injected") is None


def test_message_class_returns_none_for_an_unknown_kind() -> None:
    assert message_class("no.such.kind") is None


@pytest.mark.usefixtures("isolated_registry")
def test_defining_a_message_class_registers_its_kind() -> None:
    class Hello(Message):
        kind: Literal["test.codec.hello"] = "test.codec.hello"
        name: str

    assert message_class("test.codec.hello") is Hello
    assert decode(encode(Hello(name="x"))) == Hello(name="x")


@pytest.mark.usefixtures("isolated_registry")
def test_a_user_kind_defined_again_is_taken_over_by_the_later_class_with_a_warning() -> None:
    from structlog.testing import capture_logs

    class First(Message):
        kind: Literal["test.codec.dup"] = "test.codec.dup"

    with capture_logs() as logs:

        class Second(Message):
            kind: Literal["test.codec.dup"] = "test.codec.dup"

    assert message_class("test.codec.dup") is Second
    assert First is not Second
    assert ["message_kind_redefined"] == [e["event"] for e in logs]
    assert "test.codec.dup" == logs[0]["kind"]


@pytest.mark.usefixtures("isolated_registry")
def test_a_message_subclass_taking_an_existing_protocol_kind_raises_type_error() -> None:
    with pytest.raises(TypeError, match=r"understudy\.ok"):

        class FakeOk(Message):
            kind: Literal["understudy.ok"] = "understudy.ok"

    assert message_class("understudy.ok") is Ok


@pytest.mark.usefixtures("isolated_registry")
def test_a_message_subclass_without_a_kind_default_is_not_registered() -> None:
    before = registered_kinds()

    class Intermediate(Message):
        note: str = ""

    class Undeclared(Message):
        kind: Literal["test.codec.undeclared"]

    assert registered_kinds() == before
    assert message_class("test.codec.undeclared") is None
    assert Intermediate not in before.values()
    assert Undeclared not in before.values()


@pytest.mark.usefixtures("isolated_registry")
def test_a_subclass_of_an_untagged_base_is_registered_under_its_own_kind() -> None:
    class Base(Message):
        note: str = ""

    class Leaf(Base):
        kind: Literal["test.codec.leaf"] = "test.codec.leaf"

    assert message_class("test.codec.leaf") is Leaf
    assert decode(encode(Leaf(note="n"))) == Leaf(note="n")


def test_messages_are_frozen() -> None:
    message = TerminateChild(child_id="a")
    with pytest.raises(ValidationError):
        message.child_id = "b"  # type: ignore[misc]
    assert message.child_id == "a"


def test_messages_reject_extra_fields() -> None:
    with pytest.raises(ValidationError, match="surprise"):
        TerminateChild(child_id="a", surprise=1)  # type: ignore[call-arg]


def test_messages_reject_another_kind() -> None:
    with pytest.raises(ValidationError, match="kind"):
        TerminateChild(kind="understudy.ok", child_id="a")  # type: ignore[arg-type]


def test_equal_messages_hash_equal() -> None:
    assert hash(TerminateChild(child_id="a")) == hash(TerminateChild(child_id="a"))
