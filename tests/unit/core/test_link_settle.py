"""What a receiver counts on a gone sender's behalf (``ReceiveLink.gone`` and ``settle``)."""

from __future__ import annotations

from actors.core.link import ReceiveLink


def _link_that_got_frame_1_of_2() -> ReceiveLink[str]:
    """Frame 1 (a, b) arrived; frame 2 (c, d) was sent after it and lost with the sender's
    process; frame 1 announced 10 messages queued, which the sender dead-lettered itself."""
    link: ReceiveLink[str] = ReceiveLink()
    link.accept(1, 1, 1, ["a", "b"], sent=2, admitted=10)
    return link


def test_an_orderly_exit_whose_bye_was_lost_is_settled_from_its_sent_counts() -> None:
    link = _link_that_got_frame_1_of_2()

    link.gone(4, orderly=True)
    settlement = link.settle()

    assert (2, 0) == (settlement.lost_in_flight, settlement.lost_queued)


def test_a_count_announced_after_the_final_count_does_not_raise_it() -> None:
    link = _link_that_got_frame_1_of_2()
    link.bye(4)

    link.announce(4, 12)
    link.gone(4, orderly=False)  # the guardian's notice after the bye: the same count
    settlement = link.settle()

    assert 2 == settlement.lost_in_flight + settlement.lost_queued


def test_a_killed_sender_owes_what_it_had_queued_too() -> None:
    link = _link_that_got_frame_1_of_2()

    link.gone(10, orderly=False)
    settlement = link.settle()

    assert (0, 8) == (settlement.lost_in_flight, settlement.lost_queued)


def test_a_gone_sender_is_complete_once_everything_it_owed_arrived() -> None:
    link = _link_that_got_frame_1_of_2()
    link.gone(4, orderly=True)
    before = link.complete

    link.accept(2, 1, 3, ["c", "d"], sent=4, admitted=10)

    assert not before
    assert link.complete
    assert 0 == link.settle().lost_in_flight
