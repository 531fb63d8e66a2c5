"""The reference receiving app: verification, deduplication, gap detection and recovery."""

from portability.receiver.app import (
    MAX_TOLERANCE_S,
    WEBHOOK_PATH,
    ReceivedEvent,
    ReceiverStats,
    ReceivingApp,
)
from portability.receiver.recovery import RecoveryOptions, ReplayRequestRecord
from portability.receiver.server import run_receiver
from portability.receiver.tracking import SequenceRange

__all__ = [
    "MAX_TOLERANCE_S",
    "WEBHOOK_PATH",
    "ReceivedEvent",
    "ReceiverStats",
    "ReceivingApp",
    "RecoveryOptions",
    "ReplayRequestRecord",
    "SequenceRange",
    "run_receiver",
]
