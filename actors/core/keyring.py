"""The deployment secret and the principals' keys: files, modes, tags.

The deployment secret is a file of keys, one per line (hex, at least 32 bytes each; ``#``
starts a comment). The first key is the *current* one: it tags what this process sends. Every
key in the file is accepted when checking a tag, so a secret is rotated without downtime by
putting the new key first and keeping the old one below it until every process has picked the
change up (processes re-read the file when it changes), then removing the old one.

Where the secret comes from, first match wins:

1. ``system.cluster.secret_file`` in the topology;
2. the ``UNDERSTUDY_SECRET_FILE`` environment variable;
3. ``<state_dir>/secret``, which ``understudy up`` creates (random, mode 0600) when missing.

A key file must be a regular file readable by its owner only (mode 0600 or 0400): anything
else is refused with an error that names the file and its mode.

Principals (external clients: the CLI, programs using the Runtime) each have a key file
``<state_dir>/principals/<name>.key`` in the same format.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
import threading
import time
from pathlib import Path
from typing import Final

from protocols.errors import UnderstudyError

__all__ = [
    "KEY_BYTES",
    "PRINCIPALS_DIR",
    "SECRET_FILE_ENV",
    "SECRET_FILE_NAME",
    "TAG_BYTES",
    "Keyring",
    "SecretError",
    "create_key_file",
    "key_id",
    "principal_key_path",
    "read_key_file",
    "retire_old_keys",
    "rotate_key_file",
    "secret_path",
    "tag",
    "write_key_file",
]

SECRET_FILE_ENV: Final = "UNDERSTUDY_SECRET_FILE"  # noqa: S105 - a variable name
SECRET_FILE_NAME: Final = "secret"  # noqa: S105 - a file name
PRINCIPALS_DIR: Final = "principals"
KEY_BYTES: Final = 32
TAG_BYTES: Final = 32
_RELOAD_INTERVAL: Final = 1.0


class SecretError(UnderstudyError):
    """A key file is missing, unreadable, too open, or holds no valid key."""


def tag(key: bytes, data: bytes) -> bytes:
    """Return the HMAC-SHA256 tag of ``data`` under ``key`` (32 bytes)."""
    return hmac.digest(key, data, "sha256")


def key_id(key: bytes) -> str:
    """A short public name for ``key`` (8 hex digits of a hash; reveals nothing of the key)."""
    return tag(key, b"understudy key id").hex()[:8]


def secret_path(configured: str | None, state_dir: str | os.PathLike[str]) -> Path:
    """Return the deployment secret's path: the topology's, else the environment's, else the
    state directory's."""
    if configured:
        return Path(configured).expanduser()
    from_env = os.environ.get(SECRET_FILE_ENV)
    if from_env:
        return Path(from_env).expanduser()
    return Path(state_dir) / SECRET_FILE_NAME


def principal_key_path(state_dir: str | os.PathLike[str], name: str) -> Path:
    """Return the key file of principal ``name``."""
    return Path(state_dir) / PRINCIPALS_DIR / f"{name}.key"


def _check_mode(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        msg = f"{path}: a key file must be a regular file"
        raise SecretError(msg)
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        msg = (
            f"{path}: mode {mode:04o} lets other users read the key; "
            f"it must be 0600 (chmod 600 {path})"
        )
        raise SecretError(msg)


def read_key_file(path: str | os.PathLike[str]) -> list[bytes]:
    """Return the keys of ``path``, current first.

    Raises:
        SecretError: the file is missing, not 0600, or holds no valid key (says which line).
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        msg = f"{path}: no such key file"
        raise SecretError(msg) from None
    except OSError as exc:
        msg = f"{path}: cannot open the key file: {exc.strerror}"
        raise SecretError(msg) from None
    with os.fdopen(fd, "rb") as handle:
        _check_mode(path, os.fstat(handle.fileno()))
        text = handle.read(1 << 16).decode("ascii", errors="replace")
    keys: list[bytes] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            key = bytes.fromhex(line)
        except ValueError:
            msg = f"{path}:{number}: a key must be hex digits"
            raise SecretError(msg) from None
        if len(key) < KEY_BYTES:
            msg = f"{path}:{number}: a key must be at least {KEY_BYTES} bytes ({len(key)} given)"
            raise SecretError(msg)
        keys.append(key)
    if not keys:
        msg = f"{path}: the key file holds no key"
        raise SecretError(msg)
    return keys


def create_key_file(path: str | os.PathLike[str]) -> bool:
    """Create ``path`` (mode 0600) with one random key unless it exists; return True if made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(KEY_BYTES) + "\n")
    return True


def write_key_file(path: str | os.PathLike[str], keys: list[bytes]) -> None:
    """Replace ``path`` with ``keys`` (current first) atomically, mode 0600."""
    path = Path(path)
    fresh = path.with_name(f".{path.name}.{secrets.token_hex(4)}.new")
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("".join(key.hex() + "\n" for key in keys))
    fresh.replace(path)


def rotate_key_file(path: str | os.PathLike[str]) -> list[bytes]:
    """Put a new random key first in ``path``, keeping the others accepted; return the keys.

    Raises:
        SecretError: the file is missing, not 0600 or invalid.
    """
    keys = [secrets.token_bytes(KEY_BYTES), *read_key_file(path)]
    write_key_file(path, keys)
    return keys


def retire_old_keys(path: str | os.PathLike[str]) -> list[bytes]:
    """Keep only the current (first) key of ``path``; return the keys removed.

    Raises:
        SecretError: the file is missing, not 0600 or invalid.
    """
    current, *old = read_key_file(path)
    write_key_file(path, [current])
    return old


class Keyring:
    """The keys of one key file, re-read when the file changes (checked at most once a second).

    Thread-safe; ``keys`` never becomes empty once loaded (a bad edit of the file keeps the
    previous keys and is reported by :meth:`refresh`).
    """

    def __init__(self, path: str | os.PathLike[str], keys: list[bytes] | None = None) -> None:
        self.path = Path(path)
        self._path_text = str(self.path)
        self._lock = threading.Lock()
        self._keys = keys if keys is not None else read_key_file(self.path)
        self._stamp = self._file_stamp()
        self._checked = time.monotonic()

    @property
    def keys(self) -> list[bytes]:
        """Every accepted key, current first."""
        return self._keys

    @property
    def current(self) -> bytes:
        """The key that tags what this process sends."""
        return self._keys[0]

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            info = os.stat(self._path_text)  # os.stat: pathlib's costs more, once per frame
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size, info.st_ino)

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the file if it changed; return True if the keys changed.

        Raises:
            SecretError: the changed file is invalid (the previous keys stay in use).
        """
        now = time.monotonic()
        if not force and now - self._checked < _RELOAD_INTERVAL:
            return False
        with self._lock:
            self._checked = now
            stamp = self._file_stamp()
            if stamp == self._stamp:
                return False
            keys = read_key_file(self.path)
            self._stamp = stamp
            changed = keys != self._keys
            self._keys = keys
            return changed

    def tag(self, data: bytes) -> bytes:
        """Tag ``data`` with the current key."""
        return tag(self._keys[0], data)

    def matches(self, data: bytes, given: bytes) -> bool:
        """True if ``given`` is the tag of ``data`` under any accepted key."""
        return any(hmac.compare_digest(tag(key, data), given) for key in self._keys)
