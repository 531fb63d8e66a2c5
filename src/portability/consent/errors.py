"""Errors of the consent store: each message says what to change to make the call succeed.

Every one is a :class:`ConsentError`, under :class:`~portability.errors.PortabilityError`.
Only :class:`RelayError` is ``retriable`` (Kafka or the database could not answer: the same
round can succeed later); the rest need a different request or a change of state first.
"""

from portability.errors import PortabilityError

__all__ = [
    "ConflictError",
    "ConsentError",
    "DuplicateConsentError",
    "InvalidRequestError",
    "NotFoundError",
    "RegionNotServedError",
    "RelayError",
]


class ConsentError(PortabilityError):
    """Base of the consent store's errors."""


class NotFoundError(ConsentError, LookupError):
    """An app or consent id that the store does not know."""


class InvalidRequestError(ConsentError, ValueError):
    """A request the store refuses as given: bad categories, a past expiry, a bad URL..."""


class ConflictError(ConsentError):
    """A request the current state does not allow, e.g. a grant to an app not yet approved.

    Not retriable: the same request fails until the state changes (its message says how).
    """


class DuplicateConsentError(ConflictError):
    """A grant identical to an active consent (same user, app, mode and categories).

    ``consent_id`` is the active consent the caller should use (or revoke first).
    """

    def __init__(self, message: str, consent_id: str) -> None:
        """Refuse the grant; ``consent_id`` names the consent already in force."""
        super().__init__(message)
        self.consent_id = consent_id


class RegionNotServedError(ConsentError):
    """A user outside the EEA and the UK: consents cannot be granted to or for them."""


class RelayError(ConsentError):
    """The outbox relay could not publish every pending row this round.

    Rows it did not publish stay pending and go out, in order, on a later round; the cause
    (a Kafka or database error) is chained as ``__cause__``.
    """

    retriable = True
