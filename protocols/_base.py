"""The Message base class and the registry of wire tags.

Every message Understudy moves is a frozen pydantic model with a stable ``kind`` tag. The tag
is declared as ``kind: Literal["area.name"] = "area.name"`` and is registered when the class is
defined; the codec looks classes up by it. Tags are never derived from class names, so a class
can be renamed without breaking the wire.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

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
            msg = (
                f"message kind {tag!r} is already registered by {_qualname(existing)}, "
                f"cannot register it again for {_qualname(cls)}"
            )
            raise TypeError(msg)
        _REGISTRY[tag] = cls


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def message_class(kind: str) -> type[Message] | None:
    """Return the class registered for ``kind``, or None when no class has that tag."""
    return _REGISTRY.get(kind)


def registered_kinds() -> dict[str, type[Message]]:
    """Return a copy of the registry: wire tag -> message class."""
    return dict(_REGISTRY)
