"""The ledger: each consent's deliveries form a hash chain that app and platform can compare.

Every event an app receives for a consent (each delta, each snapshot page, the removal, a
one-time transfer's download notice) extends the consent's chain, in the order the app
receives them, and carries the chain's value after it in its ``ledger`` field (a delta in
its object, a notification in ``data``). An app recomputes the chain from what it received and
compares: a delta missing, changed or out of order changes every value after it. The platform
answers the chain's head and counts (``GET /v1/consents/{consent_id}/ledger``), so both sides
can compare what was sent with what was received, however long ago.

All values are lowercase hex SHA-256 digests::

    start            = sha256("portability.ledger\\n" + consent_id)
    next             = sha256(previous + digest)          # both hex strings, concatenated
    digest of delta  = sha256(id + "\\n" + sequence + "\\n" + change digest)
    change digest    = sha256(canonical(the delta object without id, sequence and ledger))
    digest of event  = sha256(type + "\\n" + canonical(data without ledger))   # notifications

``canonical`` is JSON with keys sorted at every level, no whitespace, UTF-8, non-ASCII
characters as they are (``json.dumps(value, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`` in Python). Events an app receives twice (a redelivery: the same delta id
or webhook-id) extend the chain once, the first time. Deltas re-sent by a replay carry no
``ledger`` field and do not extend it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

__all__ = [
    "LEDGER_FIELD",
    "LedgerHead",
    "canonical",
    "chain",
    "change_digest",
    "change_digest_of_rendered",
    "delta_digest",
    "event_digest",
    "extend",
    "start",
]

LEDGER_FIELD: Final = "ledger"
_DELTA_OWN_KEYS: Final = frozenset({"id", "sequence", LEDGER_FIELD})


def _hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical(value: object) -> bytes:
    """JSON with sorted keys and no whitespace: the bytes both sides hash."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def start(consent_id: str) -> str:
    """The chain's value before the consent's first event."""
    return _hex(b"portability.ledger\n" + consent_id.encode())


def extend(head: str, digest: str) -> str:
    """The chain's value after an event of ``digest``."""
    return _hex((head + digest).encode())


def chain(before: str, digests: Iterable[str]) -> list[str]:
    """The chain's value after each of ``digests`` in turn, from its value ``before`` them:
    the values a request (or its resend) carries, one per event."""
    sha256 = hashlib.sha256  # extend(), inlined: the delivery worker runs this per delta
    values = []
    head = before
    for digest in digests:
        head = sha256((head + digest).encode()).hexdigest()
        values.append(head)
    return values


def change_digest(change_object: Mapping[str, Any]) -> str:
    """The digest of a delta's change part: the delta object without its own keys."""
    return _hex(
        canonical(
            {key: value for key, value in change_object.items() if key not in _DELTA_OWN_KEYS}
        )
    )


def change_digest_of_rendered(rendered: bytes) -> str:
    """:func:`change_digest` of a rendered change or delta object (JSON bytes)."""
    parsed = orjson.loads(rendered)
    if not isinstance(parsed, dict):
        raise TypeError("a rendered delta is a JSON object")
    return change_digest(parsed)


def delta_digest(delta_id: str, sequence: int, digest_of_change: str) -> str:
    """The digest a delta extends the chain with."""
    return _hex(f"{delta_id}\n{sequence}\n{digest_of_change}".encode())


def event_digest(event_type: str, data: Mapping[str, Any]) -> str:
    """The digest a notification (page, removal, download notice) extends the chain with."""
    body = {key: value for key, value in data.items() if key != LEDGER_FIELD}
    return _hex(event_type.encode() + b"\n" + canonical(body))


@dataclass(frozen=True, slots=True)
class LedgerHead:
    """A consent's chain after its latest event, and what it counted."""

    head: str
    events: int = 0
    deltas: int = 0
    pages: int = 0
    removals: int = 0
