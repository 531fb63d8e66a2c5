"""The reference receiving app: verification, deduplication, gap detection and recovery."""

from portability.receiver.app import WEBHOOK_PATH, ReceivingApp
from portability.receiver.events import ReceivedEvent, ReceiverStats
from portability.receiver.recovery import RecoveryOptions, ReplayRequestRecord
from portability.receiver.server import run_receiver
from portability.receiver.tracking import SequenceRange
from portability.receiver.verification import MAX_TOLERANCE_S

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
