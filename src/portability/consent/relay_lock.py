"""A relay's side of the publishing lock: take it, check it, let it go; say so in logs.

The lock itself is :mod:`portability.consent.locks`; this keeps what a relay knows about it
(:class:`RelayStatus`, served on ``/stats`` and as a metric) and logs each change once: when
the relay starts publishing or takes over, when it stands by (and who holds the lock), when
it loses the lock, and when it lets it go.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from portability.consent._time import utc_now
from portability.consent.errors import RelayError
from portability.consent.locks import PublishLock

__all__ = ["Publishing", "RelayStatus"]

_log = logging.getLogger("portability.consent.outbox")  # the relay's logger: one stream


@dataclass(slots=True)
class RelayStatus:
    """What a relay is doing: publishing (it holds the lock) or standing by, and its counts."""

    relay_id: str
    lock: str  # where the publishing lock is (a file, or a database and key)
    publishing: bool = False
    publishing_since: datetime | None = None
    holder: str | None = None  # who holds the lock while this relay stands by, if known
    published: int = 0
    acquired: int = 0  # times this relay took the lock (at its start, or a takeover)
    lost: int = 0  # times it found the lock lost and stopped publishing
    lock_errors: int = 0  # tries that failed (database or lock file unreachable)

    def as_dict(self) -> dict[str, Any]:
        """The status for ``/stats`` (times in ISO 8601)."""
        since = self.publishing_since
        return {
            "relay_id": self.relay_id,
            "lock": self.lock,
            "publishing": self.publishing,
            "publishing_since": None if since is None else since.isoformat(),
            "holder": self.relay_id if self.publishing else self.holder,
            "published": self.published,
            "acquired": self.acquired,
            "lost": self.lost,
            "lock_errors": self.lock_errors,
        }


class Publishing:
    """Whether this relay may publish, as its lock says; lock calls run in a thread."""

    def __init__(self, lock: PublishLock, relay_id: str) -> None:
        self._lock = lock
        self.status = RelayStatus(relay_id, lock.where)
        self._stood_by = False  # "stands by" is logged once per holder, not at every try
        self._released = False

    @property
    def relay_id(self) -> str:
        return self.status.relay_id

    async def take(self) -> bool:
        """Hold the lock: True if this relay holds it now (it already did, or took it).

        Raises:
            RelayError: The lock could not be tried (the database or the lock file failed).
        """
        if self.status.publishing:
            return True
        if self._released:
            return False
        try:
            taken = await asyncio.to_thread(self._lock.acquire)
            holder = None if taken else await asyncio.to_thread(self._lock.holder)
        except (SQLAlchemyError, OSError) as error:
            self.status.lock_errors += 1
            raise RelayError(
                f"cannot try the publishing lock ({self._lock.where}): {error}"
            ) from error
        if taken and self._released:
            # Released (the relay stopped) while this try ran in its thread: do not keep it.
            await asyncio.to_thread(self._lock.release)
            return False
        if taken:
            self._took()
        else:
            self._stand_by(holder)
        return taken

    async def still_held(self) -> bool:
        """Check the lock before a send; a relay that lost it stops publishing at once."""
        try:
            if await asyncio.to_thread(self._lock.verify):
                return True
        except (SQLAlchemyError, OSError):
            # Cannot tell: do not send. The lock is let go and taken again once it answers.
            self.status.lock_errors += 1
            await asyncio.to_thread(self._lock.release)
        status = self.status
        status.publishing, status.publishing_since = False, None
        status.lost += 1
        _log.warning(
            "outbox relay %s lost the publishing lock (%s): it stops publishing and tries to "
            "take the lock again",
            self.relay_id,
            self._lock.where,
            extra={"relay_id": self.relay_id, "relay_publishing": False},
        )
        return False

    def reopen(self) -> None:
        """Allow :meth:`take` again after :meth:`release` (the relay started again)."""
        self._released = False

    async def release(self) -> None:
        """Let the lock go for good (idempotent): a relay standing by may take over at once."""
        self._released = True
        await asyncio.to_thread(self._lock.release)
        if self.status.publishing:
            _log.info("outbox relay %s stopped publishing: lock released", self.relay_id)
        self.status.publishing, self.status.publishing_since = False, None

    def _took(self) -> None:
        status = self.status
        status.publishing, status.publishing_since, status.holder = True, utc_now(), None
        status.acquired += 1
        _log.info(
            "outbox relay %s %s: it holds the publishing lock (%s); other relays stand by",
            self.relay_id,
            "takes over publishing" if self._stood_by else "publishes",
            self._lock.where,
            extra={"relay_id": self.relay_id, "relay_publishing": True},
        )
        self._stood_by = False

    def _stand_by(self, holder: str | None) -> None:
        if not self._stood_by or holder != self.status.holder:
            _log.info(
                "outbox relay %s stands by: %s holds the publishing lock (%s); this relay "
                "takes over when it stops",
                self.relay_id,
                holder or "another relay",
                self._lock.where,
                extra={"relay_id": self.relay_id, "relay_publishing": False},
            )
        self.status.holder, self._stood_by = holder, True
