"""Avro's binary encoding of a long and a string, for the hand-written encoders.

The hot paths write some records by hand instead of through fastavro (the delivery log's
entries and ledger heads: :mod:`portability.wire.delivery_log_encoder`; the matcher's
deliveries: :mod:`portability.wire.delivery_encoder`). These are the pieces they share; each
encoder's test checks its bytes against fastavro's.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

__all__ = ["SMALL_LONGS", "avro_long", "avro_string", "repeated_string"]

SMALL_LONGS: Final = [bytes(((n << 1),)) for n in range(64)]  # zigzag varints of 0..63


def avro_long(value: int) -> bytes:
    """Avro's zigzag varint of ``value``."""
    if 0 <= value < 64:
        return SMALL_LONGS[value]
    zigzag = (value << 1) ^ (value >> 63)
    # Offsets, sequences, timestamps: written without a loop up to four bytes (this runs per
    # delta), with one beyond.
    if zigzag < 0x80:
        return bytes((zigzag,))
    if zigzag < 0x4000:
        return bytes(((zigzag & 0x7F) | 0x80, zigzag >> 7))
    if zigzag < 0x200000:
        return bytes(((zigzag & 0x7F) | 0x80, ((zigzag >> 7) & 0x7F) | 0x80, zigzag >> 14))
    if zigzag < 0x10000000:
        return bytes(
            (
                (zigzag & 0x7F) | 0x80,
                ((zigzag >> 7) & 0x7F) | 0x80,
                ((zigzag >> 14) & 0x7F) | 0x80,
                zigzag >> 21,
            )
        )
    out = bytearray()
    while zigzag & ~0x7F:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


def avro_string(value: str) -> bytes:
    data = value.encode()
    return avro_long(len(data)) + data


@lru_cache(maxsize=4096)
def repeated_string(value: str) -> bytes:
    """A string that many records share (an app id, a category, a policy version, a topic)."""
    return avro_string(value)
