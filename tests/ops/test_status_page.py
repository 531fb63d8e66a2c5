"""The operator status page in headless Chromium, during a real workload.

A real pipeline (broker, store, relay, matcher, worker, receiver) delivers to two healthy
apps, to one whose endpoint answers 410 Gone (disabled) and to one that answers 500 until its
deltas are dead-lettered; an undecodable change is dead-lettered by the matcher. The API
process's pieces run as ``portability api`` runs them (lag sampler, dead-letter counter,
delivery-status reader, uvicorn). Once the failures show, ``/status.json`` is checked
exactly; then, while changes keep streaming, Chromium (Debian's ``chromium``) loads
``/status`` once to dump the DOM the checks read and once to save a screenshot to
``test-output/status-page.png`` at the repository root (ignored by git).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from aiohttp import web
from pydantic import SecretStr

from browser import run_chromium
from pipeline_harness import APP_A, APP_B, Pipeline, pipeline_settings, running_pipeline
from portability.api import create_app
from portability.api.delivery_status import DeliveryStatusBoard, follow_delivery_status
from portability.api.operator_status import OperatorStatus
from portability.broker import EmbeddedBroker
from portability.settings import Settings
from replay_harness import serve_api
from waiting import wait_until

OPERATOR_TOKEN = "operator-token-for-the-status-page"
SCREENSHOT = Path(__file__).resolve().parents[2] / "test-output" / "status-page.png"
APP_GONE = "app-gone"
APP_BROKEN = "app-broken"
CHROMIUM_TIMEOUT_S = 30.0
# A screenshot's pixels as the page lays them out.
_SCREEN_FLAGS = ("--hide-scrollbars", "--force-device-scale-factor=1")


@contextlib.asynccontextmanager
async def failing_endpoints() -> AsyncIterator[str]:
    """``/gone`` answers 410 Gone, ``/broken`` 500; yields the base URL."""

    async def gone(_request: web.Request) -> web.Response:
        return web.Response(status=410, text="this endpoint was removed")

    async def broken(_request: web.Request) -> web.Response:
        return web.Response(status=500, text="database is down")

    application = web.Application()
    application.router.add_post("/gone", gone)
    application.router.add_post("/broken", broken)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def status_settings(tmp_path: Path) -> Settings:
    # Sample lag four times a second so that a short workload draws a chart; a circuit that
    # never opens, so the broken app's deltas are dead-lettered within the test.
    return pipeline_settings(tmp_path).model_copy(
        update={
            "lag_sample_interval_s": 0.25,
            "lag_history_s": 20.0,
            "api_operator_token": SecretStr(OPERATOR_TOKEN),
            "delivery_circuit_failures": 1000,
        }
    )


HEALTHY = {"ua1": APP_A, "ua2": APP_A, "ub1": APP_B}
STREAM_EVERY_S = 0.2
STREAM_BURSTS = 150  # bounds the background workload (30 s); it is stopped long before


async def workload(p: Pipeline, status: OperatorStatus) -> dict[str, int]:
    """Deltas to every app, in bursts with lag sampled between them; deltas per healthy app."""
    consents = {
        user: await p.grant(user, app, ["post", "profile"]) for user, app in HEALTHY.items()
    }
    await p.grant("ug1", APP_GONE, ["post"])
    await p.grant("ux1", APP_BROKEN, ["post"])
    await p.wait_matcher_ready()
    # The failing apps' deltas in one go: one request each.
    await p.publish(p.changes("ug1", "post") + p.changes("ux1", "post", "post"))
    await p.publisher.publish_raw("ua1", b"this is not an Avro record")
    sent: dict[str, list[str]] = {user: [] for user in HEALTHY}
    for burst in range(3):
        changes = [
            c for user in HEALTHY for c in p.changes(user, *["post", "profile"] * (burst + 2))
        ]
        await p.publish(changes)
        for change in changes:
            sent[change["user_id"]].append(change["change_id"])
        await wait_for_samples(status, 2)
    for user, change_ids in sent.items():
        await p.wait_for_changes(consents[user].consent_id, change_ids, timeout_s=30.0)
    delivered: dict[str, int] = {}
    for user, app in HEALTHY.items():
        delivered[app] = delivered.get(app, 0) + len(sent[user])
    return delivered


async def stream(p: Pipeline, stop: asyncio.Event) -> None:
    """Keep changes coming for the healthy apps until ``stop`` (at most STREAM_BURSTS)."""
    for _ in range(STREAM_BURSTS):
        await p.publish([c for user in HEALTHY for c in p.changes(user, "post", "post")])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), STREAM_EVERY_S)
        if stop.is_set():
            return


async def wait_for_samples(status: OperatorStatus, count: int) -> None:
    sampler = status.lag
    assert sampler is not None
    target = sampler.samples + count
    await wait_until(lambda: sampler.samples >= target, f"{count} more lag samples", 10.0)


def settled(status: OperatorStatus) -> bool:
    """The failures show, every letter is counted, and lag is back to 0 (the gone app's
    parked delta left out: it waits on purpose)."""
    snapshot = status.snapshot()
    endpoints = {e.app_id: e.state for e in snapshot.endpoints}
    groups = {g.group: g for g in snapshot.groups}
    running = (status.settings.matcher_group, status.settings.delivery_group)
    return (
        endpoints.get(APP_GONE) == "disabled"
        and endpoints.get(APP_BROKEN) == "failing"
        and snapshot.dead_letters.letters == 3
        and status.settings.state_group in groups
        and all(group in groups and groups[group].lag == 0 for group in running)
        and groups[status.settings.delivery_group].parked > 0
    )


def row(dom: str, app_id: str, table: str) -> str:
    found_table = re.search(rf'<table id="{table}">.*?</table>', dom, re.S)
    assert found_table is not None, f"no table {table}"
    found = re.search(rf'<tr data-app="{re.escape(app_id)}">(.*?)</tr>', found_table[0], re.S)
    assert found is not None, f"no row of {app_id} in {table}"
    return found[1]


def cells(html_row: str) -> list[str]:
    """The text of each cell, tags removed and spaces collapsed."""
    found = re.findall(r"<td[^>]*>(.*?)</td>", html_row, re.S)
    return [" ".join(re.sub(r"<[^>]+>", " ", cell).split()) for cell in found]


async def test_status_page_in_chromium(
    broker: EmbeddedBroker, tmp_path: Path, chromium: str
) -> None:
    settings = status_settings(tmp_path)
    async with running_pipeline(settings, broker.bootstrap) as p, failing_endpoints() as bad:
        for app_id, path in ((APP_GONE, "/gone"), (APP_BROKEN, "/broken")):
            await asyncio.to_thread(
                p.service.register_app, f"Test {app_id}", f"{bad}{path}", app_id
            )
        board, stop = DeliveryStatusBoard(), asyncio.Event()
        status = OperatorStatus(settings, p.engine, board)
        loops = [
            *status.follow_kafka(broker.bootstrap, stop),
            follow_delivery_status(p.runtime, board, stop),
        ]
        tasks = [asyncio.create_task(loop) for loop in loops]
        try:
            api = create_app(settings, p.engine, status_board=board, operator_status=status)
            async with serve_api(api) as url:
                delivered = await workload(p, status)
                await wait_until(lambda: settled(status), "failures shown, lag back to 0")
                await check_json(url, delivered, settings)
                streaming = asyncio.create_task(stream(p, stop))
                await wait_for_samples(status, 4)
                dom = await load_page(chromium, tmp_path / "chromium", url)
                stop.set()
                await streaming
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    check_dom(dom, settings, delivered)


async def load_page(chromium: str, profile: Path, url: str) -> str:
    """The page's DOM as Chromium built it; the screenshot is saved on the way."""
    page = url.replace("http://", f"http://operator:{OPERATOR_TOKEN}@") + "/status?refresh=0"
    dom = await run_chromium(
        chromium, profile, *_SCREEN_FLAGS, "--dump-dom", page, timeout_s=CHROMIUM_TIMEOUT_S
    )
    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    size = "--window-size=1400,1900"
    await run_chromium(
        chromium,
        profile,
        *_SCREEN_FLAGS,
        size,
        f"--screenshot={SCREENSHOT}",
        page,
        timeout_s=CHROMIUM_TIMEOUT_S,
    )
    assert SCREENSHOT.stat().st_size > 20_000  # a rendered page, not a blank one
    return dom


async def check_json(url: str, delivered: dict[str, int], settings: Settings) -> None:
    """The settled state, exactly."""
    operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    async with httpx.AsyncClient(base_url=url) as client:
        refused = await client.get("/status.json")
        document = (await client.get("/status.json", headers=operator)).json()
    assert refused.status_code == 401
    assert document["health"] == "critical"  # a disabled endpoint
    apps = {app["app_id"]: app for app in document["apps"]}
    for app_id, count in delivered.items():
        assert apps[app_id]["delivered"] == count
        assert apps[app_id]["success_ratio"] == 1.0
        assert apps[app_id]["state"] == "ok"
    assert apps[APP_BROKEN]["dead_letters"] == 2
    assert apps[APP_BROKEN]["success_ratio"] == 0.0
    assert apps[APP_BROKEN]["state"] == "failing"
    assert apps[APP_GONE]["state"] == "disabled"
    endpoints = {endpoint["app_id"]: endpoint for endpoint in document["endpoints"]}
    assert endpoints[APP_GONE]["last_status"] == 410
    assert endpoints[APP_BROKEN]["last_response"] == "database is down"
    assert document["dead_letters"]["total"] == 3
    assert document["dead_letters"]["by_stage"] == {"delivery": 2, "matcher": 1}
    assert document["dead_letters"]["by_app"] == {APP_BROKEN: 2}
    assert document["consents"] == {"active": 5}
    groups = {group["group"]: group for group in document["groups"]}
    # The gone app's delta is parked for its new URL: the worker's group is PARKED, not
    # STALLED, and the parked record is no lag. No state view runs here: its group UNKNOWN.
    assert groups[settings.matcher_group]["status"] == "OK"
    delivery = groups[settings.delivery_group]
    assert delivery["status"] == "PARKED"
    assert "waits for its app's endpoint (disabled)" in delivery["reason"]
    assert delivery["parked"] >= 1
    assert groups[settings.state_group]["status"] == "UNKNOWN"
    for name in (settings.matcher_group, settings.delivery_group):
        assert len(groups[name]["history"]) >= 6
        assert groups[name]["history"][-1]["lag"] == 0


def check_dom(dom: str, settings: Settings, delivered: dict[str, int]) -> None:
    """What the page showed while changes kept coming."""
    assert 'id="health" class="badge health critical"' in dom
    assert dom.count('<svg class="lag-chart"') == 2
    for group in (settings.matcher_group, settings.delivery_group):
        lines = re.findall(
            rf'<polyline class="series" data-group="{group}" data-points="(\d+)"', dom
        )
        assert lines, f"no lag line of {group}"
        assert max(int(points) for points in lines) >= 10
        assert re.search(rf'<tr data-group="{group}">', dom)
    assert re.search(r'<table id="groups">.*?<th[^>]*>parked</th>', dom, re.S)
    active = {APP_A: "2", APP_B: "1"}
    for app_id, count in delivered.items():
        # state, active consents, delivered, dead letters, success, failing consents
        state, consents, shown, letters, success, failing = cells(row(dom, app_id, "apps-table"))[
            1:7
        ]
        assert (state, consents, letters, success, failing) == (
            "ok",
            active[app_id],
            "0",
            "100.0 %",
            "0",
        )
        assert int(shown.replace(" ", "")) >= count  # more arrived since
    gone = cells(row(dom, APP_GONE, "endpoints-table"))
    assert gone[1:3] == ["disabled", "1"]
    assert "HTTP 410" in gone[4]
    broken = cells(row(dom, APP_BROKEN, "endpoints-table"))
    assert broken[1:3] == ["failing", "1"]
    assert broken[4] == "HTTP 500: database is down"
    broken_app = cells(row(dom, APP_BROKEN, "apps-table"))
    assert broken_app[1:6] == ["failing", "1", "0", "2", "0.0 %"]
    counts = re.search(r'<p id="dead-letter-counts">(.*?)</p>', dom, re.S)
    assert counts is not None
    assert "by stage: delivery: 2, matcher: 1" in counts[1]
    assert f"by app: {APP_BROKEN}: 2" in counts[1]
