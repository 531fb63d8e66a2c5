"""The reference receiving app: verifies, deduplicates, detects gaps, measures latency."""

from portability.receiver.app import WEBHOOK_PATH, ReceiverStats, ReceivingApp
from portability.receiver.server import run_receiver
from portability.receiver.tracking import SequenceRange

__all__ = ["WEBHOOK_PATH", "ReceiverStats", "ReceivingApp", "SequenceRange", "run_receiver"]
