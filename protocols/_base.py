"""The Message base class and the registry of wire tags.

Every message Understudy moves is a frozen pydantic model with a stable ``kind`` tag. The tag
is declared as ``kind: Literal["area.name"] = "area.name"`` and is registered when the class is
defined; the codec looks classes up by it. A tag of Understudy's own protocols cannot be taken
by another class (TypeError); a user tag defined again by another class is taken over by it,
with a ``message_kind_redefined`` warning. Tags are never derived from class names, so a class
can be renamed without breaking the wire.
"""

from __future__ import annotations

from typing import Any, ClassVar

import structlog
from pydantic import BaseModel, ConfigDict

__all__ = [
    "Message",
    "message_class",
    "registered_kinds",
]

log = structlog.get_logger("understudy.protocols")

_REGISTRY: dict[str, type[Message]] = {}


class Message(BaseModel):
    """Base class of every typed message; subclasses declare a ``kind`` Literal with a default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str

    _abstract: ClassVar[bool] = True

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        field = cls.model_fields.get("kind")
        tag = field.default if field is not None else None
        if not isinstance(tag, str) or not tag:
            return  # an intermediate base class without its own tag
        existing = _REGISTRY.get(tag)
        if existing is not None and _qualname(existing) != _qualname(cls):
            if existing.__module__.startswith("protocols."):
                msg = (
                    f"message kind {tag!r} belongs to Understudy's protocol "
                    f"({_qualname(existing)}); {_qualname(cls)} must use a kind of its own"
                )
                raise TypeError(msg)
            # Two user modules may each define the same tag (test suites often do): the later
            # definition serves this process from now on, and that is said, not hidden.
            log.warning(
                "message_kind_redefined", kind=tag, previous=_qualname(existing), now=_qualname(cls)
            )
        _REGISTRY[tag] = cls


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def message_class(kind: str) -> type[Message] | None:
    """Return the class registered for ``kind``, or None when no class has that tag."""
    return _REGISTRY.get(kind)


def registered_kinds() -> dict[str, type[Message]]:
    """Return a copy of the registry: wire tag -> message class."""
    return dict(_REGISTRY)
