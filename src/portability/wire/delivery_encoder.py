"""A hand-written encoder of Delivery records, for the matcher's hot path.

fastavro took about 23 us to write a Delivery record of a typical change, 8 of them for the
fields before ``change`` (ids, sequence, timestamps, the rendering: fastavro walks the schema
for every record) and 16 for the change, which is the same for every consent a change goes
to. The matcher now writes the change's bytes once per change
(:meth:`~portability.wire.codec.AvroCodec.encode_body`) and each delivery as its fields
written here followed by those bytes: Avro writes a record as its fields one after another,
so a nested record's bytes are its bytes alone, and ``change`` is the schema's last field.

The encoder writes this build's schema (``schemas/delivery.avsc``) and refuses to be built for
one whose fields differ (a changed schema must change this encoder too); a test checks its
bytes against fastavro's for changes of every category.
"""

from __future__ import annotations

from typing import Any, Final

from portability.wire.avro_binary import avro_long, avro_string, repeated_string
from portability.wire.errors import WireFormatError

__all__ = ["DeliveryEncoder"]

# The schema's fields in its order, by name and how they are encoded.
_FIELDS: Final = (
    ("delta_id", "string"),
    ("consent_id", "string"),
    ("app_id", "string"),
    ("user_id", "string"),
    ("sequence", "long"),
    ("matched_at", "long"),
    ("policy_version", "string"),
    ("source_offset", "long"),
    ("snapshot_epoch", "long"),
    ("rendered", ("null", "bytes")),
    ("ledger_digest", ("null", "string")),
    ("change", "record"),
)
_SOME: Final = b"\x02"  # a union's second branch (zig-zag 1): the value, not null


class DeliveryEncoder:
    """Writes framed Delivery records (Confluent framing: magic byte, schema id)."""

    def __init__(self, schema: dict[str, Any], schema_id: int) -> None:
        """An encoder of ``schema`` (this build's Delivery schema, as registered as
        ``schema_id``).

        Raises:
            WireFormatError: ``schema``'s fields are not the ones this encoder writes.
        """
        fields = tuple((field["name"], _kind(field["type"])) for field in schema["fields"])
        if fields != _FIELDS:
            raise WireFormatError(
                f"the Delivery schema's fields {fields} are not those the hand-written "
                f"encoder writes {_FIELDS}: change portability.wire.delivery_encoder with it"
            )
        self._header = b"\x00" + schema_id.to_bytes(4, "big")

    def encode(
        self,
        *,
        delta_id: str,
        consent_id: str,
        app_id: str,
        user_id: str,
        sequence: int,
        matched_at_ms: int,
        policy_version: str,
        source_offset: int,
        snapshot_epoch: int,
        rendered: bytes,
        ledger_digest: str,
        change: bytes,
    ) -> bytes:
        """One delivery's framed bytes; ``change``: the change's own Avro bytes."""
        return b"".join(
            (
                self._header,
                avro_string(delta_id),
                avro_string(consent_id),
                repeated_string(app_id),
                avro_string(user_id),
                avro_long(sequence),
                avro_long(matched_at_ms),
                repeated_string(policy_version),
                avro_long(source_offset),
                avro_long(snapshot_epoch),
                _SOME,
                avro_long(len(rendered)),
                rendered,
                _SOME,
                avro_string(ledger_digest),
                change,
            )
        )


def _kind(avro_type: object) -> object:
    """How a field is encoded: a logical type as its type, a union by its branches, a named
    record (expanded or by name) as ``record``."""
    if isinstance(avro_type, list):
        return tuple(_kind(branch) for branch in avro_type)
    if isinstance(avro_type, dict):
        return avro_type["type"]
    if avro_type in ("string", "long", "bytes", "null", "int"):
        return avro_type
    return "record"  # a named type: change's AccountChange
