"""Who is at an address: the guardian's book of verified identities (pure; no Thespian).

Three kinds of sender (``protocols.identity``):

* an **actor** of the tree: its supervisor registered the address with the guardian once the
  child had started, with the roles its child spec declares; the identity is its path;
* a **principal**: an external client (the CLI, a program attached with ``Runtime.attach``)
  that answered a challenge with the principal's key (``<state_dir>/principals/<name>.key``,
  mode 0600, any key of the file): ``proof = HMAC-SHA256(key, "understudy-login" | name |
  nonce)``, the nonce issued by the guardian to that same address and usable once;
* **system**: the owner program, the address that booted the tree.

Frames themselves are authenticated with the deployment secret (``actors.core.transport_guard``),
so only holders of the secret reach the guardian at all; principals add least privilege on top.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Final

from actors.core.keyring import SecretError, principal_key_path, read_key_file, tag
from protocols._lifecycle import ActorRef
from protocols.identity import SYSTEM_IDENTITY, Identity

__all__ = [
    "CHALLENGE_TTL",
    "MAX_PRINCIPAL_CLIENTS",
    "IdentityBook",
    "LoginRefused",
    "login_proof",
]

#: Seconds a login challenge stays valid.
CHALLENGE_TTL: Final = 30.0
#: Logged-in client addresses remembered (the oldest is forgotten first).
MAX_PRINCIPAL_CLIENTS: Final = 256


class LoginRefused(Exception):
    """A login failed: unknown principal, no valid key file, no challenge, or a wrong proof."""


def login_proof(key: bytes, principal: str, nonce: str) -> str:
    """Return the hex proof that the holder of ``key`` is ``principal``, for ``nonce``."""
    return tag(key, b"understudy-login\0" + principal.encode() + b"\0" + nonce.encode()).hex()


class IdentityBook:
    """The verified identities of the addresses the guardian knows."""

    def __init__(
        self,
        *,
        state_dir: str | Path,
        principals: dict[str, tuple[str, ...]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._state_dir = Path(state_dir)
        self._principals = principals
        self._clock = clock
        self._actors: dict[ActorRef, Identity] = {}
        self._clients: OrderedDict[ActorRef, Identity] = OrderedDict()
        self._challenges: dict[ActorRef, tuple[str, float]] = {}

    def register_actor(self, ref: ActorRef, path: str, roles: tuple[str, ...] = ()) -> None:
        """``path`` now lives at ``ref``."""
        self._actors[ref] = Identity(name=path, kind="actor", roles=roles)

    def unregister_actor(self, ref: ActorRef) -> bool:
        """The actor at ``ref`` is gone; return True if it was known."""
        return self._actors.pop(ref, None) is not None

    def set_owner(self, ref: ActorRef) -> None:
        """``ref`` booted the tree: it acts as ``system``."""
        self._remember(ref, SYSTEM_IDENTITY)

    def identify(self, ref: ActorRef) -> Identity | None:
        """Return who is at ``ref`` (None: an unknown sender)."""
        return self._actors.get(ref) or self._clients.get(ref)

    def challenge(self, ref: ActorRef) -> str:
        """Issue a fresh one-use nonce to the client at ``ref``."""
        now = self._clock()
        self._challenges = {
            r: (n, at) for r, (n, at) in self._challenges.items() if now - at < CHALLENGE_TTL
        }
        if len(self._challenges) >= MAX_PRINCIPAL_CLIENTS:
            self._challenges.pop(next(iter(self._challenges)))
        nonce = secrets.token_hex(16)
        self._challenges[ref] = (nonce, now)
        return nonce

    def login(self, ref: ActorRef, principal: str, proof: str) -> Identity:
        """Check ``proof`` for the nonce issued to ``ref``; the address then acts as ``principal``.

        Raises:
            LoginRefused: saying why (the nonce is used up either way).
        """
        issued = self._challenges.pop(ref, None)
        if issued is None or self._clock() - issued[1] >= CHALLENGE_TTL:
            msg = "no current login challenge for this client: ask for one first"
            raise LoginRefused(msg)
        roles = self._principals.get(principal)
        if roles is None:
            known = ", ".join(sorted(self._principals)) or "none"
            msg = f"unknown principal {principal!r} (declared in system.principals: {known})"
            raise LoginRefused(msg)
        path = principal_key_path(self._state_dir, principal)
        try:
            keys = read_key_file(path)
        except SecretError as exc:
            raise LoginRefused(str(exc)) from None
        if not any(hmac.compare_digest(login_proof(k, principal, issued[0]), proof) for k in keys):
            msg = f"the proof for principal {principal!r} does not match its key ({path})"
            raise LoginRefused(msg)
        identity = Identity(name=principal, kind="principal", roles=roles)
        self._remember(ref, identity)
        return identity

    def _remember(self, ref: ActorRef, identity: Identity) -> None:
        self._clients[ref] = identity
        self._clients.move_to_end(ref)
        while len(self._clients) > MAX_PRINCIPAL_CLIENTS:
            self._clients.popitem(last=False)
