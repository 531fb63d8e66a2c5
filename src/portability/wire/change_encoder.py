"""A writer of AccountChange bodies generated from the schema, for the matcher's hot path.

The matcher writes each matched change's Avro bytes once (:meth:`AvroCodec.encode_body
<portability.wire.codec.AvroCodec.encode_body>`) and every consent's Delivery record around
them (:mod:`portability.wire.delivery_encoder`). fastavro takes 11-16 µs a change (figures
below): Cython, but generic (it walks the schema for every record, resolves a union by
validating the value against its branches, checks types with ``isinstance``).
:class:`ChangeEncoder` writes the same bytes with one function generated at
start from this build's parsed schema, as :mod:`portability.wire.delivery_head` generates its
reader: every field's code inline, in schema order, each type checked once and exactly. Timed
with ``timeit`` on 2,000 changes of ``ChangeFactory`` (two loaded cores, same runs, best of 9):
shaped and tagged as the matcher writes them, fastavro 11.3-11.6 µs a change, this writer
2.24-2.27; raw (untagged, with the platform's context, as the matcher floor's decoded ones),
15.5-16.0 against 2.69.

The generated writer's *fast path* writes: a value of exactly the Python type the schema asks
for (``str``; ``int`` within 32 bits for an int, 64 for a long; ``True``/``False``; ``bytes``;
``dict`` for a record or a map; ``list`` for an array; an enum's symbol; for a
``timestamp-millis``, an aware ``datetime`` through :func:`~portability.wire.records.to_millis`
or epoch milliseconds); a missing field as fastavro writes it (its default, else null where the
type names null); of a union, null for None, the one branch of the value's type, and of
several record branches the one whose full name the record carries under ``"-type"`` (as the
privacy shaping and :func:`~portability.wire.records.with_record_type` tag it) or, untagged
(a decoded change), the first branch naming most of its keys, which is fastavro's choice
whenever that branch takes the record.

It refuses anything else, and the whole change then goes through fastavro (the *fallback*),
which writes it or raises; its errors become :class:`WireFormatError` as in
:meth:`AvroCodec.encode <portability.wire.codec.AvroCodec.encode>`, and so does a long beyond 64
bits (fastavro's ``OverflowError``, which ``encode`` lets through as it is). The fallback
takes an untagged record that the branch naming most of its keys refuses (another branch may
take it), a naive ``datetime`` (fastavro takes it as local time, this project as UTC), what
fastavro converts (a ``bool`` or ``float`` for a long, a truthy value for a boolean outside a
union, a tuple for an array, a ``Mapping`` that is not a ``dict``, a union's tuple notation), a
tag naming no branch, and every error. So the bytes are fastavro's for any input: each check
of the fast path is as strict as fastavro's validation of a union's branch, or stricter.

A schema with a type the generator does not write (float, double, fixed, a logical type other
than ``timestamp-millis`` on a long, a recursive record) gets no writer (:meth:`ChangeEncoder.of`
is None): the codec uses fastavro. A union with two branches of one Python type (string and
enum, int and long, map and record) is written by the fast path only when null.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any, Final

import fastavro

from portability.wire.change_encoder_source import UnsupportedSchemaError, compiled_writer
from portability.wire.errors import WireFormatError

__all__ = ["ChangeEncoder"]

# What fastavro raises for a value it cannot write (OverflowError: a long beyond 64 bits, which
# the codec's fastavro path lets through as it is).
_FASTAVRO_ERRORS: Final = (ValueError, TypeError, KeyError, AttributeError, OverflowError)


class ChangeEncoder:
    """Writes AccountChange bodies (unframed Avro) as fastavro writes them, faster."""

    def __init__(self, schema: Any, label: str = "account_change") -> None:
        """The writer of ``schema`` (fastavro-parsed); ``label`` names it in errors.

        Raises:
            WireFormatError: The schema uses a type the generator does not write.
        """
        self._schema = schema
        self._label = label
        try:
            self._write = compiled_writer(schema)
        except UnsupportedSchemaError as error:
            raise WireFormatError(f"no generated writer for {label}: {error}") from error

    @classmethod
    def of(cls, schema: Any, label: str = "account_change") -> ChangeEncoder | None:
        """The writer of ``schema``; None if the generator cannot write it (use fastavro)."""
        try:
            return cls(schema, label)
        except WireFormatError:
            return None

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """``record``'s Avro bytes: fastavro's, by the fast path where it can.

        Raises:
            WireFormatError: fastavro cannot write ``record`` either.
        """
        try:
            return self._write(record)  # type: ignore[no-any-return]  # generated
        # Any failure (a refusal, a missing key, an unknown symbol, a character UTF-8 cannot
        # encode) hands the whole record to fastavro, whose answer is the reference: the
        # generated code only reads the record and returns nothing until every check passed.
        except Exception:  # noqa: BLE001, S110  # see above
            pass
        return self.fallback(record)

    def try_encode(self, record: Mapping[str, Any]) -> bytes | None:
        """``record``'s bytes by the fast path; None where it refuses (see :meth:`encode`)."""
        try:
            return self._write(record)  # type: ignore[no-any-return]  # generated
        except Exception:  # noqa: BLE001  # see encode
            return None

    def fallback(self, record: Mapping[str, Any]) -> bytes:
        """``record`` written by fastavro, whose errors become :class:`WireFormatError`."""
        buffer = io.BytesIO()
        try:
            fastavro.schemaless_writer(buffer, self._schema, record)
        except _FASTAVRO_ERRORS as error:
            raise WireFormatError(f"cannot encode {self._label}: {error}") from error
        return buffer.getvalue()
