"""The consent store: apps and consents in SQL, published through a transactional outbox.

``ConsentService`` changes state and writes each change to the outbox in the same
transaction (``outbox_rows``); ``OutboxRelay`` (``relay``) publishes the outbox to the
compacted ``consents`` and ``apps`` topics, so the pipeline never reads the database.
"""

from portability.consent.credentials import new_signing_secret
from portability.consent.errors import (
    ConsentError,
    DuplicateConsentError,
    InvalidRequestError,
    NotFoundError,
    RelayError,
)
from portability.consent.models import (
    App,
    Consent,
    ConsentMode,
    ConsentStatus,
    OutboxEvent,
    OutboxKind,
)
from portability.consent.relay import OutboxRelay
from portability.consent.service import ConsentService
from portability.consent.store import create_store_engine, init_schema
from portability.consent.validation import ALL_CATEGORIES
from portability.consent.views import AppView, ConsentView

__all__ = [
    "ALL_CATEGORIES",
    "App",
    "AppView",
    "Consent",
    "ConsentError",
    "ConsentMode",
    "ConsentService",
    "ConsentStatus",
    "ConsentView",
    "DuplicateConsentError",
    "InvalidRequestError",
    "NotFoundError",
    "OutboxEvent",
    "OutboxKind",
    "OutboxRelay",
    "RelayError",
    "create_store_engine",
    "init_schema",
    "new_signing_secret",
]
