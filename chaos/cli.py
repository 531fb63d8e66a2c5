"""The command: ``python -m chaos [--short] [--phase P] [--seed N] ...`` (``make chaos``).

Two phases, each a deployment of its own with its own table: **memory** (the broker in
memory, every fault kind but the broker's restart: the full load) and **durable** (the
broker on S3 storage served by moto, killed and restarted, at a light load: Tansu on moto
is slow, see docs/chaos.md). ``--short`` runs a one-minute memory phase (the tests').

Exit code 0 if the oracle found nothing in any phase, 1 naming each violation otherwise, 2 if
a deployment could not be made, 130 if interrupted (everything started is stopped).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType

from chaos.cluster import Timeouts
from chaos.evidence import load
from chaos.faults import BROKER_RESTART, DURABLE_KINDS, KINDS, SHORT_KINDS
from chaos.report import table
from chaos.run import Plan, run
from chaos.storage import Storage, durable_broker

__all__ = ["main"]


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    durable: bool  # the broker on S3 storage
    kinds: tuple[str, ...]
    duration_s: float
    users: int
    rate: float
    churn_every_s: float
    initial_grants: int
    drain_s: float
    matchers: int
    workers: int


MEMORY = Phase("memory", False, KINDS, 170.0, 200, 50.0, 0.4, 40, 120.0, 2, 2)
SHORT = Phase("short", False, SHORT_KINDS, 40.0, 60, 25.0, 0.5, 15, 60.0, 2, 2)
# One matcher and one worker: on moto, re-reading a partition's consents after a rebalance
# takes longer than any group timeout here, and two members then never settle (docs/chaos.md).
DURABLE = Phase("durable", True, DURABLE_KINDS, 60.0, 40, 10.0, 0.5, 15, 90.0, 1, 1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chaos",
        description="Run the pipeline's roles as processes under a seeded fault schedule and "
        "check what the receiving app got (docs/chaos.md).",
    )
    parser.add_argument("--short", action="store_true", help="~1 min, four faults (the tests')")
    parser.add_argument(
        "--phase", choices=("all", "memory", "durable"), default="all", help="which to run"
    )
    parser.add_argument("--seed", type=int, default=18, help="faults, churn and changes")
    parser.add_argument("--duration", type=float, help="seconds of traffic and faults")
    parser.add_argument("--users", type=int, help="platform users")
    parser.add_argument("--rate", type=float, help="account changes a second")
    parser.add_argument("--faults", help="comma-separated kinds instead of the phase's")
    parser.add_argument("--matchers", type=int, help="matcher processes at the start")
    parser.add_argument("--workers", type=int, help="worker processes at the start")
    parser.add_argument("--out", type=Path, help="folder for records and logs (kept)")
    parser.add_argument("--session-ms", type=int, default=3000, help="group session timeout")
    parser.add_argument("--heartbeat-ms", type=int, default=500, help="group heartbeat")
    parser.add_argument("--rebalance-ms", type=int, default=3000, help="group rebalance timeout")
    parser.add_argument(
        "--no-broker-restart", action="store_true", help="leave the durable phase out"
    )
    return parser


def _phases(args: argparse.Namespace) -> list[Phase]:
    chosen = (
        [SHORT]
        if args.short
        else {"all": [MEMORY, DURABLE], "memory": [MEMORY]}.get(args.phase, [DURABLE])
    )
    if args.no_broker_restart:
        chosen = [phase for phase in chosen if not phase.durable]
    overrides = {
        "duration_s": args.duration,
        "users": args.users,
        "rate": args.rate,
        "matchers": args.matchers,
        "workers": args.workers,
    }
    if args.faults:
        overrides["kinds"] = tuple(k.strip() for k in args.faults.split(",") if k.strip())
    given = {key: value for key, value in overrides.items() if value is not None}
    return [replace(phase, **given) for phase in chosen]


def _plan(args: argparse.Namespace, phase: Phase, folder: Path) -> Plan:
    return Plan(
        duration_s=phase.duration_s,
        users=phase.users,
        rate=phase.rate,
        churn_every_s=phase.churn_every_s,
        initial_grants=phase.initial_grants,
        kinds=phase.kinds,
        repeat=1,
        seed=args.seed,
        drain_s=phase.drain_s,
        folder=folder,
        matchers=phase.matchers,
        workers=phase.workers,
        timeouts=Timeouts(args.session_ms, args.heartbeat_ms, args.rebalance_ms),
    )


def _interrupted(_number: int, _frame: FrameType | None) -> None:
    # SIGTERM ends the run as Ctrl-C does (asyncio cancels the run, whose finally blocks stop
    # every process it started and the PostgreSQL server).
    os.kill(os.getpid(), signal.SIGINT)


def _run_phase(args: argparse.Namespace, phase: Phase, folder: Path) -> int:
    """Run one phase, print its table; its exit code."""
    folder.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    with durable_broker(folder, enabled=phase.durable) as storage:
        if phase.durable and not storage.available:
            print(f"chaos {phase.name} phase: {BROKER_RESTART} not run: {storage.reason}")
            return 0
        plan = _plan(args, phase, folder)
        try:
            outcome = asyncio.run(run(plan, {}, storage.env))
        except RuntimeError as error:
            print(f"chaos: the {phase.name} phase could not be made: {error}", file=sys.stderr)
            return 2
    header = _header(phase, plan, storage) + (
        f"\n{outcome.published} changes published, {outcome.calls} consent API calls"
    )
    report = table(load(folder), outcome.verdict, header, {}, outcome.exits)
    report += f"\n({time.monotonic() - began:.0f} s in all; drained in {outcome.drained_s:.0f} s)"
    (folder / "report.txt").write_text(report + "\n")
    print(report)
    print(f"records and logs: {folder}\n", flush=True)
    return 0 if outcome.verdict.ok else 1


def _header(phase: Phase, plan: Plan, storage: Storage) -> str:
    return (
        f"chaos {phase.name} phase: seed {plan.seed}, {plan.duration_s:g} s of traffic and "
        f"faults, {plan.rate:g} changes/s by {plan.users} users, {plan.matchers} matchers, "
        f"{plan.workers} workers; group session {plan.timeouts.session_ms} ms, heartbeat "
        f"{plan.timeouts.heartbeat_ms} ms, rebalance {plan.timeouts.rebalance_ms} ms; broker "
        f"storage: {storage.describe}"
    )


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the broker's outages: noise
    # A shell starts background jobs with SIGINT ignored: Ctrl-C and SIGTERM must still stop
    # the run (asyncio cancels it on SIGINT only while SIGINT has Python's default handler).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupted)
    folder = args.out or Path(tempfile.mkdtemp(prefix="chaos-"))
    phases = _phases(args)
    try:
        # One after the other (a list, not a generator: every phase runs whatever the first).
        codes = [_run_phase(args, phase, folder / phase.name) for phase in phases]
    except KeyboardInterrupt:
        print("chaos: interrupted; every process it started is stopped", file=sys.stderr)
        sys.exit(130)
    sys.exit(max(codes, default=0))
