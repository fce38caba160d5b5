"""JSON Schema of each protocol module's messages, one checked-in file per module.

For a protocol module (``protocols.scheduler`` ...), :func:`protocol_schema` builds a JSON
Schema (draft 2020-12) document whose ``$defs`` hold every public :class:`~protocols.Message`
class defined in that module, keyed by class name (plus the plain models they use), and whose
top-level ``oneOf`` accepts any one of them, discriminated by its ``kind`` wire tag.

A document described here is a message in its kind-tagged JSON form, ``message.model_dump(
mode="json")``: the codec's envelope body plus ``kind``, so ``kind`` is required. Messages whose
class name starts with ``_`` (an actor's private messages) are left out.

The checked-in copies live in ``protocols/schemas/<module>.schema.json`` and are regenerated
with::

    understudy schema protocols --write

Pure data: nothing here imports Thespian or ``actors``.
"""

from __future__ import annotations

import copy
import importlib
import json
from pathlib import Path
from typing import Any, Final

from pydantic.json_schema import models_json_schema

from protocols._base import Message, registered_kinds

__all__ = [
    "PROTOCOL_MODULES",
    "REGENERATE_COMMAND",
    "SCHEMA_DIR",
    "message_classes",
    "protocol_schema",
    "render",
    "schema_path",
]

#: The protocol modules that get a schema, in the order they are written.
PROTOCOL_MODULES: Final[tuple[str, ...]] = (
    "protocols.common",
    "protocols.supervision",
    "protocols.cluster",
    "protocols.faults",
    "protocols.access",
    "protocols.scheduler",
    "protocols.registry",
    "protocols.agent",
    "protocols.runs",
    "protocols.orchestrator",
    "protocols.ledger",
)

SCHEMA_DIR: Final[Path] = Path(__file__).resolve().parent / "schemas"
REGENERATE_COMMAND: Final[str] = "understudy schema protocols --write"

_JSON_SCHEMA_DIALECT: Final[str] = "https://json-schema.org/draft/2020-12/schema"
_REF_TEMPLATE: Final[str] = "#/$defs/{model}"


def _short(module_name: str) -> str:
    return module_name.rsplit(".", 1)[-1]


def schema_path(module_name: str) -> Path:
    """Return where the checked-in schema of ``module_name`` lives.

    Args:
        module_name: a protocol module, e.g. ``protocols.scheduler``.

    Returns:
        ``protocols/schemas/<last component>.schema.json``.
    """
    return SCHEMA_DIR / f"{_short(module_name)}.schema.json"


def message_classes(module_name: str) -> dict[str, type[Message]]:
    """Return the public Message classes defined in ``module_name``, by wire tag (sorted).

    The module is imported first, so that its classes are registered. Classes imported into
    the module from elsewhere (``__module__`` differs) and classes whose name starts with
    ``_`` are left out.

    Args:
        module_name: a protocol module, e.g. ``protocols.scheduler``.

    Returns:
        wire tag -> class, sorted by tag.
    """
    importlib.import_module(module_name)
    return {
        kind: cls
        for kind, cls in sorted(registered_kinds().items())
        if cls.__module__ == module_name and not cls.__name__.startswith("_")
    }


def protocol_schema(module_name: str) -> dict[str, Any]:
    """Return the JSON Schema of the public messages of one protocol module.

    Args:
        module_name: a protocol module, e.g. ``protocols.scheduler``.

    Returns:
        A JSON Schema (draft 2020-12) document titled ``Understudy <module> protocol``: one
        ``$defs`` entry per message class (keyed by class name, ``kind`` a required const) and
        a top-level ``oneOf`` over them with an OpenAPI-style ``discriminator`` on ``kind``.

    Raises:
        ValueError: the module defines no public message, or two of its definitions would
            share a name.
    """
    classes = message_classes(module_name)
    if not classes:
        msg = f"{module_name} defines no public Message class"
        raise ValueError(msg)
    refs, generated = models_json_schema(
        [(cls, "validation") for cls in classes.values()], ref_template=_REF_TEMPLATE
    )
    defs: dict[str, Any] = copy.deepcopy(generated.get("$defs", {}))
    mapping: dict[str, str] = {}
    for kind, cls in classes.items():
        ref = f"#/$defs/{cls.__name__}"
        if refs[(cls, "validation")] != {"$ref": ref}:
            msg = (
                f"{module_name}: the schema of {cls.__name__} is not under its class name "
                f"(got {refs[(cls, 'validation')]!r}); two models share that name"
            )
            raise ValueError(msg)
        definition = defs[cls.__name__]
        kind_schema = definition["properties"]["kind"]
        if kind_schema.get("const") != kind:
            msg = f"{module_name}: {cls.__name__}.kind is not the const {kind!r}"
            raise ValueError(msg)
        required = [name for name in definition.get("required", []) if name != "kind"]
        definition["required"] = ["kind", *required]
        mapping[kind] = ref
    return {
        "$schema": _JSON_SCHEMA_DIALECT,
        "title": f"Understudy {_short(module_name)} protocol",
        "description": (
            f"The public messages of {module_name}, each in its kind-tagged JSON form "
            "(message.model_dump(mode='json')); `kind` selects the definition. Generated "
            f"from {module_name}; regenerate with `{REGENERATE_COMMAND}`."
        ),
        "$defs": defs,
        "oneOf": [{"$ref": ref} for ref in mapping.values()],
        "discriminator": {"propertyName": "kind", "mapping": mapping},
    }


def render(module_name: str) -> str:
    """Return :func:`protocol_schema` as the checked-in file's text.

    Args:
        module_name: a protocol module, e.g. ``protocols.scheduler``.

    Returns:
        Pretty JSON with sorted keys and a trailing newline.
    """
    return json.dumps(protocol_schema(module_name), indent=2, sort_keys=True) + "\n"
