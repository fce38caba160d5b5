"""Loading of ``start:`` and ``decider:`` strings (``module:Name``) from a topology.

May import: the standard library only (callers pass the base class they expect).
"""

from __future__ import annotations

import importlib
from typing import Any, TypeVar

__all__ = ["load_class", "load_decider"]

T = TypeVar("T")


def load_class(start: str, base: type[T]) -> type[T]:
    """Import ``module:Class`` and check that it is a subclass of ``base`` (cached per process).

    Raises:
        ImportError, AttributeError, TypeError: with a message naming ``start``.
    """
    cls = _classes.get((start, base))
    if cls is None:
        module_name, _, class_name = start.partition(":")
        module = importlib.import_module(module_name)
        cls = getattr(module, class_name)
        if not (isinstance(cls, type) and issubclass(cls, base)):
            msg = f"{start} is not a subclass of {base.__qualname__}"
            raise TypeError(msg)
        _classes[start, base] = cls
    return cls


# Found once per process: every start and restart of a child loads its class.
_classes: dict[tuple[str, type], Any] = {}


_deciders: dict[str, Any] = {}


def load_decider(ref: str) -> Any:
    """Import a decider function ``module:function`` (cached per process).

    Raises:
        ImportError, AttributeError, TypeError: with a message naming ``ref``.
    """
    decider = _deciders.get(ref)
    if decider is None:
        module_name, _, name = ref.partition(":")
        decider = getattr(importlib.import_module(module_name), name)
        if not callable(decider):
            msg = f"{ref} is not callable"
            raise TypeError(msg)
        _deciders[ref] = decider
    return decider
