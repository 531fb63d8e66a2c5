"""An app's signing secrets in the consent store: sealed, bounded in number, rotated safely.

- **Sealed.** The row keeps each live secret sealed (:mod:`portability.sealing`) in
  ``apps.sealed_signing_secrets``, a JSON list, newest first, with the end of each one's
  overlap (None for the current secret) and the hash of the idempotency key of the rotation
  that made it. Neither a backup nor the outbox holds a secret in the clear.
- **Rotation keeps what is still overlapping.** A rotation makes a new current secret; the one
  it replaces keeps signing for the overlap, and so does every earlier one whose overlap has
  not ended, since the app's receiver may still hold any of them. At most
  :data:`MAX_LIVE_SECRETS` sign at once: a rotation that would make one more is refused
  (:class:`RotationLimitError`, the API's 409, saying when the oldest stops signing) rather
  than dropping a secret before its overlap ends. Overlap 0 drops the previous secrets at once.
- **Safe to repeat.** A rotation given the idempotency key of the rotation that made the
  current secret changes nothing and returns that secret again; one given the key of a
  rotation whose secret was since replaced is refused (:class:`ConflictError`). Keys are
  remembered as long as the secret they made is live.
- **Stores from before sealing** keep the clear ``signing_secret`` and
  ``previous_signing_secret`` columns; they are read as they are until sealed
  (:func:`portability.consent.resealing.seal_stored_secrets`, which the API runs on start).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from portability.consent._time import EPOCH, millis
from portability.consent.errors import ConflictError
from portability.consent.models import App
from portability.sealing import SecretsKeys, is_sealed, key_id_of
from portability.webhooks.signing import generate_secret

__all__ = [
    "MAX_LIVE_SECRETS",
    "Rotation",
    "RotationLimitError",
    "SigningSecrets",
    "StoredSecret",
    "drop_ended",
    "issue_first",
    "reseal",
    "rotate",
    "write",
]

MAX_LIVE_SECRETS = 3
"""Secrets that sign an app's deliveries at once, at most: the current one and two overlapping."""


class RotationLimitError(ConflictError):
    """A rotation that would make more than :data:`MAX_LIVE_SECRETS` secrets sign at once.

    ``retry_at`` is when the oldest live secret stops signing: a rotation succeeds from then.
    """

    def __init__(self, app_id: str, retry_at: datetime) -> None:
        """Refuse the rotation of ``app_id``'s secret until ``retry_at``."""
        super().__init__(
            f"app {app_id!r} already has {MAX_LIVE_SECRETS} signing secrets in use (the current "
            f"one and {MAX_LIVE_SECRETS - 1} still in their overlap), the most a rotation "
            f"keeps; the oldest stops signing at {retry_at.isoformat()}: rotate again after "
            "that, or repeat the last rotation with its idempotency key to get its secret"
        )
        self.retry_at = retry_at


@dataclass(frozen=True, slots=True)
class StoredSecret:
    """One live secret as the row keeps it.

    Attributes:
        value: The sealed secret (in a store not sealed yet: the clear one).
        ends_at: When it stops signing; None for the current secret.
        rotation: SHA-256 (hex) of the idempotency key of the rotation that made it.
    """

    value: str = field(repr=False)
    ends_at: datetime | None = None
    rotation: str | None = None

    @property
    def sealed(self) -> bool:
        return is_sealed(self.value)

    def as_json(self) -> dict[str, Any]:
        ends = None if self.ends_at is None else millis(self.ends_at)
        return {"sealed": self.value, "ends_at_ms": ends, "rotation": self.rotation}

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> StoredSecret:
        ends = entry.get("ends_at_ms")
        return cls(
            value=entry["sealed"],
            ends_at=None if ends is None else EPOCH + timedelta(milliseconds=ends),
            rotation=entry.get("rotation"),
        )


@dataclass(frozen=True, slots=True)
class SigningSecrets:
    """The secrets that sign an app's deliveries now, newest first; opened only when asked.

    Attributes:
        app_id: The app (the sealed values are bound to it).
        stored: The live secrets as the row keeps them, the current one first.
        keys: The ring that opens them; None where nobody needs them in the clear.
    """

    app_id: str
    stored: tuple[StoredSecret, ...]
    keys: SecretsKeys | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, app: App, keys: SecretsKeys | None = None) -> SigningSecrets:
        """What ``app``'s row keeps, sealed or (a store not sealed yet) in the clear."""
        if app.sealed_signing_secrets:
            entries = json.loads(app.sealed_signing_secrets)
            stored = tuple(StoredSecret.from_json(entry) for entry in entries)
        else:
            legacy = [StoredSecret(app.signing_secret)] if app.signing_secret else []
            if app.previous_signing_secret:
                legacy.append(
                    StoredSecret(app.previous_signing_secret, app.previous_secret_expires_at)
                )
            stored = tuple(legacy)
        return cls(app.app_id, stored, keys)

    @property
    def previous_ends(self) -> tuple[datetime, ...]:
        """When each previous secret stops signing, newest first."""
        return tuple(s.ends_at for s in self.stored[1:] if s.ends_at is not None)

    def current(self) -> str:
        """The current secret, in the clear.

        Raises:
            UnsealError: The keys cannot open it.
            LookupError: The app has no secret, or no keys were given to open it.
        """
        if not self.stored:
            raise LookupError(f"app {self.app_id!r} has no signing secret")
        return self._opened(self.stored[0])

    def opened(self) -> list[str]:
        """Every live secret in the clear, newest first (see :meth:`current`)."""
        return [self._opened(stored) for stored in self.stored]

    def sealed_values(self) -> list[str]:
        """The sealed secrets, newest first: what the apps topic carries."""
        return [s.value for s in self.stored if s.sealed]

    def clear_values(self) -> list[str]:
        """Secrets a store not sealed yet keeps in the clear (empty once sealed)."""
        return [s.value for s in self.stored if not s.sealed]

    def _opened(self, stored: StoredSecret) -> str:
        if not stored.sealed:
            return stored.value
        if self.keys is None:
            raise LookupError(
                f"the signing secrets of app {self.app_id!r} were read without the secrets "
                "key: pass one to ConsentService (SecretsKeys.from_settings)"
            )
        return self.keys.open(stored.value, self.app_id)

    def __repr__(self) -> str:
        return f"SigningSecrets({self.app_id!r}, {len(self.stored)} live)"


@dataclass(frozen=True, slots=True)
class Rotation:
    """A rotation's outcome: the current secret, and whether it was made earlier.

    Attributes:
        secret: The app's current secret, in the clear (shown to the caller once).
        repeated: The idempotency key named an earlier rotation: nothing changed.
    """

    secret: str = field(repr=False)
    repeated: bool = False


def write(app: App, stored: Sequence[StoredSecret]) -> None:
    """Keep ``stored`` (newest first) in ``app``'s row and empty the clear columns.

    A store not sealed yet that holds only clear secrets keeps them where they were (only the
    overlap sweep writes such a row, and it holds no key).
    """
    ends = [s.ends_at for s in stored if s.ends_at is not None]
    app.previous_secret_expires_at = min(ends) if ends else None
    if stored and not any(s.sealed for s in stored):
        app.signing_secret = stored[0].value
        app.previous_signing_secret = stored[1].value if len(stored) > 1 else None
        return
    if any(not s.sealed for s in stored):
        raise ValueError(f"app {app.app_id!r}: seal every secret before writing them together")
    app.sealed_signing_secrets = json.dumps([s.as_json() for s in stored], separators=(",", ":"))
    app.signing_secret = ""
    app.previous_signing_secret = None


def issue_first(app: App, keys: SecretsKeys) -> str:
    """Give a new app its first secret (sealed in the row); return it in the clear."""
    secret = generate_secret()
    write(app, [StoredSecret(keys.seal(secret, app.app_id))])
    return secret


def rotate(
    app: App,
    keys: SecretsKeys,
    overlap_s: float,
    now: datetime,
    idempotency_key: str | None = None,
) -> Rotation:
    """Give ``app`` a new current secret, keeping those still in their overlap (see above).

    Args:
        app: The app's row, locked by the caller.
        keys: Seals the new secret (and any clear one kept).
        overlap_s: How long the replaced secret keeps signing; 0 drops every previous one.
        now: The time of the rotation.
        idempotency_key: Names this rotation, so that repeating it changes nothing.

    Raises:
        RotationLimitError: :data:`MAX_LIVE_SECRETS` would sign at once.
        ConflictError: ``idempotency_key`` made a secret that a later rotation replaced.
    """
    live = SigningSecrets.of(app, keys)
    fingerprint = _fingerprint(idempotency_key)
    repeated = _repeated(live, fingerprint)
    if repeated is not None:
        return repeated
    kept: list[StoredSecret] = []
    if overlap_s > 0 and live.stored:
        still = [s for s in live.stored[1:] if s.ends_at is not None and s.ends_at > now]
        if len(still) + 2 > MAX_LIVE_SECRETS:
            raise RotationLimitError(app.app_id, min(s.ends_at for s in still if s.ends_at))
        replaced = replace(live.stored[0], ends_at=now + timedelta(seconds=overlap_s))
        kept = [_sealed(stored, keys, app.app_id) for stored in (replaced, *still)]
    secret = generate_secret()
    write(app, [StoredSecret(keys.seal(secret, app.app_id), None, fingerprint), *kept])
    return Rotation(secret)


def drop_ended(app: App, now: datetime) -> bool:
    """Drop the previous secrets whose overlap ended at or before ``now``; True if any was."""
    stored = SigningSecrets.of(app).stored
    kept = [s for s in stored if s.ends_at is None or s.ends_at > now]
    if len(kept) == len(stored):
        return False
    write(app, kept)
    return True


def reseal(app: App, keys: SecretsKeys) -> bool:
    """Seal ``app``'s clear secrets, and re-seal those another key sealed, with the sealing key.

    Returns:
        Whether the row changed.

    Raises:
        UnsealError: A secret sealed with a key ``keys`` cannot open.
    """
    stored = SigningSecrets.of(app, keys).stored
    renewed = [_sealed(s, keys, app.app_id, renew=True) for s in stored]
    if renewed == list(stored) and not app.signing_secret:
        return False
    write(app, renewed)
    return True


def _sealed(
    stored: StoredSecret, keys: SecretsKeys, app_id: str, *, renew: bool = False
) -> StoredSecret:
    """``stored`` sealed with the sealing key: clear ones always, others when ``renew``."""
    if stored.sealed:
        if not renew or key_id_of(stored.value) == keys.sealing_key_id:
            return stored
        return replace(stored, value=keys.seal(keys.open(stored.value, app_id), app_id))
    return replace(stored, value=keys.seal(stored.value, app_id))


def _repeated(live: SigningSecrets, fingerprint: str | None) -> Rotation | None:
    """The outcome of repeating the rotation ``fingerprint`` names, if it is remembered."""
    if fingerprint is None:
        return None
    for index, stored in enumerate(live.stored):
        if stored.rotation != fingerprint:
            continue
        if index == 0:
            return Rotation(live.current(), repeated=True)
        ends = "its overlap" if stored.ends_at is None else stored.ends_at.isoformat()
        raise ConflictError(
            "the rotation with this idempotency key made a secret that a later rotation "
            f"replaced (it signs until {ends}): use a new key to rotate again"
        )
    return None


def _fingerprint(idempotency_key: str | None) -> str | None:
    # Only a hash is kept: the key is the caller's, and equality is all that is asked of it.
    if idempotency_key is None:
        return None
    return hashlib.sha256(idempotency_key.encode()).hexdigest()
