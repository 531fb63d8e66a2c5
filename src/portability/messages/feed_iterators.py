"""The pull feed's iterators, and what the feed refuses.

An iterator says where in its feed an app stands: the partition of the feed topic that holds
the app's events and the offset of the next record to look at. It is handed out opaque
(``fi1.`` and base64url of a small JSON object) so that apps pass it back rather than build
it, and so that its inside can change with its version.

It is validated, not signed: what it names is only ever read for the app it belongs to (the
reader keeps records whose key is that app's id), so a forged one can at worst make an app
skip or read again its own events, which it could do with a real one. An iterator of another
app is refused all the same (:class:`InvalidIteratorError`), so a mix-up shows at once.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Final, TypeGuard

from portability.messages.errors import MessagesError

__all__ = [
    "FeedIterator",
    "FeedUnavailableError",
    "FeedUnusedError",
    "InvalidIteratorError",
    "IteratorExpiredError",
    "check_position",
]

_PREFIX: Final = "fi1."
_VERSION: Final = 1
_MAX_TEXT: Final = 400  # far above any iterator this module makes


class InvalidIteratorError(MessagesError):
    """The iterator is not one this API handed out for this app's feed (answered 400)."""

    code = "invalid_iterator"


class IteratorExpiredError(MessagesError):
    """The feed no longer holds where the iterator points: retention removed the events
    after it, or the feed was recreated or re-partitioned (answered 410)."""

    code = "iterator_expired"


class FeedUnusedError(MessagesError):
    """The app takes webhooks: it has no feed to read (answered 409)."""

    code = "not_poll_mode"


class FeedUnavailableError(MessagesError):
    """This server cannot read the feed now: it runs without Kafka, the broker did not
    answer, or too many reads are open (answered 503; ``retriable`` then)."""

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable


@dataclass(frozen=True, slots=True)
class FeedIterator:
    """Where an app stands in its feed: the next offset to look at in its partition."""

    app_id: str
    partition: int
    offset: int

    def encode(self) -> str:
        """The opaque text handed to the app."""
        document = {"v": _VERSION, "a": self.app_id, "p": self.partition, "o": self.offset}
        raw = json.dumps(document, separators=(",", ":")).encode()
        return _PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, app_id: str) -> FeedIterator:
        """The iterator ``text`` of ``app_id``'s feed.

        Raises:
            InvalidIteratorError: Not an iterator this API made, or one of another app.
        """
        document = _document(text)
        owner, partition, offset = document.get("a"), document.get("p"), document.get("o")
        if (
            document.get("v") != _VERSION
            or not isinstance(owner, str)
            or not _natural(partition)
            or not _natural(offset)
        ):
            raise _invalid()
        if owner != app_id:
            raise InvalidIteratorError(
                f"the iterator belongs to another app's feed, not to app {app_id!r}'s: pass "
                "the iterator this feed's last answer gave, or none to start again"
            )
        return cls(owner, partition, offset)


def check_position(iterator: FeedIterator, partition: int, start: int, end: int | None) -> None:
    """Refuse an iterator the feed can no longer serve as it was.

    Args:
        iterator: Where the app stands.
        partition: The partition that holds the app's events now.
        start: The first offset the partition still holds (retention moves it on).
        end: The partition's end (its high watermark), if known.

    Raises:
        IteratorExpiredError: The events after the iterator were removed (it is below the
            start), the feed was recreated (it is past the end), or re-partitioned.
    """
    where = f"offset {iterator.offset} of feed partition {iterator.partition}"
    if iterator.partition != partition:
        why = f"the feed was re-partitioned: app events are in partition {partition} now"
    elif iterator.offset < start:
        why = f"the feed keeps events from offset {start} on (PORTABILITY_FEED_RETENTION_DAYS)"
    elif end is not None and iterator.offset > end:
        why = f"the feed ends at offset {end}: it was recreated since"
    else:
        return
    raise IteratorExpiredError(
        f"the iterator points at {where}, which the feed no longer holds ({why}), so events "
        "after it may be lost: read the feed again without an iterator (from the oldest event "
        "kept), and ask for a snapshot (POST /v1/consents/{consent_id}/snapshots) or a replay "
        "(POST /v1/consents/{consent_id}/replay) of each consent whose events you missed"
    )


def _document(text: str) -> dict[str, object]:
    if not text.startswith(_PREFIX) or len(text) > _MAX_TEXT:
        raise _invalid()
    body = text.removeprefix(_PREFIX)
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        document = json.loads(raw)
    except (binascii.Error, ValueError):  # JSONDecodeError and UnicodeDecodeError included
        raise _invalid() from None
    if not isinstance(document, dict):
        raise _invalid()
    return document


def _natural(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _invalid() -> InvalidIteratorError:
    return InvalidIteratorError(
        "the iterator is not one this feed handed out: pass the `iterator` of the feed's last "
        "answer unchanged, or leave it out to start from the oldest event kept"
    )
