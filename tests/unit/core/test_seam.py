"""The frame header is one typed structure, declared once in the seam."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from actors.core.seam import NO_META, FrameMeta, decode_reply
from protocols import codec
from protocols.common import Ok

metas = st.builds(
    FrameMeta,
    link=st.none() | st.integers(min_value=1, max_value=2**40),
    acks=st.none()
    | st.lists(
        st.lists(st.integers(min_value=0, max_value=2**40), max_size=1).map(
            lambda refused: [1, refused]
        ),
        max_size=3,
    ),
    events=st.none() | st.tuples(st.text(min_size=1, max_size=8), st.integers(0, 10**6)),
    ask=st.booleans(),
)


@given(metas)
def test_a_header_survives_the_wire(meta: FrameMeta) -> None:
    data = codec.encode_frame([], meta=meta.to_wire())
    wire, _ = codec.decode_frame(data)

    assert meta == FrameMeta.from_wire(wire)


def test_an_empty_header_is_sent_as_no_map() -> None:
    assert None is NO_META.to_wire()
    assert NO_META == FrameMeta.from_wire(None)


def test_decode_reply_finds_the_answer_to_its_request_only() -> None:
    frame = codec.encode_frame(
        [codec.envelope_parts(Ok(), 7, 41)], meta=FrameMeta(events=("inc", 3)).to_wire()
    )

    found = decode_reply(frame, 41, max_size=codec.DEFAULT_MAX_SIZE)
    other = decode_reply(frame, 42, max_size=codec.DEFAULT_MAX_SIZE)
    garbage = decode_reply(b"\xc1not msgpack", 41, max_size=codec.DEFAULT_MAX_SIZE)

    assert found is not None
    assert (Ok(), ("inc", 3)) == (found[0].message, found[1].events)
    assert None is other
    assert None is garbage
