"""Targeted reproductions of what the chaos suite found, on the same deployment of processes.

``python -m chaos.scenarios NAME [--out DIR]``; exit code 1 when the defect shows, 0 when not:

- ``resync-handover``: 30 consents with a snapshot; one of two workers is killed with SIGKILL
  and replaced, and the consents ask for a resync 1.5-5 s after the kill, while their
  partitions change hands. Every new snapshot must arrive.
- ``revoke-after-outage``: 10 consents without a snapshot; PostgreSQL is stopped for 6 s,
  each consent is revoked as soon as the API answers again, and the users keep changing
  their accounts every 100 ms. No delta of a change published after its consent's
  revocation was answered may arrive.

``--control`` runs the same without the fault (no kill, no outage).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from chaos.churn import Churn, ChurnApp
from chaos.cluster import Cluster, Timeouts
from chaos.injector import wait_for_line
from chaos.postgres import PrivatePostgres, private_postgres
from chaos.processes import Fleet
from chaos.records import CALLS, RECEIVED, JsonLines, read_lines
from portability.runtime import Runtime
from portability.settings import Settings
from portability.simulation import ChangeFactory, PlatformPublisher, user_ids

__all__ = ["main"]

_Scenario = Callable[["_Stage"], Awaitable[str | None]]


class _Stage:
    """A deployment (one matcher, ``workers`` workers), a publisher and a churn client."""

    def __init__(self, cluster: Cluster, postgres: PrivatePostgres, churn: Churn) -> None:
        self.cluster = cluster
        self.postgres = postgres
        self.churn = churn

    async def grant(self, app: ChurnApp, user: str, snapshot: bool) -> str:
        body = {
            "user_id": user,
            "user_region": "DE",
            "app_id": app.app_id,
            "categories": ["post"],
            "mode": "ongoing",
            "initial_snapshot": snapshot,
        }
        status, answer, _, _ = await self.churn.call("POST", "/v1/consents", "platform", body)
        if status != 201:
            raise RuntimeError(f"grant: {status} {answer}")
        consent: str = answer["consent_id"]
        return consent

    def received(self) -> list[dict[str, object]]:
        return [
            line["body"]
            for line in read_lines(self.cluster.folder / RECEIVED)
            if line["status"] == 200 and line["verified"]
        ]


async def _resync_handover(stage: _Stage, publisher: PlatformPublisher, kill: bool) -> str | None:
    users = user_ids(30)
    factory = ChangeFactory(users, seed=1)
    app = await stage.churn.register("a0")
    consents = {user: await stage.grant(app, user, snapshot=True) for user in users}
    stop = asyncio.Event()

    async def platform() -> None:
        while not stop.is_set():
            await publisher.publish([factory.random_change(u, "post") for u in users])
            await asyncio.sleep(0.3)

    publishing = asyncio.create_task(platform())
    await asyncio.sleep(15)  # every first snapshot delivered
    killed = time.monotonic()
    if kill:
        victim = stage.cluster.fleet.live("worker")[0]
        victim.kill()
        await asyncio.sleep(1)
        stage.cluster.restart(victim)
    for delay, group in zip(
        (1.5, 2.5, 3.0, 3.5, 4.0, 5.0), [users[i::6] for i in range(6)], strict=True
    ):
        await asyncio.sleep(max(0.0, killed + delay - time.monotonic()))
        for user in group:
            await stage.churn.call("POST", f"/v1/consents/{consents[user]}/snapshots", app.api_key)
    await asyncio.sleep(40)
    stop.set()
    await publishing
    epochs: dict[str, set[int]] = {consent: set() for consent in consents.values()}
    for body in stage.received():
        data = body.get("data")
        if body.get("type") == "portability.snapshot" and isinstance(data, dict) and data["last"]:
            epochs[data["consent_id"]].add(data["epoch"])
    stuck = sorted(consent for consent, got in epochs.items() if 2 not in got)
    if stuck:
        return f"{len(stuck)} of {len(epochs)} resync snapshots never came in 40 s: {stuck}"
    return None


async def _revoke_after_outage(
    stage: _Stage, publisher: PlatformPublisher, outage: bool
) -> str | None:
    users = user_ids(10)
    factory = ChangeFactory(users, seed=1)
    app = await stage.churn.register("a0")
    consents = {user: await stage.grant(app, user, snapshot=False) for user in users}
    await asyncio.sleep(3)
    if outage:
        await asyncio.to_thread(stage.postgres.stop)
        await asyncio.sleep(6)
        await asyncio.to_thread(stage.postgres.start)
    answered: dict[str, float] = {}
    for user in users:
        _, _, answered[user], _ = await stage.churn.call(
            "POST", f"/v1/consents/{consents[user]}/revoke", "platform"
        )
    sent: dict[str, tuple[str, float]] = {}
    for _ in range(40):
        batch = [factory.random_change(user, "post") for user in users]
        await publisher.publish(batch)
        sent |= {change["change_id"]: (change["user_id"], time.time()) for change in batch}
        await asyncio.sleep(0.1)
    await asyncio.sleep(10)
    leaks = []
    for body in stage.received():
        data = body.get("data")
        if body.get("type") != "portability.delta" or not isinstance(data, dict):
            continue
        for delta in data["deltas"]:
            user, at = sent.get(delta["change_id"], ("", 0.0))
            if user and at > answered[user]:
                leaks.append(f"{user} +{at - answered[user]:.2f} s")
    if leaks:
        return (
            f"{len(leaks)} deltas of changes published after the revocation was answered: {leaks}"
        )
    return None


async def _run(name: str, folder: Path, fault: bool) -> str | None:
    fleet = Fleet(folder / "logs")
    fleet.logs.mkdir(parents=True, exist_ok=True)
    with private_postgres() as postgres:
        try:
            cluster = Cluster(fleet, folder, postgres.url, Timeouts(), seed=1)
            await wait_for_line(cluster.start_broker(), "embedded broker on")
            await wait_for_line(cluster.start_receiver(), "receiver listening")
            await cluster.start("api").wait_healthy()
            roles = ["transfers", "matcher", "worker", "worker"]
            await asyncio.gather(*(cluster.start(role).wait_healthy() for role in roles))
            settings = Settings(kafka_bootstrap=cluster.bootstrap, partitions=6)
            runtime = await Runtime.open(settings, cluster.bootstrap)
            publisher = PlatformPublisher(runtime)
            await publisher.start()
            calls = JsonLines(folder / CALLS)
            try:
                async with Churn(
                    cluster.api_url,
                    cluster.tokens,
                    cluster.receiver_url,
                    cluster.secrets_file,
                    calls,
                    seed=1,
                ) as churn:
                    stage = _Stage(cluster, postgres, churn)
                    if name == "resync-handover":
                        return await _resync_handover(stage, publisher, fault)
                    return await _revoke_after_outage(stage, publisher, fault)
            finally:
                calls.close()
                await publisher.stop()
                await runtime.close()
        finally:
            await asyncio.to_thread(fleet.stop_all)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m chaos.scenarios", description=__doc__)
    parser.add_argument("name", choices=("resync-handover", "revoke-after-outage"))
    parser.add_argument("--control", action="store_true", help="the same without the fault")
    parser.add_argument("--out", type=Path, help="folder for records and logs (kept)")
    args = parser.parse_args(argv)
    folder = args.out or Path(tempfile.mkdtemp(prefix=f"chaos-{args.name}-"))
    found = asyncio.run(_run(args.name, folder, fault=not args.control))
    print(json.dumps({"scenario": args.name, "defect": found, "records": str(folder)}))
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
