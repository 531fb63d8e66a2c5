"""The consents of the partitions a matcher owns, indexed by the key of ``account.changes``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from portability.wire.records import ConsentRecord, to_millis

__all__ = ["ActiveConsent", "ConsentIndex"]


@dataclass(frozen=True, slots=True)
class ActiveConsent:
    """An ongoing, active consent, reduced to what matching needs."""

    consent_id: str
    app_id: str
    user_id: str
    categories: frozenset[str]
    granted_at_ms: int
    expires_at_ms: int | None
    snapshot_epoch: int = 0

    def covers(self, category: str, occurred_at_ms: int) -> bool:
        """Whether a change of ``category`` made at ``occurred_at_ms`` falls under this consent.

        The bounds are timestamps, not the order in which records happen to arrive, so that
        matching the same change again (after a crash) gives the same answer. A consent with
        a snapshot has no lower bound: every change matched from the moment the matcher holds
        it is a delta, and the snapshot's position decides which of them the snapshot already
        holds (a change made just before the grant may be read after it; without the bound
        it cannot fall between the two).
        """
        if category not in self.categories:
            return False
        if occurred_at_ms < self.granted_at_ms and self.snapshot_epoch == 0:
            return False
        return self.expires_at_ms is None or occurred_at_ms < self.expires_at_ms


class ConsentIndex:
    """Active ongoing consents of one partition, by user key (the bytes of the user id)."""

    def __init__(self) -> None:
        self._by_user: dict[bytes, tuple[ActiveConsent, ...]] = {}
        self._versions: dict[str, int] = {}

    def __len__(self) -> int:
        return sum(len(consents) for consents in self._by_user.values())

    def get(self, user_key: bytes | None) -> tuple[ActiveConsent, ...] | None:
        """Consents of the user with this key; ``None`` (the common case) when there are none."""
        if user_key is None:
            return None
        return self._by_user.get(user_key)

    @property
    def lookup(self) -> Callable[[bytes | None], tuple[ActiveConsent, ...] | None]:
        """:meth:`get` without its call: the index's own ``dict.get`` (a key of None finds
        nothing either), to bind once per batch in the matcher's loop over every record."""
        return self._by_user.get  # type: ignore[return-value]  # a None key finds nothing

    def apply(self, record: ConsentRecord) -> bool:
        """Apply a consent state; returns False for a version older than one already applied.

        Consent records may arrive twice (the outbox relay publishes at least once), so an
        older version never overwrites a newer one.
        """
        consent_id = record["consent_id"]
        if record["version"] < self._versions.get(consent_id, -1):
            return False
        self._versions[consent_id] = record["version"]
        key = record["user_id"].encode()
        others = tuple(c for c in self._by_user.get(key, ()) if c.consent_id != consent_id)
        if record["status"] == "active" and record["mode"] == "ongoing":
            others = (*others, _active(record))
        if others:
            self._by_user[key] = others
        else:
            self._by_user.pop(key, None)
        return True


def _active(record: ConsentRecord) -> ActiveConsent:
    expires_at = record["expires_at"]
    return ActiveConsent(
        consent_id=record["consent_id"],
        app_id=record["app_id"],
        user_id=record["user_id"],
        categories=frozenset(record["categories"]),
        granted_at_ms=to_millis(record["granted_at"]),
        expires_at_ms=None if expires_at is None else to_millis(expires_at),
        snapshot_epoch=record.get("snapshot_epoch", 0),
    )
