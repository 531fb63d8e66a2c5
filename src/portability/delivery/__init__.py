"""Delivering deltas to apps' webhooks: signed, in order per consent, retried, dead-lettered."""

from portability.delivery.directory import Directory
from portability.delivery.offsets import OffsetTracker
from portability.delivery.sender import Outcome, WebhookSender
from portability.delivery.stats import DeliveryStats
from portability.delivery.status import StatusBoard
from portability.delivery.worker import DeliveryWorker

__all__ = [
    "DeliveryStats",
    "DeliveryWorker",
    "Directory",
    "OffsetTracker",
    "Outcome",
    "StatusBoard",
    "WebhookSender",
]
