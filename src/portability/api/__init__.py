"""The consent and app authorisation API (FastAPI): ``portability api`` serves it."""

from portability.api.app import create_app
from portability.api.delivery_status import DeliveryStatusBoard, follow_delivery_status
from portability.api.ratelimit import RateLimiter

__all__ = ["DeliveryStatusBoard", "RateLimiter", "create_app", "follow_delivery_status"]
