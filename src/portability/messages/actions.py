"""Resend and test event: one attempt the API makes at an app's endpoint, logged like the
worker's.

A *resend* posts a logged message again, as it was: the same ``webhook-id`` and the same
body, built again from the records at its sources (:mod:`.source_reading`,
:mod:`.rebuilding`) and checked against the body's SHA-256 in the log, so an app can
deduplicate it and verify it like the first. A *test event* posts a new signed
``portability.ping`` (:func:`~portability.webhooks.ping.ping_event`), so an app can check its
endpoint before consents flow. Each makes one attempt, with the sender the worker uses,
produces its :class:`~portability.wire.delivery_log.DeliveryLogEntry` (origin ``resend`` or
``test``) to ``delivery.log`` for the log's writer, and answers the attempt's outcome.

What is refused, and why: an app that cannot receive (disabled, not approved, no webhook
URL); a message of a consent that ended, except the removal notice itself (an app must
receive no data after the consent ended, even data it was sent before); a message whose
records are gone or no longer build its body.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Final

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from sqlalchemy.engine import Engine

from portability.consent import ConsentService
from portability.consent.errors import NotFoundError
from portability.delivery.sender import Outcome, WebhookSender
from portability.messages.attempt_entries import AttemptResult, attempt_entry
from portability.messages.queries import MessageView, get_message
from portability.messages.rebuilding import Rebuilt, rebuild
from portability.messages.refusals import (
    ActionUnavailableError,
    MessageRefusedError,
    RecordsGoneError,
    what_instead,
)
from portability.messages.source_reading import read_sources
from portability.runtime import Runtime
from portability.sealing import SecretsKeys, UnsealError
from portability.settings import Settings
from portability.webhooks.ping import ping_event
from portability.wire.delivery_log import PING_EVENT, DeliveryLogEntry, Origin
from portability.wire.notifications import AUTHORIZATION_REMOVED
from portability.wire.records import AppRecord
from portability.wire.schemas import SchemaName

__all__ = ["AttemptResult", "MessageActions"]

log = logging.getLogger(__name__)

_EXCERPT: Final = 1024  # of a failed answer's body, as the worker logs it
_READ_TIMEOUT_S: Final = 10.0
_RESEND_COUNTS_KEPT: Final = 10_000


class MessageActions:
    """Resends and test events for one API process; it also holds the log's engine.

    Args:
        settings: Request timeouts and egress rules (the sender's), the secrets keys.
        engine: The consent store, where the log's tables, apps and consents are.
        runtime: Kafka and the codec; None in a process without Kafka, which then refuses
            every action (:class:`ActionUnavailableError`) but still reads the log.
        sender: Posts to the apps' endpoints; default one made from ``settings``.
        read_timeout_s: How long a resend waits for the broker to return its records.
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        runtime: Runtime | None,
        *,
        sender: WebhookSender | None = None,
        read_timeout_s: float = _READ_TIMEOUT_S,
    ) -> None:
        self.engine = engine
        self._runtime = runtime
        self._service = ConsentService(engine, secrets=SecretsKeys.from_settings(settings))
        self._sender = sender or WebhookSender(settings)
        self._read_timeout_s = read_timeout_s
        self._producer: AIOKafkaProducer | None = None
        # The last resend attempt made of each message here: the log's writer may not have
        # stored it yet when the next resend counts them.
        self._resends: OrderedDict[str, int] = OrderedDict()

    async def start(self) -> None:
        """Start the sender and the log's producer (nothing without Kafka)."""
        if self._runtime is None:
            return
        producer = self._runtime.kafka.producer("portability-api-messages", linger_ms=0)
        await producer.start()
        self._producer = producer
        await self._sender.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._sender.stop()
            await self._producer.stop()
            self._producer = None

    async def resend(self, app_id: str, message_id: str) -> AttemptResult:
        """Post the app's message ``message_id`` again, as it was, and log the attempt.

        Raises:
            MessageNotFoundError: No such message of ``app_id``.
            MessageRefusedError: The app, the consent or the message does not allow it.
            RecordsGoneError: The message's records are no longer on their topics.
            ActionUnavailableError: No Kafka here, or the broker did not answer in time.
        """
        runtime = self._kafka()
        message, attempts = await asyncio.to_thread(get_message, self.engine, app_id, message_id)
        if message.event_type == PING_EVENT:
            raise MessageRefusedError(
                "not_resendable",
                f"message {message_id!r} is a test event: send a new one (POST "
                f"/v1/apps/{app_id}/test-event) instead",
            )
        app = await asyncio.to_thread(self._sendable_app, app_id)
        await asyncio.to_thread(self._check_consent, message)
        rebuilt = await self._rebuilt(runtime, message)
        # Numbered without awaiting in between: concurrent resends take distinct numbers.
        logged = max((a.attempt for a in attempts if a.origin == "resend"), default=0)
        attempt = max(logged, self._resends.get(message_id, 0)) + 1
        self._remember(message_id, attempt)
        return await self._attempt(
            app, rebuilt.message_id, rebuilt.body, "resend", attempt, message, rebuilt
        )

    async def test_event(self, app_id: str) -> AttemptResult:
        """Post a new signed ``portability.ping`` to the app's endpoint and log the attempt.

        Raises:
            NotFoundError: No such app.
            MessageRefusedError: The app cannot receive (disabled, no webhook URL...).
            ActionUnavailableError: No Kafka here (the attempt could not be logged).
        """
        self._kafka()
        app = await asyncio.to_thread(self._sendable_app, app_id)
        message_id, body = ping_event(app_id, datetime.now(UTC))
        return await self._attempt(app, message_id, body, "test", 1, None, None)

    def _kafka(self) -> Runtime:
        if self._runtime is None or self._producer is None:
            raise ActionUnavailableError(
                "resends and test events need Kafka: this API server runs without "
                "PORTABILITY_KAFKA_BOOTSTRAP, so it can neither read messages nor log attempts"
            )
        return self._runtime

    def _sendable_app(self, app_id: str) -> AppRecord:
        """The app's endpoint and opened secrets, if it may receive now."""
        app = self._service.get_app(app_id)
        if not app.can_receive:
            raise MessageRefusedError(
                "app_disabled",
                f"app {app_id!r} cannot receive webhooks now (review {app.review_status}, "
                f"enabled={app.enabled}): an operator must approve and enable it first",
            )
        if not app.webhook_url:
            raise MessageRefusedError(
                "no_webhook_url",
                f"app {app_id!r} has no webhook URL: set one (PUT /v1/apps/{app_id}/webhook) first",
            )
        try:
            return app.to_sending_record()
        except UnsealError as error:
            raise MessageRefusedError(
                "secrets_unavailable",
                f"app {app_id!r}'s signing secrets cannot be opened here ({error}): an "
                "operator must give the API the key that sealed them",
            ) from error

    def _check_consent(self, message: MessageView) -> None:
        """Refuse a message of a consent that ended, but for the notice that it ended."""
        if not message.consent_id or message.event_type == AUTHORIZATION_REMOVED:
            return
        try:
            consent = self._service.get_consent(message.consent_id)
        except NotFoundError:
            status = "gone"
        else:
            if consent.is_active:
                return
            reason = f" ({consent.removal_reason})" if consent.removal_reason else ""
            status = f"{consent.status}{reason}"
        raise MessageRefusedError(
            "consent_ended",
            f"consent {message.consent_id!r} of message {message.message_id!r} is {status}: "
            "an app receives no data after its consent ended, not even data it was sent before",
        )

    async def _rebuilt(self, runtime: Runtime, message: MessageView) -> Rebuilt:
        """The message built again from its sources; refused unless it is the same body."""
        allowed = {
            runtime.topics.deliveries,
            runtime.topics.deliveries_retry,
            runtime.topics.notifications,
        }
        if not message.sources:
            raise RecordsGoneError(
                f"the log names no records for message {message.message_id!r}: it cannot be "
                f"built again; {what_instead(message.event_type, message.consent_id)}"
            )
        strange = sorted({s["topic"] for s in message.sources} - allowed)
        if strange:
            raise MessageRefusedError(
                "source_unreadable",
                f"message {message.message_id!r} names records on {', '.join(strange)}, not "
                "a delivery topic: it cannot be resent",
            )
        reader = runtime.kafka.reader("portability-api-resend")
        await reader.start()
        try:
            records = await read_sources(reader, message.sources, timeout_s=self._read_timeout_s)
        except RecordsGoneError as error:
            raise RecordsGoneError(
                f"{error}; {what_instead(message.event_type, message.consent_id)}"
            ) from error
        except KafkaError as error:
            raise ActionUnavailableError(
                f"reading the message's records failed ({error!r}): try again shortly",
                retriable=True,
            ) from error
        finally:
            await reader.stop()
        rebuilt = await rebuild(runtime.codec, message.event_type, records, message.ledger)
        if rebuilt.message_id != message.message_id or rebuilt.body_sha256 != message.body_sha256:
            raise MessageRefusedError(
                "body_mismatch",
                f"the records at message {message.message_id!r}'s sources build another body "
                f"(id {rebuilt.message_id}, sha256 {rebuilt.body_sha256}) than the one sent "
                f"(sha256 {message.body_sha256}): it cannot be resent as it was; "
                f"{what_instead(message.event_type, message.consent_id)}",
            )
        return rebuilt

    async def _attempt(
        self,
        app: AppRecord,
        message_id: str,
        body: bytes,
        origin: Origin,
        attempt: int,
        message: MessageView | None,
        rebuilt: Rebuilt | None,
    ) -> AttemptResult:
        attempted_at = datetime.now(UTC)
        started = time.monotonic()
        outcome = await self._sender.post_event(app, message_id, body)
        duration_ms = int((time.monotonic() - started) * 1000)
        result = AttemptResult(
            message_id=message_id,
            origin=origin,
            attempt=attempt,
            attempted_at=attempted_at,
            endpoint_url=app["webhook_url"],
            ok=outcome.ok,
            status=outcome.status,
            duration_ms=duration_ms,
            reason="" if outcome.ok else outcome.reason,
            response_excerpt="" if outcome.ok else outcome.body_excerpt[:_EXCERPT],
            logged=False,
        )
        entry = attempt_entry(app, result, body, message, rebuilt)
        logged = await self._log(entry, outcome)
        log.info(
            "%s of message %s to app %s: %s",
            origin,
            message_id,
            app["app_id"],
            "delivered" if outcome.ok else outcome.reason,
            extra={"app_id": app["app_id"], "message_id": message_id, "status": outcome.status},
        )
        return dataclasses.replace(result, logged=logged)

    async def _log(self, entry: DeliveryLogEntry, outcome: Outcome) -> bool:
        runtime = self._kafka()
        producer = self._producer
        assert producer is not None  # noqa: S101 - _kafka checked it
        try:
            value = runtime.codec.encode(SchemaName.DELIVERY_LOG_ENTRY, dict(entry))
            await producer.send_and_wait(
                runtime.topics.delivery_log, value, key=entry["message_id"].encode()
            )
        except KafkaError:
            log.exception(
                "the %s attempt at message %s (ok=%s) is missing from the message log",
                entry["origin"],
                entry["message_id"],
                outcome.ok,
                extra={"app_id": entry["app_id"], "message_id": entry["message_id"]},
            )
            return False
        return True

    def _remember(self, message_id: str, attempt: int) -> None:
        self._resends[message_id] = attempt
        self._resends.move_to_end(message_id)
        while len(self._resends) > _RESEND_COUNTS_KEPT:
            self._resends.popitem(last=False)
