"""One chaos run: start the deployment, drive traffic and churn through the fault schedule,
let the pipeline drain, stop everything, and let the oracle judge.

Everything the suite starts (the private PostgreSQL server, the broker, every role, the
receiving app) is stopped on the way out, whatever ends the run (a failure, Ctrl-C,
SIGTERM): the PostgreSQL server by :func:`chaos.postgres.private_postgres`, the processes by
:meth:`chaos.processes.Fleet.stop_all`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from chaos.churn import Churn
from chaos.cluster import Cluster, Timeouts
from chaos.evidence import load
from chaos.faults import Planned, schedule
from chaos.injector import Injector, wait_for_line
from chaos.oracle import Verdict, judge
from chaos.platform import Platform
from chaos.postgres import PrivatePostgres, private_postgres
from chaos.processes import Fleet
from chaos.records import CALLS, FAULTS, PUBLISHED, JsonLines
from portability.runtime import Runtime
from portability.settings import Settings
from portability.simulation import user_ids

__all__ = ["Outcome", "Plan", "run"]

log = logging.getLogger("chaos")

_DRAINED = ("missing", "snapshot", "removal")  # what a pipeline still draining still owes
_QUIET_S = 3.0


@dataclass(frozen=True, slots=True)
class Plan:
    duration_s: float  # traffic and faults
    users: int
    rate: float  # changes a second
    churn_every_s: float
    initial_grants: int
    kinds: tuple[str, ...]
    repeat: int
    seed: int
    drain_s: float
    folder: Path
    timeouts: Timeouts
    matchers: int = 2
    workers: int = 2


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    skipped: dict[str, str]
    exits: dict[str, int]
    published: int
    calls: int
    drained_s: float


async def run(plan: Plan, skipped: dict[str, str], broker_env: dict[str, str]) -> Outcome:
    fleet = Fleet(plan.folder / "logs")
    fleet.logs.mkdir(parents=True, exist_ok=True)
    with private_postgres() as postgres:
        # The roles stop before their database does (a store gone first is an error they log).
        try:
            cluster = Cluster(fleet, plan.folder, postgres.url, plan.timeouts, plan.seed)
            cluster.broker_env = broker_env
            return await _run(plan, cluster, postgres, skipped)
        finally:
            await asyncio.to_thread(fleet.stop_all)


async def _start(plan: Plan, cluster: Cluster) -> None:
    broker = cluster.start_broker()
    await wait_for_line(broker, "embedded broker on", 60.0)
    await wait_for_line(cluster.start_receiver(), "receiver listening", 30.0)
    api = cluster.start("api")
    await api.wait_healthy()
    roles = ["transfers"] + ["matcher"] * plan.matchers + ["worker"] * plan.workers
    started = [cluster.start(role) for role in roles]
    await asyncio.gather(*(proc.wait_healthy() for proc in started))


async def _run(
    plan: Plan, cluster: Cluster, postgres: PrivatePostgres, skipped: dict[str, str]
) -> Outcome:
    began = time.monotonic()
    await _start(plan, cluster)
    log.info("chaos: deployment up in %.1f s", time.monotonic() - began)
    settings = Settings(kafka_bootstrap=cluster.bootstrap, partitions=6)
    runtime = await Runtime.open(settings, cluster.bootstrap)
    records = {name: JsonLines(plan.folder / name) for name in (PUBLISHED, CALLS, FAULTS)}
    injector = Injector(cluster, postgres, records[FAULTS], plan.seed)
    users = user_ids(plan.users)
    try:
        async with Churn(
            cluster.api_url,
            cluster.tokens,
            cluster.receiver_url,
            cluster.secrets_file,
            records[CALLS],
            plan.seed,
        ) as churn:
            for name in ("a0", "a1"):
                await churn.register(name)
            for _ in range(plan.initial_grants):
                await churn.grant(users)
            platform = Platform(runtime, users, plan.rate, plan.seed, records[PUBLISHED])
            platform.deleted = churn.deleted  # a deleted account changes no more
            planned = schedule(plan.kinds, plan.seed, 5.0, plan.duration_s - 5.0, plan.repeat)
            await _traffic(plan, platform, churn, injector, planned, users)
            drained_s = await _drain(plan, injector)
            published, calls = platform.published, churn.calls
    finally:
        for out in records.values():
            out.close()
        await runtime.close()
    verdict = judge(load(plan.folder))
    _crash_loops(injector, verdict)
    return Outcome(verdict, skipped, dict(injector.exits), published, calls, drained_s)


async def _traffic(
    plan: Plan,
    platform: Platform,
    churn: Churn,
    injector: Injector,
    planned: list[Planned],
    users: list[str],
) -> None:
    """Publishing, churn and faults for ``plan.duration_s``."""
    publishing = asyncio.create_task(platform.run())
    start = time.monotonic()

    async def churning() -> None:
        while time.monotonic() - start < plan.duration_s:
            await churn.step(users)
            await asyncio.sleep(plan.churn_every_s)

    async def faulting() -> None:
        for fault in planned:
            while time.monotonic() - start < fault.at_s:
                await injector.supervise()
                await asyncio.sleep(0.25)
            log.info("chaos: %s at %.0f s", fault.kind, time.monotonic() - start)
            await injector.inject(fault.kind)
        while time.monotonic() - start < plan.duration_s:
            await injector.supervise()
            await asyncio.sleep(0.25)

    try:
        await asyncio.gather(churning(), faulting())
    finally:
        platform.stop()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(publishing, 30.0)


async def _drain(plan: Plan, injector: Injector) -> float:
    """Seconds until the app has all it is owed and has been quiet a moment (bounded)."""
    began = time.monotonic()
    received = plan.folder / "received.jsonl"
    while time.monotonic() - began < plan.drain_s:
        await injector.supervise()
        quiet = time.time() - received.stat().st_mtime > _QUIET_S if received.exists() else True
        if quiet:
            verdict = await asyncio.to_thread(lambda: judge(load(plan.folder)))
            if not any(verdict.violations.get(kind) for kind in _DRAINED):
                break
        await asyncio.sleep(2.0)
    return time.monotonic() - began


def _crash_loops(injector: Injector, verdict: Verdict) -> None:
    for role, count in injector.exits.items():
        if count >= 3:
            verdict.add("crash loop", f"{role}: exited on its own {count} times")
