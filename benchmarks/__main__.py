"""Run the benchmarks: ``python -m benchmarks [NAME ...] [--quick]`` (``make bench ARGS=...``).

Add a benchmark by adding its module's ``main`` to :data:`BENCHMARKS`. A benchmark's
``main(quick)`` prints what it measured and its ``bench NAME: ratio=R`` lines (one per figure
it defines, e.g. ``delivery_floor`` and ``delivery``), the benchmark's own name last.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback
from collections.abc import Callable

import benchmarks.archive
import benchmarks.delivery
import benchmarks.failover
import benchmarks.kafka_clients
import benchmarks.matcher
import benchmarks.registry_client
import benchmarks.revocation
import benchmarks.scaleout
from benchmarks.measurement import InvalidRunError

Benchmark = Callable[[bool], None]

BENCHMARKS: dict[str, Benchmark] = {
    "matcher": benchmarks.matcher.main,
    "delivery": benchmarks.delivery.main,
    "revocation": benchmarks.revocation.main,
    "archive": benchmarks.archive.main,
    "registry_client": benchmarks.registry_client.main,
    "scaleout": benchmarks.scaleout.main,
    "failover": benchmarks.failover.main,
    "clients": benchmarks.kafka_clients.main,
}


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--quick", action="store_true", help="a small smoke-size run")
    arguments = parser.parse_args(argv)
    unknown = [name for name in arguments.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = _arguments(argv)
    # Clients log rebalances and the like at INFO; the benchmark's own output is on stdout.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    failed: list[str] = []
    for name in arguments.names or list(BENCHMARKS):
        started = time.perf_counter()
        try:
            BENCHMARKS[name](arguments.quick)
        except InvalidRunError as error:
            print(f"{name}: {error}", file=sys.stderr)
            failed.append(name)
        except Exception:  # noqa: BLE001 - report and run the remaining benchmarks
            traceback.print_exc()
            failed.append(name)
        print(f"({name} took {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
