"""The error of the webhooks package: a body, a signature or a URL the contract refuses.

Every error the webhook contract raises on purpose (:class:`~portability.webhooks.parsing.
PayloadError`, :class:`~portability.webhooks.signing.SigningError`,
:class:`~portability.webhooks.egress.EgressRefusedError`) is one, so a caller that handles
the contract's refusals catches this one class.
"""

from portability.errors import PortabilityError

__all__ = ["WebhooksError"]


class WebhooksError(PortabilityError):
    """The webhook contract refuses a body, a signature, a secret or a URL."""
