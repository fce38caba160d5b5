"""The guardian's book of verified identities (actors.core.identities), without Thespian."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.core.identities import CHALLENGE_TTL, IdentityBook, LoginRefused, login_proof
from actors.core.keyring import create_key_file, principal_key_path, read_key_file
from protocols._lifecycle import ActorRef
from protocols.identity import SYSTEM_IDENTITY, Identity

CLIENT = ActorRef(host="127.0.0.1", port=40001)
OTHER = ActorRef(host="127.0.0.1", port=40002)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture
def book(tmp_path: Path, clock: _Clock) -> IdentityBook:
    for name in ("operator", "admin"):
        create_key_file(principal_key_path(tmp_path, name))
    return IdentityBook(
        state_dir=tmp_path,
        principals={"operator": ("operator",), "admin": ("admin",)},
        clock=clock,
    )


def _key(tmp_path: Path, name: str) -> bytes:
    return read_key_file(principal_key_path(tmp_path, name))[0]


def test_a_registered_actor_is_its_path_with_its_roles(book: IdentityBook) -> None:
    book.register_actor(OTHER, "root/orchestrator", ("admin",))

    assert Identity(name="root/orchestrator", kind="actor", roles=("admin",)) == book.identify(
        OTHER
    )
    assert book.identify(CLIENT) is None


def test_an_unregistered_actor_is_unknown_again(book: IdentityBook) -> None:
    book.register_actor(OTHER, "root/a")

    assert book.unregister_actor(OTHER)
    assert book.identify(OTHER) is None
    assert not book.unregister_actor(OTHER)


def test_the_owner_is_system(book: IdentityBook) -> None:
    book.set_owner(CLIENT)

    assert SYSTEM_IDENTITY == book.identify(CLIENT)


def test_a_client_with_the_principals_key_acts_as_that_principal(
    book: IdentityBook, tmp_path: Path
) -> None:
    nonce = book.challenge(CLIENT)
    identity = book.login(CLIENT, "admin", login_proof(_key(tmp_path, "admin"), "admin", nonce))

    assert Identity(name="admin", kind="principal", roles=("admin",)) == identity
    assert identity == book.identify(CLIENT)
    assert book.identify(OTHER) is None


def test_another_principals_key_is_refused(book: IdentityBook, tmp_path: Path) -> None:
    nonce = book.challenge(CLIENT)
    proof = login_proof(_key(tmp_path, "operator"), "admin", nonce)

    with pytest.raises(LoginRefused, match="does not match its key"):
        book.login(CLIENT, "admin", proof)
    assert book.identify(CLIENT) is None


def test_a_nonce_is_used_once_and_only_by_the_client_it_was_issued_to(
    book: IdentityBook, tmp_path: Path
) -> None:
    key = _key(tmp_path, "operator")
    nonce = book.challenge(CLIENT)
    proof = login_proof(key, "operator", nonce)

    with pytest.raises(LoginRefused, match="no current login challenge"):
        book.login(OTHER, "operator", proof)  # replayed from another address
    book.login(CLIENT, "operator", proof)
    with pytest.raises(LoginRefused, match="no current login challenge"):
        book.login(CLIENT, "operator", proof)  # replayed by the same client


def test_an_expired_challenge_is_refused(book: IdentityBook, tmp_path: Path, clock: _Clock) -> None:
    nonce = book.challenge(CLIENT)
    clock.now += CHALLENGE_TTL

    with pytest.raises(LoginRefused, match="no current login challenge"):
        book.login(CLIENT, "operator", login_proof(_key(tmp_path, "operator"), "operator", nonce))


def test_an_undeclared_principal_is_refused_by_name(book: IdentityBook, tmp_path: Path) -> None:
    create_key_file(principal_key_path(tmp_path, "mallory"))
    nonce = book.challenge(CLIENT)

    with pytest.raises(LoginRefused, match=r"unknown principal 'mallory'.*admin, operator"):
        book.login(CLIENT, "mallory", login_proof(_key(tmp_path, "mallory"), "mallory", nonce))


def test_a_key_file_others_can_read_is_refused(book: IdentityBook, tmp_path: Path) -> None:
    path = principal_key_path(tmp_path, "admin")
    path.chmod(0o644)
    nonce = book.challenge(CLIENT)

    with pytest.raises(LoginRefused, match="0644"):
        book.login(CLIENT, "admin", login_proof(_key_unchecked(path), "admin", nonce))


def _key_unchecked(path: Path) -> bytes:
    return bytes.fromhex(path.read_text().split()[0])


def test_every_key_of_a_rotated_principal_file_is_accepted(
    book: IdentityBook, tmp_path: Path
) -> None:
    path = principal_key_path(tmp_path, "operator")
    old = _key(tmp_path, "operator")
    new = bytes(range(32))
    path.write_text(new.hex() + "\n" + old.hex() + "\n")

    for key in (new, old):
        nonce = book.challenge(CLIENT)
        assert (
            "operator" == book.login(CLIENT, "operator", login_proof(key, "operator", nonce)).name
        )
