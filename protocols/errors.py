"""The root of Understudy's exception tree and the codec's errors.

The whole tree is re-exported from ``actors``::

    UnderstudyError                 base; never raised itself
    + TopologyError                 a topology is invalid; raised before any actor starts
      + ExperimentError             an experiment file is invalid; nothing was started
    + CodecError                    a message could not cross the seam
      + DecodeError                 the bytes are not a valid envelope
      + UnknownMessageKind          the envelope's kind is not registered
      + MessageInvalid              the body does not validate against the kind's model
      + MessageTooLarge             the encoded message exceeds the size limit
    (the runtime's errors live in ``actors.errors``)
"""

from __future__ import annotations

__all__ = [
    "CodecError",
    "DecodeError",
    "ExperimentError",
    "MessageInvalid",
    "MessageTooLarge",
    "TopologyError",
    "UnderstudyError",
    "UnknownMessageKind",
]


class UnderstudyError(Exception):
    """Base class of every error Understudy raises."""


class TopologyError(UnderstudyError):
    """A topology (YAML file or Python model) is invalid.

    Attributes:
        file: the file the topology came from, or None for a Python model.
        line: the 1-based line of the offending node, when known.
        field: the dotted path of the offending field, e.g. ``root.children[1].strategy``.
    """

    def __init__(
        self, message: str, *, file: str | None = None, line: int | None = None, field: str = ""
    ) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.detail = message
        where = file or "<topology>"
        if line is not None:
            where = f"{where}:{line}"
        prefix = f"{where}: {field}: " if field else f"{where}: "
        super().__init__(prefix + message)


class ExperimentError(TopologyError):
    """An experiment file is invalid (or its topology is): ``file``, ``line`` and ``field``
    say where, as for a topology."""


class CodecError(UnderstudyError):
    """A message could not be encoded or decoded."""


class DecodeError(CodecError):
    """The bytes are not a valid Understudy envelope."""


class UnknownMessageKind(CodecError):
    """The envelope names a kind that no Message class registered."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__(f"unknown message kind {kind!r}")


class MessageInvalid(CodecError):
    """The envelope's body does not validate against its kind's model."""


class MessageTooLarge(CodecError):
    """An encoded message is larger than the configured limit."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"message of {size} bytes exceeds the limit of {limit} bytes")
