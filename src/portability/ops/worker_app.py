"""The Faust application that hosts the pipeline's long-running roles.

Faust gives the processes their shell: timers and web views (``/stats/``, ``/healthz/``, and
``/metrics`` for Prometheus). The hot loops (matcher, delivery) run beneath it as services that
consume in batches with aiokafka directly: the matcher benchmark shows the per-event agent path
is an order of magnitude slower (docs/architecture.md, "Which part does what"). Faust starts no
Kafka client of its own (:class:`_ShellOnly`), and the roles start only once its web server listens,
so a process that cannot serve its web views stops before it joins any consumer group.
:func:`serve_roles` runs the app until it is told to stop (see :mod:`portability.ops.lifecycle`).
"""

from __future__ import annotations

import asyncio
import enum
import errno
import logging
import socket
from dataclasses import asdict
from typing import Any, Final

import faust
from faust.app.base import BootStrategy
from mode import Service

from portability.broker import free_port
from portability.consent import OutboxRelay, create_store_engine, init_schema
from portability.delivery import DeliveryWorker
from portability.matching import Matcher
from portability.messages.writer import MessageLogWriter
from portability.ops.lifecycle import RoleFailedError, StartupError, bind_failure
from portability.ops.metrics import render, worker_registry
from portability.privacy import policy_source
from portability.runtime import Runtime, settle_collector
from portability.settings import Settings
from portability.transfers.builder import TransferBuilder
from portability.transfers.state import StateView

__all__ = ["Role", "build_app", "serve_roles"]

log = logging.getLogger(__name__)

_STATS_INTERVAL_S = 30.0
# How long a stop waits for the relay's and the builder's loops to see it and end their round.
_LOOPS_END_S: Final = 3.0
_BIND_ERRORS: Final = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})
_WEB: Final = ("PORTABILITY_WEB_HOST", "PORTABILITY_WEB_PORT")


class Role(enum.StrEnum):
    MATCHER = "matcher"
    DELIVERY = "delivery"
    RELAY = "relay"
    TRANSFERS = "transfers"
    MESSAGES = "messages"


class PipelineService(Service):
    """Opens the runtime and runs the selected roles until the app stops.

    A role's loop that ends on an error while nothing asked it to stop sets :attr:`failed`
    (the process then stops, exit code 1); one that ends on an error because the process is
    stopping (its consumer stopped under it) is not a failure.
    """

    mundane_level = "debug"  # mode's "Starting..."/"Stopping..." lines say nothing operators need

    def __init__(self, settings: Settings, bootstrap: str, roles: set[Role], **kwargs: Any):
        super().__init__(**kwargs)
        self.settings = settings
        self.bootstrap = bootstrap
        self.roles = roles
        self.runtime: Runtime | None = None
        self.matcher: Matcher | None = None
        self.worker: DeliveryWorker | None = None
        self.relay: OutboxRelay | None = None
        self.state_view: StateView | None = None
        self.builder: TransferBuilder | None = None
        self.messages: MessageLogWriter | None = None
        self.starting = False
        self.roles_started = False  # every role made and started (healthz waits for it)
        self.failed = asyncio.Event()
        self.failure: BaseException | None = None
        self._stopping = False
        self._relay_stop = asyncio.Event()
        self._store_loops: list[asyncio.Future[Any]] = []  # watch _relay_stop themselves

    async def on_start(self) -> None:
        self.starting = True
        if self.roles & {Role.MATCHER, Role.TRANSFERS}:
            # Before Kafka: a policy file that cannot be used stops the process at once.
            policy_source(self.settings)
        self.runtime = await Runtime.open(self.settings, self.bootstrap)
        if Role.RELAY in self.roles:
            engine = create_store_engine(self.settings.resolved_database_url())
            init_schema(engine)
            self.relay = OutboxRelay(engine, self.runtime)
            await self.relay.start()
            self._store_loops.append(self._guard("outbox relay", self.relay.run(self._relay_stop)))
        if Role.MATCHER in self.roles:
            self.matcher = Matcher(self.runtime)
            await self.matcher.start()
            self._guard("matcher", self.matcher.run())
        if Role.DELIVERY in self.roles:
            self.worker = DeliveryWorker(self.runtime)
            await self.worker.start()
            self._guard("delivery worker", self.worker.run())
        if Role.TRANSFERS in self.roles:
            # The current-state view and the builder of its users' one-time archives.
            engine = create_store_engine(self.settings.resolved_database_url())
            init_schema(engine)
            self.state_view = StateView(self.runtime)
            await self.state_view.start()
            self._guard("current-state view", self.state_view.run())
            self.builder = TransferBuilder(self.runtime, engine, self.state_view)
            self._store_loops.append(
                self._guard("transfer builder", self.builder.run(self._relay_stop))
            )
        if Role.MESSAGES in self.roles:
            engine = create_store_engine(self.settings.resolved_database_url())
            init_schema(engine)
            self.messages = MessageLogWriter(self.runtime, engine)
            await self.messages.start()
            self._store_loops.append(
                self._guard("message log writer", self.messages.run(self._relay_stop))
            )
        self.roles_started = True
        log.info("pipeline roles started: %s", ", ".join(sorted(self.roles)))

    def _guard(self, name: str, loop: Any) -> asyncio.Future[Any]:
        async def guarded() -> None:
            try:
                await loop
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if self._stopping:
                    log.debug("the %s ended while stopping: %r", name, error)
                    return
                log.exception("the %s stopped on an error", name)
                self.failure = RoleFailedError(f"the {name} stopped: {error!r}")
                self.failed.set()

        future: asyncio.Future[Any] = self.add_future(guarded())
        return future

    async def on_stop(self) -> None:
        self._stopping = True
        self._relay_stop.set()
        if self._store_loops:
            # The builder reads the state view: let its round end before the view stops.
            await asyncio.wait(self._store_loops, timeout=_LOOPS_END_S)
        if self.matcher is not None:
            await self.matcher.stop()
        if self.worker is not None:
            await self.worker.stop()
        if self.relay is not None:
            await self.relay.stop()
        if self.state_view is not None:
            await self.state_view.stop()
        if self.messages is not None:
            await self.messages.stop()
        if self.runtime is not None:
            await self.runtime.close()

    def stats(self) -> dict[str, Any]:
        document: dict[str, Any] = {"roles": sorted(self.roles)}
        if self.matcher is not None:
            document["matcher"] = {
                **self.matcher.stats.as_dict(),
                "ready": self.matcher.ready,
                "consents_held": self.matcher.consents_held,
            }
        if self.worker is not None:
            document["delivery"] = {**self.worker.stats.as_dict(), "pending": self.worker.pending}
        if self.state_view is not None:
            document["state"] = {
                **self.state_view.stats.as_dict(),
                "intake": self.state_view.intake.stats.as_dict(),
                "ready": self.state_view.ready,
            }
        if self.builder is not None:
            document["transfers"] = asdict(self.builder.stats)
        if self.messages is not None:
            document["messages"] = self.messages.stats.as_dict()
        if self.relay is not None:
            # Which relay publishes: "holder" names it on every relay of the store.
            document["relay"] = self.relay.status.as_dict()
        return document


class _ShellOnly(BootStrategy):
    """Faust as the process shell only: web views and timers, no Kafka client of its own.

    The roles consume with their own aiokafka clients and groups. Faust's consumer would join a
    group named after the app id with its own assignor: where that id is also a role's group
    (``portability-matcher``), the broker answers InconsistentGroupProtocol, an ERROR at every
    start; elsewhere it adds a group that rebalances whenever an instance starts or stops.
    """

    enable_kafka = False


class RolesApp(faust.App):
    """The Faust app of :func:`build_app`: starts the roles once its web server listens."""

    BootStrategy = _ShellOnly
    # Faust's own lifecycle lines ("Starting...", "Flush producer buffer...") under "faust",
    # which configure_logging keeps at WARNING, not under this module's name.
    logger = logging.getLogger("faust.app.roles")

    def __init__(self, pipeline: PipelineService, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipeline = pipeline

    async def on_start(self) -> None:
        # Not Faust's own, which makes its Kafka consumer (and that consumer's thread with an
        # event loop, never closed) only to attach the topic conductor to it: this app starts
        # no consumer.
        self.finalize()

    async def on_first_start(self) -> None:
        # Not Faust's own, which creates its table directories: this app keeps no table (the
        # memory store), so it needs no writable directory (a container's user may have none).
        pass

    async def on_started(self) -> None:
        await super().on_started()  # timers; the web server (a child service) already listens
        await self.add_runtime_dependency(self.pipeline)


def build_app(settings: Settings, bootstrap: str, roles: set[Role]) -> RolesApp:
    """A Faust app running ``roles`` against ``bootstrap``; its web views on web_host."""
    app_id = f"portability-{'-'.join(sorted(roles))}"
    pipeline = PipelineService(settings, bootstrap, roles, loop=None)
    app = RolesApp(
        pipeline,
        app_id,
        broker=f"kafka://{bootstrap}",
        web_host=settings.web_host,
        # Faust binds web_bind (all interfaces unless set); web_host only names the URL.
        web_bind=settings.web_host,
        # 0 means "any free port"; Faust itself insists on 1..65535.
        web_port=settings.web_port or free_port(settings.web_host),
        web_enabled=True,
        autodiscover=False,
        store="memory://",
        # Never created (see RolesApp.on_first_start); not "<app id>-data" in the working
        # directory should anything of Faust's look there.
        datadir=str(settings.data_dir / "faust" / app_id),
        topic_partitions=settings.partitions,
    )

    @app.timer(interval=_STATS_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def log_stats() -> None:
        log.info("pipeline stats", extra=pipeline.stats())

    @app.page("/stats/")
    async def stats_view(web: Any, request: Any) -> Any:
        return web.json(pipeline.stats())

    registry = worker_registry(
        lambda: pipeline.matcher,
        lambda: pipeline.worker,
        lambda: pipeline.builder,
        lambda: pipeline.state_view,
    )

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        # Collecting reads in-memory counters only: cheap enough for the event loop.
        body, content_type = render(registry, request.headers.get("Accept"))
        return web.bytes(body, headers={"Content-Type": content_type})

    @app.page("/healthz/")
    async def health_view(web: Any, request: Any) -> Any:
        healthy = (
            pipeline.roles_started
            and pipeline.runtime is not None
            and (pipeline.matcher is None or pipeline.matcher.ready)
            and (pipeline.state_view is None or pipeline.state_view.ready)
        )
        return web.json({"ok": healthy}, status=200 if healthy else 503)

    return app


async def serve_roles(
    settings: Settings, bootstrap: str, roles: set[Role], stop: asyncio.Event
) -> None:
    """Run ``roles`` until ``stop`` is set or a role fails, then stop everything started.

    Raises:
        StartupError: The web views cannot listen on web_host:web_port.
        RoleFailedError: A role's loop ended on an error.
        PortabilityError: A role could not start (broker, registry, policy file...).
    """
    app = build_app(settings, bootstrap, roles)
    try:
        await _start(app, settings)
        settle_collector()
        log.info(
            "web views on http://%s:%d (/healthz/, /stats/, /metrics)",
            settings.web_host,
            app.conf.web_port,
            extra={"web_port": app.conf.web_port},
        )
        waits = [
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(app.pipeline.failed.wait()),
            asyncio.ensure_future(app.wait_until_stopped()),  # mode ends it if a service crashed
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
    finally:
        stop.set()  # arms the watchdog of the stop (portability.ops.lifecycle)
        await app.stop()
    failure = app.pipeline.failure or app.crash_reason
    if failure is not None:
        raise failure if isinstance(failure, RoleFailedError) else RoleFailedError(str(failure))


async def _start(app: RolesApp, settings: Settings) -> None:
    try:
        await app.start()
    except OSError as error:
        # The roles start after the web server: an address error before them is its bind.
        if app.pipeline.starting or error.filename is not None:
            raise
        if not isinstance(error, socket.gaierror) and error.errno not in _BIND_ERRORS:
            raise
        failure = bind_failure(
            error, settings.web_host, app.conf.web_port, "the web views (/healthz/, /metrics)", _WEB
        )
        raise StartupError(failure) from None
