"""What a sender still waits to hear about (Worker.unacknowledged reads it)."""

from __future__ import annotations

from actors.core.link import SendLink


def test_a_send_link_counts_what_its_receiver_has_not_acknowledged() -> None:
    link: SendLink[str] = SendLink(window=1, batch_max=2)
    for item in "abc":
        link.admit(item)
    [frame] = link.next_frames(0.0)

    before = link.unacknowledged
    link.acknowledge(frame.seq, [])

    assert 3 == before
    assert 1 == link.unacknowledged
