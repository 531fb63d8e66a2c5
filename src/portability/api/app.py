"""The consent and app authorisation API as a FastAPI application."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from sqlalchemy.engine import Engine

from portability.api.auth import Authenticator
from portability.api.delivery_status import DeliveryStatusBoard
from portability.api.dependencies import ApiContext
from portability.api.disclosure_routes import disclosures_router
from portability.api.errors import ERROR_RESPONSES, install_error_handlers
from portability.api.feed_routes import feed_router
from portability.api.ledger_routes import ledger_router
from portability.api.limits import BodyLimit
from portability.api.message_routes import messages_router
from portability.api.operator_status import OperatorStatus
from portability.api.ratelimit import RateLimiter
from portability.api.routes import router
from portability.api.status_page import status_router
from portability.consent import ConsentService
from portability.consent.transfer_requests import TransferStore
from portability.delivery.replay import Replayer
from portability.messages.actions import MessageActions
from portability.messages.disclosures import DisclosureReports
from portability.messages.feed_reader import FeedReader
from portability.ops.metrics import api_registry
from portability.sealing import SecretsKeys
from portability.settings import Settings
from portability.webhooks.egress import EgressPolicy

__all__ = ["create_app"]

_DESCRIPTION = """\
Apps register and pass review; the platform, acting for users in the EEA and the UK, grants
them consents; users and apps revoke them; everyone sees what is being delivered.

Authenticate with `Authorization: Bearer <token>`: the platform token, an operator token, or
an app's API key (`pk_...`, returned once at registration). An app asking for another app's
resources gets 404. Apps are limited to a number of requests a minute (429 with
`Retry-After`), and so is each client address for requests without a valid token
(registration, refused tokens). Request bodies are at most 1 MiB unless configured
otherwise (413). Bodies are typed strictly: `"3"` is not a number, `1` is not `true`, a time
is an ISO 8601 string with a time zone. Errors are JSON `{"error": code, "message": what to
fix}`.
"""

# Served from the fastapi-offline package, not a CDN: /docs works without the internet.
DOCS_ASSETS = "/docs/assets"


def create_app(
    settings: Settings,
    engine: Engine,
    *,
    status_board: DeliveryStatusBoard | None = None,
    rate_limiter: RateLimiter | None = None,
    client_rate_limiter: RateLimiter | None = None,
    replayer: Replayer | None = None,
    operator_status: OperatorStatus | None = None,
    message_actions: MessageActions | None = None,
    feed_reader: FeedReader | None = None,
) -> FastAPI:
    """The API on the consent store behind ``engine`` (its schema must be initialised).

    Args:
        settings: Tokens, rate limits, body size limit, secret overlap and the webhook URL
            rules (development mode, loopback and private addresses) are read from here.
        engine: The consent store.
        status_board: Delivery state per consent, kept by a reader of the delivery.status
            topic; default an empty board that reports unknown (null) delivery fields.
        rate_limiter: Default ``settings.api_rate_limit_per_minute`` per app.
        client_rate_limiter: Requests without a valid token, per client address; default
            ``settings.api_client_rate_limit_per_minute``.
        replayer: Runs replay requests (its owner starts and stops it); default one without
            Kafka, which answers replay requests 503 but still reads recorded replays.
        operator_status: The sources of the operator status page (``/status``) and of the
            lag and dead-letter metrics (``/metrics``); default the store and
            ``status_board`` only, without Kafka.
        message_actions: Resends and test events (its owner starts and stops it); default
            one without Kafka, which answers them 503 but still reads the message log.
        feed_reader: Reads poll-mode apps' feeds (its owner stops it); default one without
            Kafka, which answers 503.

    Returns:
        The application; OpenAPI at ``/openapi.json``, docs at ``/docs`` and ``/redoc``
        (their scripts and styles served locally, under ``/docs/assets``).
    """
    service = ConsentService(
        engine,
        webhook_policy=EgressPolicy.from_settings(settings),
        secrets=SecretsKeys.from_settings(settings),
    )
    limiter = rate_limiter or RateLimiter(settings.api_rate_limit_per_minute)
    api: FastAPI = FastAPIOffline(
        title="portability consent API",
        version="1.0.0",
        description=_DESCRIPTION,
        static_url=DOCS_ASSETS,
        # Swagger UI would send the document to validator.swagger.io for its badge.
        swagger_ui_parameters={"validatorUrl": None},
    )
    board = status_board or DeliveryStatusBoard()
    api.state.context = ApiContext(
        settings=settings,
        service=service,
        authenticator=Authenticator(settings, service, limiter, client_rate_limiter),
        status_board=board,
        replayer=replayer or Replayer(settings, engine, None),
        transfers=TransferStore(engine, expiry_s=settings.transfer_expiry_s),
        messages=message_actions or MessageActions(settings, engine, None),
    )
    status = operator_status or OperatorStatus(settings, engine, board)
    api.state.operator_status = status
    api.state.metrics_registry = api_registry(engine, status.lag, status.dead_letters)
    install_error_handlers(api)
    api.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    api.include_router(router)
    api.include_router(messages_router, prefix="/v1", responses=ERROR_RESPONSES)
    api.include_router(ledger_router, prefix="/v1", responses=ERROR_RESPONSES)
    api.state.disclosures = DisclosureReports(engine, service)
    api.include_router(disclosures_router)
    api.state.feed = feed_reader or FeedReader(None)
    api.include_router(feed_router)
    api.include_router(status_router)
    return api
