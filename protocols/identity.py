"""Who sent a message, as the seam verified it: an actor of the tree, a principal, or the owner.

Vocabulary
    actor       an actor of the tree; its name is its path (``root/agents/agent-3``) and its roles
                are those its child spec declares (``roles:`` in the topology)
    principal   an external client (the CLI, a program attached with ``Runtime.attach``) that
                proved it holds the key of a principal declared in ``system.principals``
    system      the owner program that started the tree (``Runtime.start``): a superuser

An identity is never a field the sender fills: the guardian answers it from its registry of
addresses (the addresses the supervisors registered, and the clients that logged in).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["SYSTEM_IDENTITY", "Identity", "IdentityKind"]

IdentityKind = Literal["actor", "principal", "system"]


class Identity(BaseModel):
    """A verified sender: its name, what kind of sender it is, and the roles it holds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    kind: IdentityKind
    roles: tuple[str, ...] = ()


#: The owner program of the tree.
SYSTEM_IDENTITY = Identity(name="system", kind="system", roles=("superuser",))
