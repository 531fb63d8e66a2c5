"""One service over the consent store: apps and consents, each change through the outbox.

The API, the CLI, the demo and the tests hold one :class:`ConsentService` and call both
sides on it, so it stays one object; what it does lives in the modules of each side:

- :mod:`portability.consent.apps`: register, review, enable and re-point apps, rotate their
  signing secrets (:mod:`portability.consent.credentials` makes keys and secrets);
- :mod:`portability.consent.consents`: grant, revoke, end and expire consents;
- :mod:`portability.consent.validation`: every argument, checked before a transaction;
- :mod:`portability.consent.outbox_rows`: each change's outbox row, in its transaction.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from portability.consent.apps import Apps
from portability.consent.consents import Consents
from portability.sealing import SecretsKeys
from portability.webhooks.egress import EgressPolicy

__all__ = ["ConsentService"]


class ConsentService(Apps, Consents):
    """Registers apps and grants, revokes and expires consents.

    Methods are synchronous (call them from async code with ``asyncio.to_thread``); each is
    one transaction and returns frozen views, never ORM objects.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        webhook_policy: EgressPolicy | None = None,
        secrets: SecretsKeys | None = None,
    ) -> None:
        """Use ``engine``; the arguments are :class:`Apps`' (consents need only the store)."""
        Apps.__init__(self, engine, webhook_policy=webhook_policy, secrets=secrets)
        Consents.__init__(self, engine)
