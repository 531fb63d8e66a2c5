"""Injecting the schedule's faults into the running cluster, and supervising it meanwhile.

Each fault is one line of ``faults.jsonl``: its kind, the process it hit, when it began and
ended (the process replaced, resumed, the server back), how long the process took to serve
again, and whether it did (``survived``). Between faults the supervisor restarts any process
that exited on its own, as an operator's supervisor (systemd, Kubernetes) would, and counts
it: a role that keeps exiting is a crash loop, a failure of the run.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from chaos.cluster import Cluster
from chaos.faults import BROKER_RESTART, OUTAGE_S, PAUSE_S
from chaos.postgres import PrivatePostgres
from chaos.processes import Proc
from chaos.records import JsonLines

__all__ = ["Injector", "wait_for_line"]

_RESTART_AFTER_S = 1.0
_SCALED_FOR_S = 4.0


async def wait_for_line(proc: Proc, text: str, timeout_s: float = 60.0) -> float:
    """Seconds until ``text`` is in the process's log (bounded; fails if it exits first)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        if text in proc.log.read_text(errors="replace"):
            return time.monotonic() - began
        if not proc.running():
            raise RuntimeError(f"{proc.name} exited before {text!r}: see {proc.log}")
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{proc.name}: no {text!r} within {timeout_s:g} s: see {proc.log}")


class Injector:
    """Faults into ``cluster``, recorded in ``out``."""

    def __init__(
        self, cluster: Cluster, postgres: PrivatePostgres, out: JsonLines, seed: int
    ) -> None:
        self._cluster = cluster
        self._postgres = postgres
        self._out = out
        self._random = random.Random(seed)
        self.exits: Counter[str] = Counter()

    async def inject(self, kind: str) -> None:
        verb, _, role = kind.partition(" ")
        actions: dict[str, Callable[[str], Awaitable[None]]] = {
            "kill": self._kill,
            "pause": self._pause,
            "scale": self._scale,
        }
        if kind == "postgres outage":
            await self._record(kind, self._postgres_outage)
        elif kind == "broker pause":
            await self._record(kind, lambda: self._pause_proc(self._broker()))
        elif kind == BROKER_RESTART:
            await self._record(kind, self._broker_restart)
        else:
            # "scale matchers": the role is "matcher"; "kill transfers": "transfers".
            await actions[verb](role.removesuffix("s") if verb == "scale" else role)

    async def _record(self, kind: str, fault: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        began = time.time()
        try:
            facts = await fault()
        except RuntimeError as error:
            facts = {"survived": False, "error": str(error)}
        self._out.write({"kind": kind, "began": began, "ended": time.time()} | facts)

    def _broker(self) -> Proc:
        return self._cluster.fleet.live("broker")[0]

    def _pick(self, role: str) -> Proc:
        return self._random.choice(self._cluster.fleet.live(role))

    async def _kill(self, role: str) -> None:
        async def fault() -> dict[str, Any]:
            victim = self._pick(role)
            victim.kill()
            await asyncio.sleep(_RESTART_AFTER_S)
            replacement = self._cluster.restart(victim)
            healthy_s = await replacement.wait_healthy()
            return {"target": victim.name, "healthy_s": round(healthy_s, 2), "survived": True}

        await self._record(f"kill {role}", fault)

    async def _pause(self, role: str) -> None:
        await self._record(f"pause {role}", lambda: self._pause_proc(self._pick(role)))

    async def _pause_proc(self, victim: Proc) -> dict[str, Any]:
        victim.pause()
        await asyncio.sleep(PAUSE_S)
        victim.resume()
        healthy_s = await victim.wait_healthy()
        return {"target": victim.name, "healthy_s": round(healthy_s, 2), "survived": True}

    async def _scale(self, role: str) -> None:
        async def up() -> dict[str, Any]:
            added = self._cluster.start(role)
            healthy_s = await added.wait_healthy()
            return {"target": added.name, "healthy_s": round(healthy_s, 2), "survived": True}

        async def down() -> dict[str, Any]:
            oldest = self._cluster.fleet.live(role)[0]
            code = await asyncio.to_thread(oldest.terminate)
            self._cluster.fleet.forget(oldest)
            return {"target": oldest.name, "exit_code": code, "survived": code == 0}

        await self._record(f"scale up {role}s", up)
        await asyncio.sleep(_SCALED_FOR_S)
        await self._record(f"scale down {role}s", down)

    async def _postgres_outage(self) -> dict[str, Any]:
        await asyncio.to_thread(self._postgres.stop)
        await asyncio.sleep(OUTAGE_S)
        await asyncio.to_thread(self._postgres.start)
        return {"target": "postgres", "survived": True}

    async def _broker_restart(self) -> dict[str, Any]:
        broker = self._broker()
        broker.kill()
        await asyncio.sleep(_RESTART_AFTER_S)
        replacement = self._cluster.restart(broker)
        ready_s = await wait_for_line(replacement, "embedded broker on")
        return {"target": broker.name, "healthy_s": round(ready_s, 2), "survived": True}

    async def supervise(self) -> None:
        """Restart what exited on its own (counted by role)."""
        for proc in self._cluster.fleet.exited():
            code = proc.popen.returncode if proc.popen is not None else None
            self.exits[proc.role] += 1
            self._out.write(
                {"supervisor": "exited", "process": proc.name, "code": code, "at": time.time()}
            )
            replacement = self._cluster.restart(proc)
            if proc.role == "broker":
                await wait_for_line(replacement, "embedded broker on")
