"""Every message of the access protocol crosses the codec unchanged."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import access, codec
from protocols._base import Message
from tests.strategies import messages_of

KINDS = {
    cls.model_fields["kind"].default: cls
    for cls in vars(access).values()
    if isinstance(cls, type) and issubclass(cls, Message) and cls is not Message
}


def test_the_protocol_defines_its_fifteen_kinds_under_access() -> None:
    assert 15 == len(KINDS)
    assert all(kind.startswith("access.") for kind in KINDS)
    assert "access.append_audit" in KINDS


@pytest.mark.parametrize("cls", list(KINDS.values()), ids=list(KINDS))
@settings(max_examples=25)
@given(data=st.data())
def test_every_access_kind_survives_an_encode_decode_round_trip(
    cls: type[Message], data: st.DataObject
) -> None:
    message = data.draw(messages_of(cls))

    decoded = codec.decode(codec.encode(message))

    assert type(decoded) is cls
    assert decoded == message
