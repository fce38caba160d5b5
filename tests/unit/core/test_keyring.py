"""The deployment secret's files: modes, format, rotation, tags."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.core.keyring import (
    KEY_BYTES,
    SECRET_FILE_ENV,
    Keyring,
    SecretError,
    create_key_file,
    key_id,
    read_key_file,
    retire_old_keys,
    rotate_key_file,
    secret_path,
    tag,
)
from actors.core.runtime import deployment_keyring
from protocols.errors import TopologyError
from protocols.topology import ClusterConfig, SystemConfig


def test_created_file_is_private_and_holds_one_key(tmp_path: Path) -> None:
    path = tmp_path / "state" / "secret"
    assert create_key_file(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    keys = read_key_file(path)
    assert len(keys) == 1
    assert len(keys[0]) == KEY_BYTES
    assert not create_key_file(path)
    assert read_key_file(path) == keys


def test_open_mode_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    create_key_file(path)
    path.chmod(0o644)
    with pytest.raises(SecretError, match=r"mode 0644.*chmod 600"):
        read_key_file(path)


def test_bad_lines_are_named(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("# comment\n\nzz-not-hex\n")
    path.chmod(0o600)
    with pytest.raises(SecretError, match=r"secret:3: a key must be hex"):
        read_key_file(path)
    path.write_text("abcd\n")
    with pytest.raises(SecretError, match="at least 32 bytes"):
        read_key_file(path)
    path.write_text("# nothing\n")
    with pytest.raises(SecretError, match="holds no key"):
        read_key_file(path)


def test_missing_file_and_symlink_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="no such key file"):
        read_key_file(tmp_path / "absent")
    real = tmp_path / "real"
    create_key_file(real)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(SecretError, match="cannot open"):
        read_key_file(link)


def test_secret_path_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_FILE_ENV, raising=False)
    assert secret_path(None, tmp_path) == tmp_path / "secret"
    monkeypatch.setenv(SECRET_FILE_ENV, str(tmp_path / "env"))
    assert secret_path(None, tmp_path) == tmp_path / "env"
    assert secret_path(str(tmp_path / "conf"), tmp_path) == tmp_path / "conf"


def test_rotation_accepts_old_and_new_then_only_new(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    old, new = os.urandom(32), os.urandom(32)
    path.write_text(old.hex() + "\n")
    path.chmod(0o600)
    ring = Keyring(path)
    old_tag = ring.tag(b"frame")
    path.write_text(new.hex() + "\n" + old.hex() + "\n")
    assert ring.refresh(force=True)
    assert ring.current == new
    assert ring.matches(b"frame", old_tag)
    path.write_text(new.hex() + "\n")
    assert ring.refresh(force=True)
    assert not ring.matches(b"frame", old_tag)
    assert ring.matches(b"frame", ring.tag(b"frame"))


def test_a_bad_edit_keeps_the_previous_keys(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    create_key_file(path)
    ring = Keyring(path)
    before = ring.keys
    path.write_text("garbage\n")
    with pytest.raises(SecretError):
        ring.refresh(force=True)
    assert ring.keys == before


@given(st.binary(min_size=32, max_size=64), st.binary(max_size=256), st.binary(max_size=256))
def test_tags_differ_for_different_data(key: bytes, one: bytes, other: bytes) -> None:
    assert (tag(key, one) == tag(key, other)) == (one == other)
    assert len(key_id(key)) == 8


# --- The deployment secret at start (actors.core.runtime.deployment_keyring) -------------------


def test_listening_beyond_loopback_without_a_secret_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_FILE_ENV, raising=False)
    config = SystemConfig(listen="10.1.2.3", state_dir=str(tmp_path))

    with pytest.raises(TopologyError, match=r"system\.cluster\.secret_file") as caught:
        deployment_keyring(config, create=True)
    assert "system.listen" == caught.value.field
    assert not (tmp_path / "secret").exists()


def test_listening_beyond_loopback_with_a_private_secret_is_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_FILE_ENV, raising=False)
    secret = tmp_path / "cluster.key"
    create_key_file(secret)
    config = SystemConfig(
        listen="10.1.2.3",
        state_dir=str(tmp_path),
        cluster=ClusterConfig(secret_file=str(secret)),
    )

    assert read_key_file(secret) == deployment_keyring(config, create=True).keys


def test_a_configured_secret_others_can_read_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_FILE_ENV, raising=False)
    secret = tmp_path / "cluster.key"
    create_key_file(secret)
    secret.chmod(0o640)
    config = SystemConfig(state_dir=str(tmp_path), cluster=ClusterConfig(secret_file=str(secret)))

    with pytest.raises(SecretError, match="0640"):
        deployment_keyring(config, create=True)


def test_on_loopback_the_state_directory_secret_is_created_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_FILE_ENV, raising=False)

    keyring = deployment_keyring(SystemConfig(state_dir=str(tmp_path)), create=True)

    assert tmp_path / "secret" == keyring.path
    assert 0o600 == stat.S_IMODE(keyring.path.stat().st_mode)


def test_rotate_puts_a_new_key_first_and_retire_keeps_only_it(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    create_key_file(path)
    [old] = read_key_file(path)

    rotated = rotate_key_file(path)
    retired = retire_old_keys(path)

    assert [old] == rotated[1:]
    assert old != rotated[0]
    assert [old] == retired
    assert [rotated[0]] == read_key_file(path)
    assert 0o600 == stat.S_IMODE(path.stat().st_mode)
    assert ["secret"] == [p.name for p in tmp_path.iterdir()]  # no temporary file left
