"""The receiving app: a stock webhook endpoint with bad days, as its own process.

``python -m chaos.receiver --port P --secrets FILE --log FILE --seed S`` serves
``POST /webhooks/{name}``. Every request is verified with the unmodified ``standardwebhooks``
package against the secrets of app ``name`` in FILE (JSON ``{name: [whsec_...]}``, read again
when it changes: the churn writes a rotated secret there). Then, drawn from the seed, the app
misbehaves as real ones do: about 5% of requests answer 500, 2% 429 and 2% 503 with
``Retry-After: 1``, 3% stall 1-3 s before answering 200, and 0.5% stall past the pipeline's
request timeout. Each request is one JSON line in the log (``chaos.records.RECEIVED``): when
it arrived, its ``webhook-id``, whether it verified, the answer, and the body.

It imports nothing of the pipeline: what it records is what any app would see.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from chaos.records import JsonLines

__all__ = ["Behaviour", "main"]

_FAIL = 0.05
_TOO_MANY = 0.02
_UNAVAILABLE = 0.02
_STALL = 0.03
_STALL_PAST_TIMEOUT = 0.005


class Behaviour:
    """What the app answers: drawn per request from one seeded generator."""

    def __init__(self, seed: int, stall_past_s: float) -> None:
        self._random = random.Random(seed)
        self._stall_past_s = stall_past_s

    def next(self) -> tuple[int, float]:
        """(status, seconds to stall before answering)."""
        draw = self._random.random()
        for share, answer in (
            (_FAIL, (500, 0.0)),
            (_TOO_MANY, (429, 0.0)),
            (_UNAVAILABLE, (503, 0.0)),
            (_STALL_PAST_TIMEOUT, (200, self._stall_past_s)),
            (_STALL, (200, 1.0 + 2.0 * self._random.random())),
        ):
            if draw < share:
                return answer
            draw -= share
        return 200, 0.0


class _Secrets:
    """The apps' secrets, read again whenever the file changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._mtime = -1.0
        self._secrets: dict[str, list[str]] = {}

    def of(self, name: str) -> list[str]:
        mtime = self._path.stat().st_mtime if self._path.exists() else -1.0
        if mtime != self._mtime:
            self._secrets = json.loads(self._path.read_text()) if mtime >= 0 else {}
            self._mtime = mtime
        return self._secrets.get(name, [])


def _verified(secrets: list[str], body: bytes, headers: dict[str, str]) -> Any | None:
    for secret in secrets:
        try:
            return Webhook(secret).verify(body, headers)
        except WebhookVerificationError:
            continue
    return None


def make_app(secrets_path: Path, log: JsonLines, behaviour: Behaviour) -> web.Application:
    secrets = _Secrets(secrets_path)

    async def receive(request: web.Request) -> web.Response:
        arrived = time.time()
        name = request.match_info["name"]
        body = await request.read()
        headers = {key.lower(): value for key, value in request.headers.items()}
        event = _verified(secrets.of(name), body, headers)
        status, stall_s = (401, 0.0) if event is None else behaviour.next()
        if stall_s:
            await asyncio.sleep(stall_s)
        line: dict[str, Any] = {
            "at": arrived,
            "answered_at": time.time(),
            "app": name,
            "webhook_id": headers.get("webhook-id"),
            "verified": event is not None,
            "status": status,
            "body": event if event is not None else body.decode(errors="replace"),
        }
        log.write(line)
        extra = {"Retry-After": "1"} if status in (429, 503) else {}
        return web.Response(status=status, text="ok" if status == 200 else "no", headers=extra)

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/webhooks/{name}", receive)
    return app


async def _serve(args: argparse.Namespace) -> None:
    log = JsonLines(Path(args.log))
    app = make_app(Path(args.secrets), log, Behaviour(args.seed, args.stall_past_s))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    print(f"receiver listening on 127.0.0.1:{args.port}", flush=True)
    await stop.wait()
    await runner.cleanup()
    log.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m chaos.receiver", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secrets", required=True, help="JSON file {name: [whsec_...]}")
    parser.add_argument("--log", required=True, help="JSON lines file, one per request")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stall-past-s", type=float, default=6.0)
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
