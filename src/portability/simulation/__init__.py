"""A simulated platform and population, for the demo, tests and benchmarks."""

from portability.simulation.platform import (
    ChangeFactory,
    PlatformPublisher,
    PrivacyMix,
    UserSettings,
    user_ids,
)

__all__ = ["ChangeFactory", "PlatformPublisher", "PrivacyMix", "UserSettings", "user_ids"]
