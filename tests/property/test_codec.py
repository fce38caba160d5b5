"""Properties of the msgpack codec: round trips, frames, and decoding hostile bytes."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import CodecError, Message, MessageTooLarge, UnknownMessageKind
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
from tests.strategies import (
    correlation_ids,
    json_objects,
    message_ids,
    message_kinds,
    messages,
    messages_of,
    msgpack_text_key_values,
    msgpack_values,
)

KINDS = message_kinds()

#: (message, message_id, correlation_id)
envelope_triples = st.tuples(messages(), message_ids, correlation_ids)


def _pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


@pytest.mark.parametrize("cls", list(KINDS.values()), ids=list(KINDS))
@settings(max_examples=25)
@given(data=st.data())
def test_every_registered_kind_survives_an_encode_decode_round_trip(
    cls: type[Message], data: st.DataObject
) -> None:
    message = data.draw(messages_of(cls))
    decoded = decode(encode(message))
    assert type(decoded) is cls
    assert decoded == message


@settings(max_examples=200)
@given(messages())
def test_any_message_survives_an_encode_decode_round_trip(message: Message) -> None:
    assert decode(encode(message)) == message


@given(messages(), message_ids, correlation_ids)
def test_decode_envelope_keeps_the_ids_given_to_encode(
    message: Message, message_id: int, correlation_id: int | None
) -> None:
    data = encode(message, message_id=message_id, correlation_id=correlation_id)
    assert decode_envelope(data) == Envelope(message, message_id, correlation_id)


@given(st.lists(messages(), min_size=2, max_size=10))
def test_encode_gives_each_message_a_different_id(batch: list[Message]) -> None:
    ids = [decode_envelope(encode(message)).message_id for message in batch]
    assert len(set(ids)) == len(ids)


@given(st.lists(envelope_triples, max_size=6), st.none() | json_objects)
def test_a_frame_round_trip_keeps_the_order_and_ids_of_its_envelopes(
    triples: list[tuple[Message, int, int | None]], meta: dict[str, Any] | None
) -> None:
    data = encode_frame([envelope_parts(*triple) for triple in triples], meta=meta)
    decoded_meta, envelopes = decode_frame(data)
    assert decoded_meta == meta
    assert envelopes == [Envelope(*triple) for triple in triples]


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_decoding_random_bytes_raises_only_codec_errors(data: bytes) -> None:
    try:
        decode(data)
    except CodecError:
        pass


@settings(max_examples=300)
@given(msgpack_values)
def test_decoding_any_msgpack_value_raises_only_codec_errors(value: Any) -> None:
    data = _pack(value)
    try:
        decode(data)
    except CodecError:
        pass
    try:
        decode_frame(data)
    except CodecError:
        pass


@st.composite
def hostile_envelopes(draw: st.DrawFn) -> Any:
    """Envelope-shaped values: a registered (or unknown) kind with a body of random values.

    Bodies use the kind's real field names, so validation runs deep into the models. Maps have
    text keys only, so the frame itself stays readable and every envelope must be reported.
    """
    values = msgpack_text_key_values
    if draw(st.integers(0, 9)) == 0:
        return draw(values)
    kind = draw(st.sampled_from([*KINDS, "no.such.kind"]))
    cls = KINDS.get(kind)
    names = [*cls.model_fields] if cls is not None else ["x"]
    body = draw(st.dictionaries(st.sampled_from(names) | st.text(max_size=4), values, max_size=4))
    message_id = draw(message_ids | values)
    correlation_id = draw(correlation_ids | values)
    return [kind, message_id, correlation_id, body]


@settings(max_examples=60)
@given(
    st.lists(hostile_envelopes(), max_size=3),
    st.none() | st.dictionaries(st.text(max_size=4), msgpack_text_key_values, max_size=2),
)
def test_hostile_envelopes_in_a_readable_frame_become_envelopes_or_bad_envelopes_in_place(
    raw_envelopes: list[Any], meta: dict[str, Any] | None
) -> None:
    data = _pack([FORMAT_VERSION, meta, raw_envelopes])
    decoded_meta, decoded = decode_frame(data)
    assert _pack(decoded_meta) == _pack(meta)  # compared packed: NaN is not equal to itself
    assert len(decoded) == len(raw_envelopes)
    for item in decoded:
        assert isinstance(item, Envelope | BadEnvelope)
        if isinstance(item, BadEnvelope):
            assert isinstance(item.error, CodecError)
    if len(raw_envelopes) == 1:
        try:
            decode(data)
        except CodecError:
            pass


@given(messages())
def test_a_message_over_max_size_raises_message_too_large_on_encode_and_decode(
    message: Message,
) -> None:
    data = encode(message)
    limit = len(data) - 1
    with pytest.raises(MessageTooLarge) as on_encode:
        encode(message, max_size=limit)
    assert (on_encode.value.size, on_encode.value.limit) == (len(data), limit)
    with pytest.raises(MessageTooLarge) as on_decode:
        decode(data, max_size=limit)
    assert (on_decode.value.size, on_decode.value.limit) == (len(data), limit)
    with pytest.raises(MessageTooLarge):
        decode_frame(data, max_size=limit)
    assert decode(data, max_size=len(data)) == message


@given(st.lists(envelope_triples, min_size=1, max_size=4))
def test_a_frame_over_max_size_raises_message_too_large(
    triples: list[tuple[Message, int, int | None]],
) -> None:
    envelopes = [envelope_parts(*triple) for triple in triples]
    size = len(encode_frame(envelopes))
    with pytest.raises(MessageTooLarge):
        encode_frame(envelopes, max_size=size - 1)
    assert len(encode_frame(envelopes, max_size=size)) == size


@given(
    st.lists(envelope_triples, max_size=3),
    st.lists(envelope_triples, max_size=3),
    message_ids,
    correlation_ids,
)
def test_an_unknown_kind_in_the_middle_of_a_frame_does_not_hide_the_others(
    before: list[tuple[Message, int, int | None]],
    after: list[tuple[Message, int, int | None]],
    bad_id: int,
    bad_correlation: int | None,
) -> None:
    bad = ["no.such.kind", bad_id, bad_correlation, {}]
    parts = [envelope_parts(*t) for t in before] + [bad] + [envelope_parts(*t) for t in after]
    _meta, decoded = decode_frame(encode_frame(parts))
    assert decoded[: len(before)] == [Envelope(*t) for t in before]
    assert decoded[len(before) + 1 :] == [Envelope(*t) for t in after]
    middle = decoded[len(before)]
    assert isinstance(middle, BadEnvelope)
    assert isinstance(middle.error, UnknownMessageKind)
    assert (middle.kind, middle.message_id, middle.correlation_id) == (
        "no.such.kind",
        bad_id,
        bad_correlation,
    )


@given(st.lists(envelope_triples, min_size=1, max_size=5), st.data())
def test_bad_envelopes_anywhere_in_a_frame_are_reported_in_place(
    triples: list[tuple[Message, int, int | None]], data: st.DataObject
) -> None:
    parts: list[Any] = [envelope_parts(*t) for t in triples]
    broken = data.draw(
        st.sets(st.integers(0, len(parts) - 1), min_size=1, max_size=len(parts)), label="broken"
    )
    for index in broken:
        kind, mid, corr, body = parts[index]
        parts[index] = [kind, mid, corr, {**body, "not_a_field": 1}]
    _meta, decoded = decode_frame(encode_frame(parts))
    assert len(decoded) == len(triples)
    for index, (item, triple) in enumerate(zip(decoded, triples, strict=True)):
        if index in broken:
            assert isinstance(item, BadEnvelope)
            assert (item.kind, item.message_id, item.correlation_id) == (
                triple[0].kind,
                triple[1],
                triple[2],
            )
            assert isinstance(item.error, CodecError)
            assert "not_a_field" in str(item.error)
        else:
            assert item == Envelope(*triple)
