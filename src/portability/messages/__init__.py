"""The message log: every webhook message, its attempts and the records it disclosed.

The delivery worker (and the API, for resends and test events) emits one ``delivery.log``
entry per attempt; this package's writer stores them in the consent store's database, and its
queries answer the apps' message log and the users' disclosure reports.
"""

from portability.messages.errors import MessagesError
from portability.messages.models import (
    ATTEMPTS_TABLE,
    DELIVERED,
    DISCLOSED_RECORDS_TABLE,
    FAILING,
    LEDGERS_TABLE,
    MESSAGE_TABLE_NAMES,
    MESSAGES_TABLE,
    AttemptRow,
    DisclosedRecordRow,
    LedgerRow,
    MessageRow,
)

__all__ = [
    "ATTEMPTS_TABLE",
    "DELIVERED",
    "DISCLOSED_RECORDS_TABLE",
    "FAILING",
    "LEDGERS_TABLE",
    "MESSAGES_TABLE",
    "MESSAGE_TABLE_NAMES",
    "AttemptRow",
    "DisclosedRecordRow",
    "LedgerRow",
    "MessageRow",
    "MessagesError",
]
