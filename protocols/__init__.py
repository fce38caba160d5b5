"""Understudy's protocols: typed messages, the codec, and the topology schema.

Pure data: nothing here imports Thespian or ``actors``.
"""

from protocols._base import Message, message_class, registered_kinds
from protocols.errors import (
    CodecError,
    DecodeError,
    MessageInvalid,
    MessageTooLarge,
    TopologyError,
    UnderstudyError,
    UnknownMessageKind,
)

__all__ = [
    "CodecError",
    "DecodeError",
    "Message",
    "MessageInvalid",
    "MessageTooLarge",
    "TopologyError",
    "UnderstudyError",
    "UnknownMessageKind",
    "message_class",
    "registered_kinds",
]
