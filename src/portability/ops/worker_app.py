"""The Faust application that hosts the pipeline's long-running roles.

Faust gives the processes their shell: worker lifecycle and signal handling, timers, and web
views (``/stats/``, ``/healthz/``, and ``/metrics`` for Prometheus). The hot loops (matcher,
delivery) run beneath it as services that consume in batches with aiokafka directly: the
matcher benchmark shows the per-event agent path is an order of magnitude slower (see README,
"Which part does what").
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import asdict
from typing import Any

import faust
from mode import Service

from portability.broker import free_port
from portability.consent import OutboxRelay, create_store_engine, init_schema
from portability.delivery import DeliveryWorker
from portability.matching import Matcher
from portability.ops.metrics import render, worker_registry
from portability.runtime import Runtime
from portability.settings import Settings
from portability.transfers.builder import TransferBuilder
from portability.transfers.state import StateView

__all__ = ["Role", "build_app"]

log = logging.getLogger(__name__)

_STATS_INTERVAL_S = 30.0


class Role(enum.StrEnum):
    MATCHER = "matcher"
    DELIVERY = "delivery"
    RELAY = "relay"
    TRANSFERS = "transfers"


class PipelineService(Service):
    """Opens the runtime and runs the selected roles until the worker stops."""

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
        self._relay_stop = asyncio.Event()

    async def on_start(self) -> None:
        self.runtime = await Runtime.open(self.settings, self.bootstrap)
        if Role.RELAY in self.roles:
            engine = create_store_engine(self.settings.resolved_database_url())
            init_schema(engine)
            self.relay = OutboxRelay(engine, self.runtime)
            await self.relay.start()
            self.add_future(self.relay.run(self._relay_stop))
        if Role.MATCHER in self.roles:
            self.matcher = Matcher(self.runtime)
            await self.matcher.start()
            self.add_future(self.matcher.run())
        if Role.DELIVERY in self.roles:
            self.worker = DeliveryWorker(self.runtime)
            await self.worker.start()
            self.add_future(self.worker.run())
        if Role.TRANSFERS in self.roles:
            # The current-state view and the builder of its users' one-time archives.
            engine = create_store_engine(self.settings.resolved_database_url())
            init_schema(engine)
            self.state_view = StateView(self.runtime)
            await self.state_view.start()
            self.add_future(self.state_view.run())
            self.builder = TransferBuilder(self.runtime, engine, self.state_view)
            self.add_future(self.builder.run(self._relay_stop))
        log.info("pipeline roles started: %s", ", ".join(sorted(self.roles)))

    async def on_stop(self) -> None:
        self._relay_stop.set()
        if self.matcher is not None:
            await self.matcher.stop()
        if self.worker is not None:
            await self.worker.stop()
        if self.relay is not None:
            await self.relay.stop()
        if self.state_view is not None:
            await self.state_view.stop()
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
                "intake": asdict(self.state_view.intake.stats),
                "ready": self.state_view.ready,
            }
        if self.builder is not None:
            document["transfers"] = asdict(self.builder.stats)
        return document


def build_app(settings: Settings, bootstrap: str, roles: set[Role]) -> faust.App:
    """A Faust app running ``roles`` against ``bootstrap``."""
    app = faust.App(
        f"portability-{'-'.join(sorted(roles))}",
        broker=f"kafka://{bootstrap}",
        web_host=settings.web_host,
        # 0 means "any free port"; Faust itself insists on 1..65535.
        web_port=settings.web_port or free_port(settings.web_host),
        web_enabled=True,
        autodiscover=False,
        store="memory://",
        topic_partitions=settings.partitions,
        broker_rebalance_timeout=settings.kafka_rebalance_timeout_ms / 1000,
        broker_session_timeout=settings.kafka_session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_ms / 1000,
    )
    pipeline = PipelineService(settings, bootstrap, roles, loop=None)
    app.add_dependency(pipeline)

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
            pipeline.runtime is not None
            and (pipeline.matcher is None or pipeline.matcher.ready)
            and (pipeline.state_view is None or pipeline.state_view.ready)
        )
        return web.json({"ok": healthy}, status=200 if healthy else 503)

    return app
