"""A transport that loses frames: test-only, installed inside an actor process.

``lose_every(n)`` patches Thespian's TCP transport of the calling process so that every
``n``-th data-path frame (a frame with a link sequence number, or an acknowledgement-only
frame) is reported sent to Thespian and never written to any socket: the silent loss the link
protocol must survive. Lifecycle messages are left alone (the tree must still run).
"""

from __future__ import annotations

import itertools
from typing import Any

from thespian.system.transport import SendStatus, TCPTransport

from protocols import codec

_state: dict[str, Any] = {}


def _data_path(message: object) -> bool:
    if not isinstance(message, bytes):
        return False
    try:
        meta, envelopes = codec.decode_frame(message, max_size=64 * 1024 * 1024)
    except Exception:  # noqa: BLE001 - not an Understudy frame: not ours to lose
        return False
    return bool(meta) and ("l" in meta or ("a" in meta and not envelopes))


def lose_every(n: int) -> None:
    """Lose every ``n``-th data-path frame this process sends (once per process)."""
    if "original" in _state:
        return
    original = TCPTransport.TCPTransport._scheduleTransmitActual
    counter = itertools.count(1)
    _state.update(original=original, lost=0)

    def lossy(self: Any, intent: Any, has_exclusive_flag: bool = False) -> Any:
        if _data_path(intent.message) and next(counter) % n == 0:
            _state["lost"] += 1
            intent.tx_done(SendStatus.Sent)
            return None
        return original(self, intent, has_exclusive_flag=has_exclusive_flag)

    TCPTransport.TCPTransport._scheduleTransmitActual = lossy


def lost() -> int:
    """Frames lost so far in this process."""
    return int(_state.get("lost", 0))
