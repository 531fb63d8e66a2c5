"""Sealed signing secrets: a topic or a database backup read without the key tells nothing.

Whoever holds an app's ``whsec_`` secret can sign webhooks the app trusts, so the secrets are
sealed wherever they rest (the consent store) or travel (the ``apps`` topic), with AES-256-GCM
from the ``cryptography`` package, under a key from the settings::

    sealed:v1:<key id>:<base64url of nonce (12 bytes) + ciphertext + tag (16 bytes)>

- **Key id.** Each sealed value names the key that sealed it. A key ring holds several keys:
  the first seals, every one opens, so the key can be rotated without a stop (add the new key
  everywhere, make it first, re-seal with ``portability secrets reencrypt``, then drop the old
  one; see docs/webhooks.md, "Signing secrets: rotation and sealing").
- **Bound to its app.** The app id is the associated data: a sealed value copied into another
  app's row or record does not open.
- **Nonces.** A fresh random 96-bit nonce per seal; one key seals far fewer than the 2**32
  values NIST SP 800-38D allows with random nonces.
- **Direct, not wrapped.** The key from the settings seals each secret itself. With a key
  management service it would be the data key the service unwraps at start; the key id leaves
  room for that without a format change.

Where the keys come from (:meth:`SecretsKeys.from_settings`): ``PORTABILITY_SECRETS_KEY``
(``<id>:<base64url of 32 bytes>``, comma-separated, the first seals); unset in development
mode, a key kept in ``data_dir/secrets.key`` (created on first use, mode 0600) so that the demo
needs nothing; unset otherwise, an error. No message here ever holds key material or a secret.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import secrets
import stat
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from portability.errors import ConfigurationError, PortabilityError
from portability.settings import Settings

__all__ = [
    "KEY_FILE_NAME",
    "SEALED_PREFIX",
    "SETTING",
    "SecretsKey",
    "SecretsKeyError",
    "SecretsKeys",
    "UnsealError",
    "is_sealed",
    "key_id_of",
    "read_key_file",
    "write_key_file",
]

SEALED_PREFIX = "sealed:v1:"
KEY_FILE_NAME = "secrets.key"
SETTING = "PORTABILITY_SECRETS_KEY"
_KEY_BYTES = 32  # AES-256
_NONCE_BYTES = 12
_TAG_BYTES = 16
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}")
# Versioned and separated from the app id, so that no other use of the key can produce
# associated data that collides with a signing secret's.
_AAD_PREFIX = b"portability/signing-secret/v1\x00"
_LOCAL_KEY_ID = "local"


class SecretsKeyError(ConfigurationError):
    """The secrets key is missing or malformed, or its file is unsafe: a configuration fault."""


class UnsealError(PortabilityError, ValueError):
    """A sealed value this key ring cannot open: a key it lacks, a different key, or damage."""


@dataclass(frozen=True, slots=True)
class SecretsKey:
    """One key of a ring: its id and 32 bytes of AES-256 key material (never in ``repr``)."""

    key_id: str
    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not _KEY_ID.fullmatch(self.key_id):
            # Not echoed: a key pasted the wrong way round would put its material here.
            raise SecretsKeyError(
                f"a key id must be 1 to 32 letters, digits or _ . -; this one "
                f"({len(self.key_id)} characters) is not"
            )
        if len(self.material) != _KEY_BYTES:
            raise SecretsKeyError(
                f"key {self.key_id!r} must be {_KEY_BYTES} bytes, not {len(self.material)}"
            )

    @classmethod
    def generate(cls, key_id: str | None = None) -> SecretsKey:
        """A new random key; its id defaults to ``k`` and 6 random hex digits."""
        return cls(key_id or f"k{secrets.token_hex(3)}", secrets.token_bytes(_KEY_BYTES))

    def text(self) -> str:
        """The key as ``PORTABILITY_SECRETS_KEY`` and key files hold it: ``<id>:<base64url>``."""
        return f"{self.key_id}:{base64.urlsafe_b64encode(self.material).decode().rstrip('=')}"


class SecretsKeys:
    """A key ring: the first key seals, every key opens.

    Thread-safe: AES-GCM objects keep no state between calls.
    """

    __slots__ = ("_aead", "_ids", "_source")

    def __init__(self, keys: Sequence[SecretsKey], source: str) -> None:
        """Hold ``keys``; ``source`` names where they came from, for error messages.

        Raises:
            SecretsKeyError: No key, or two keys with one id.
        """
        if not keys:
            raise SecretsKeyError(f"{source} holds no key")
        ids = [key.key_id for key in keys]
        repeated = sorted({key_id for key_id in ids if ids.count(key_id) > 1})
        if repeated:
            raise SecretsKeyError(f"{source} holds key id(s) {', '.join(repeated)} twice")
        self._ids = tuple(ids)
        self._aead = {key.key_id: AESGCM(key.material) for key in keys}
        self._source = source

    @classmethod
    def parse(cls, text: str, source: str = SETTING) -> SecretsKeys:
        """Read ``<id>:<base64url key>`` entries separated by commas or white space.

        Raises:
            SecretsKeyError: An entry is malformed (the message never holds key material).
        """
        keys = []
        for number, entry in enumerate(re.split(r"[,\s]+", text.strip()), start=1):
            if not entry:
                continue
            key_id, colon, encoded = entry.partition(":")
            if not colon:
                raise SecretsKeyError(
                    f"entry {number} of {source} is not <key id>:<base64url key>: "
                    "make keys with `portability secrets new-key`"
                )
            keys.append(SecretsKey(key_id, _decode_key(encoded, key_id, source)))
        return cls(keys, source)

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretsKeys:
        """The ring the settings name: ``PORTABILITY_SECRETS_KEY``, or the data folder's key.

        Raises:
            SecretsKeyError: The setting is malformed; unset outside development mode; or the
                key file is unsafe or malformed.
        """
        if settings.secrets_key is not None:
            return cls.parse(settings.secrets_key.get_secret_value(), SETTING)
        if settings.development_mode:
            return _local_key_file(settings.data_dir / KEY_FILE_NAME)
        raise SecretsKeyError(
            f"{SETTING} is not set: outside development mode apps' signing secrets are sealed "
            "with a key you provide; make one with `portability secrets new-key --file PATH` "
            f"and set {SETTING} to the file's content"
        )

    @classmethod
    def ephemeral(cls) -> SecretsKeys:
        """This process's own key, kept in memory only: for tests and throwaway stores.

        What it seals no other process can open, and nothing can once the process ends.
        """
        global _ephemeral  # one per process, made on first use
        with _ephemeral_lock:
            if _ephemeral is None:
                _ephemeral = cls([SecretsKey.generate("ephemeral")], "this process's ephemeral key")
            return _ephemeral

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key's id, the sealing key's first."""
        return self._ids

    @property
    def sealing_key_id(self) -> str:
        """The id of the key that seals."""
        return self._ids[0]

    @property
    def source(self) -> str:
        """Where the keys came from (a setting's name, a file's path)."""
        return self._source

    def seal(self, secret: str, app_id: str) -> str:
        """``secret`` sealed with the first key for app ``app_id``."""
        key_id = self._ids[0]
        nonce = secrets.token_bytes(_NONCE_BYTES)
        data = nonce + self._aead[key_id].encrypt(nonce, secret.encode(), _aad(app_id))
        return f"{SEALED_PREFIX}{key_id}:{base64.urlsafe_b64encode(data).decode().rstrip('=')}"

    def open(self, sealed: str, app_id: str) -> str:
        """The secret in ``sealed``, which must have been sealed for app ``app_id``.

        Raises:
            UnsealError: Not a sealed value, a key id this ring lacks, or a key that does not
                open it (another key under the same id, another app, altered bytes).
        """
        key_id, data = _split(sealed)
        aead = self._aead.get(key_id)
        if aead is None:
            raise UnsealError(
                f"sealed with key {key_id!r}, which {self._source} does not hold (it holds "
                f"{', '.join(self._ids)}): add that key to it"
            )
        try:
            opened = aead.decrypt(data[:_NONCE_BYTES], data[_NONCE_BYTES:], _aad(app_id))
        except InvalidTag:
            raise UnsealError(
                f"key {key_id!r} of {self._source} does not open it: that id names another key "
                "than the one it was sealed with (or the value was altered)"
            ) from None
        return opened.decode()

    def __repr__(self) -> str:
        return f"SecretsKeys({', '.join(self._ids)} from {self._source})"


_ephemeral: SecretsKeys | None = None
_ephemeral_lock = threading.Lock()


def is_sealed(value: str) -> bool:
    """Whether ``value`` is a sealed value (rather than, say, a clear ``whsec_`` secret)."""
    return value.startswith(SEALED_PREFIX)


def key_id_of(sealed: str) -> str:
    """The id of the key that sealed ``sealed``.

    Raises:
        UnsealError: Not a sealed value.
    """
    return _split(sealed)[0]


def write_key_file(path: Path, keys: Iterable[SecretsKey]) -> None:
    """Write ``keys`` to a new file at ``path``, readable by its owner only (mode 0600).

    Raises:
        FileExistsError: ``path`` exists: a key is never overwritten.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    content = "".join(f"{key.text()}\n" for key in keys)
    # Written beside it first and linked into place: a process reading the file at the same
    # time never sees it half written, and of two creating it at once one wins.
    draft = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.link(draft, path)
    finally:
        draft.unlink(missing_ok=True)


def _local_key_file(path: Path) -> SecretsKeys:
    """The development key in ``path``, made on first use."""
    if not path.exists():
        # FileExistsError: another process made it first, and theirs is used.
        with contextlib.suppress(FileExistsError):
            write_key_file(path, [SecretsKey.generate(_LOCAL_KEY_ID)])
    return read_key_file(path)


def read_key_file(path: Path) -> SecretsKeys:
    """The keys in the file at ``path``, which only its owner may read.

    Raises:
        SecretsKeyError: The file is readable by others, or malformed.
    """
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SecretsKeyError(
            f"the key file {path} may be read by others (mode {mode:04o}): chmod 600 {path}"
        )
    return SecretsKeys.parse(path.read_text(), f"the key file {path}")


def _b64url(encoded: str) -> bytes:
    """Strict base64url, padded or not: a stray character is an error, not skipped."""
    return base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=True)


def _decode_key(encoded: str, key_id: str, source: str) -> bytes:
    try:
        return _b64url(encoded)
    except (binascii.Error, ValueError):
        raise SecretsKeyError(f"key {key_id!r} of {source} is not base64url") from None


def _split(sealed: str) -> tuple[str, bytes]:
    if not sealed.startswith(SEALED_PREFIX):
        raise UnsealError(f"not a sealed value (expected {SEALED_PREFIX}<key id>:<data>)")
    key_id, colon, encoded = sealed.removeprefix(SEALED_PREFIX).partition(":")
    try:
        data = _b64url(encoded)
    except (binascii.Error, ValueError):
        data = b""
    if not colon or len(data) <= _NONCE_BYTES + _TAG_BYTES:
        raise UnsealError(f"a sealed value of key {key_id!r} is damaged (cut or not base64url)")
    return key_id, data


def _aad(app_id: str) -> bytes:
    return _AAD_PREFIX + app_id.encode()
