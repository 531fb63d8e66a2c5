"""The command: ``python -m chaos [--short] [--duration S] [--seed N] ...`` (``make chaos``).

Prints the table (faults by kind, survived, recovery, latency under faults, the oracle's
checks) and exits 0 if the oracle found nothing, 1 naming each violation otherwise, 2 if the
run itself could not be made (a deployment that did not start).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from chaos.cluster import Timeouts
from chaos.evidence import load
from chaos.faults import BROKER_RESTART, KINDS, SHORT_KINDS
from chaos.report import table
from chaos.run import Plan, run
from chaos.storage import durable_broker

__all__ = ["main", "plan_of"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chaos",
        description="Run the pipeline's roles as processes under a seeded fault schedule and "
        "check what the receiving app got (docs/chaos.md).",
    )
    parser.add_argument("--short", action="store_true", help="~1 min, four faults (the tests')")
    parser.add_argument("--duration", type=float, help="seconds of traffic and faults")
    parser.add_argument("--seed", type=int, default=18, help="faults, churn and changes")
    parser.add_argument("--users", type=int, help="platform users")
    parser.add_argument("--rate", type=float, help="account changes a second")
    parser.add_argument("--out", type=Path, help="folder for records and logs (kept)")
    parser.add_argument("--session-ms", type=int, default=3000, help="group session timeout")
    parser.add_argument("--heartbeat-ms", type=int, default=500, help="group heartbeat")
    parser.add_argument(
        "--faults", help="comma-separated kinds to inject instead of the schedule's"
    )
    parser.add_argument("--matchers", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--no-broker-restart",
        action="store_true",
        help="keep the broker in memory and leave its restart out",
    )
    return parser


def plan_of(args: argparse.Namespace, folder: Path, with_restart: bool) -> Plan:
    kinds: tuple[str, ...] = SHORT_KINDS if args.short else KINDS
    if args.faults:
        kinds = tuple(kind.strip() for kind in args.faults.split(",") if kind.strip())
    if not with_restart:
        kinds = tuple(kind for kind in kinds if kind != BROKER_RESTART)
    return Plan(
        duration_s=args.duration or (40.0 if args.short else 170.0),
        users=args.users or (60 if args.short else 200),
        rate=args.rate or (25.0 if args.short else 50.0),
        churn_every_s=0.5 if args.short else 0.4,
        initial_grants=15 if args.short else 40,
        kinds=kinds,
        repeat=1,
        seed=args.seed,
        drain_s=60.0 if args.short else 120.0,
        folder=folder,
        matchers=args.matchers,
        workers=args.workers,
        timeouts=Timeouts(args.session_ms, args.heartbeat_ms, max(3000, args.session_ms)),
    )


def _interrupted(number: int, _frame: FrameType | None) -> None:
    # SIGTERM ends the run as Ctrl-C does: through every finally, stopping what it started.
    raise KeyboardInterrupt(signal.Signals(number).name)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the broker's outages: noise
    signal.signal(signal.SIGTERM, _interrupted)
    folder = args.out or Path(tempfile.mkdtemp(prefix="chaos-"))
    folder.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    with durable_broker(folder, enabled=not args.no_broker_restart) as storage:
        skipped = {} if storage.available else {BROKER_RESTART: storage.reason}
        plan = plan_of(args, folder, storage.available)
        try:
            outcome = asyncio.run(run(plan, skipped, storage.env))
        except RuntimeError as error:
            print(f"chaos: the run could not be made: {error}", file=sys.stderr)
            sys.exit(2)
    header = (
        f"chaos run: seed {plan.seed}, {plan.duration_s:g} s of traffic and faults, "
        f"{outcome.published} changes published by {plan.users} users, {outcome.calls} "
        f"consent API calls, drained in {outcome.drained_s:.0f} s, "
        f"{time.monotonic() - began:.0f} s in all; sessions {plan.timeouts.session_ms} ms, "
        f"heartbeat {plan.timeouts.heartbeat_ms} ms; broker storage: {storage.describe}"
    )
    report = table(load(folder), outcome.verdict, header, outcome.skipped, outcome.exits)
    (folder / "report.txt").write_text(report + "\n")
    print(report)
    print(f"records and logs: {folder}")
    sys.exit(0 if outcome.verdict.ok else 1)
