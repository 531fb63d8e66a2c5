"""Archive building: time and peak memory for users with 1,000 / 10,000 / 100,000 records.

The current-state view's SQLite file is filled directly through its storage layer (the same
``PartitionStore.apply`` the view uses; records made by the simulated platform and rendered as
the view renders them), so no broker is needed. Each user also has neighbours in the file (a
quarter as many records again), as in a real partition.

Each build runs in a fresh Python subprocess, and its memory figure is the growth of the
process's resident set (RSS) during the build: the peak RSS while building (Linux ``VmHWM``,
reset just before through ``/proc/self/clear_refs``) minus the RSS just before it. RSS rather
than ``tracemalloc``: what must stay bounded is the process's memory, and much of it is not
Python objects (SQLite's page cache, zlib's buffers), which tracemalloc does not see; tracemalloc
would also slow the build down. A fresh process per build, so that one size's freed but
retained heap does not hide (or inflate) the next one's. Where ``clear_refs`` is unavailable
(not Linux) the peak is ``ru_maxrss``, which also counts the start-up, and the delta is then a
lower bound.

``with policy`` is the same streaming build with the shipped privacy policy applied to every
record (parsed, shaped, rendered again), as a transfer ships it. The baseline, measured in the
same run on the same files: the obvious implementation, which loads the user's records into a
list of dicts per category and writes each with ``json.dumps`` into the zip. Its memory grows
with the record count; the streaming builds' should not.

Printed last: ``bench archive: peak_mb_100k=N`` (the streaming build's peak growth, in MB, for
100,000 records).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.measurement import InvalidRunError
from benchmarks.reporting import print_table
from portability.privacy import load_policy
from portability.simulation import ChangeFactory
from portability.transfers import PartitionStore, Snapshot, write_archive
from portability.transfers.render import StoredRecord, state_change
from portability.wire.records import CATEGORIES

__all__ = ["main"]

SIZES = (1_000, 10_000, 100_000)
_TOPIC = "bench.account.changes"
_USER = "u00000001"
_NEIGHBOURS = [f"u{i:08d}" for i in range(2, 12)]
_GENERATED_AT = datetime(2026, 1, 1, tzinfo=UTC)
_FILL_CHUNK = 10_000
# Distinct record contents per category, at most (a quarter of the records, so that zlib
# meets about as much repetition as in real data).
_POOL = 4000
_PATHS = ("streaming", "with policy", "naive")


@dataclass(frozen=True, slots=True)
class Build:
    path: str
    records: int
    seconds: float
    peak_mb: float
    archive_bytes: int
    peak_exact: bool  # False: a lower bound (no clear_refs on this system)


def main(quick: bool = False) -> None:
    repeats = 1 if quick else 3
    results: list[Build] = []
    with tempfile.TemporaryDirectory(prefix="bench-archive-") as folder:
        for size in SIZES:
            database = _fill(Path(folder), size)
            for path in _PATHS:
                runs = [_run_child(path, database, Path(folder)) for _ in range(repeats)]
                for run in runs:
                    if run.records != size:
                        raise InvalidRunError(f"{path} archived {run.records} of {size} records")
                results.append(_median(runs))
    _report(results, repeats)


def _fill(folder: Path, size: int) -> Path:
    """A state file where the user has exactly ``size`` records (and neighbours have more)."""
    path = folder / f"state-{size}.sqlite"
    store = PartitionStore.open(path, _TOPIC, 0)
    try:
        offset = 0
        for user, count in ((_USER, size), *((n, size // 40) for n in _NEIGHBOURS)):
            records = _records(user, count, seed=size)
            for start in range(0, len(records), _FILL_CHUNK):
                chunk = [
                    dataclasses.replace(record, source_offset=offset + i)
                    for i, record in enumerate(records[start : start + _FILL_CHUNK])
                ]
                offset += len(chunk)
                store.apply(chunk, offset, 0)
    finally:
        store.close()
    return path


def _records(user: str, count: int, seed: int) -> list[StoredRecord]:
    """``count`` distinct records of ``user``: one profile, the rest spread over the other
    categories, with contents made by the simulated platform (a pool reused under new ids,
    which keeps filling fast)."""
    factory = ChangeFactory([user, *_NEIGHBOURS], seed=seed)
    pools: dict[str, list[StoredRecord]] = {}
    pool_size = min(_POOL, max(1, count // 8))
    for category in CATEGORIES:
        made = (state_change(factory.random_change(user, category), 0) for _ in range(pool_size))
        pools[category] = [r for r in made if isinstance(r, StoredRecord)]
    records = [pools["profile"][0]]
    many = [category for category in CATEGORIES if category != "profile"]
    ids = random.Random(seed)  # ids as random as the platform's, as zlib would meet them
    for index in range(count - 1):
        category = many[index % len(many)]
        pool = pools[category]
        records.append(
            dataclasses.replace(
                pool[index % len(pool)],
                record_id=f"{category}_{ids.getrandbits(48):012x}",
                change_id=str(uuid.UUID(int=ids.getrandbits(128))),
            )
        )
    return records


def _run_child(path: str, database: Path, folder: Path) -> Build:
    out = folder / f"{path}-{database.stem}.zip"
    command = [sys.executable, "-m", "benchmarks.archive", path, str(database), str(out)]
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(  # noqa: S603 - our own interpreter and module, fixed arguments
        command, cwd=root, capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        raise InvalidRunError(f"{path} build failed: {done.stderr.strip()[-2000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    out.unlink(missing_ok=True)
    return Build(path, **figures)


def _median(runs: list[Build]) -> Build:
    """The median time; the highest peak (memory is judged on its worst run)."""
    ordered = sorted(runs, key=lambda run: run.seconds)
    middle = ordered[len(ordered) // 2]
    return Build(
        middle.path,
        middle.records,
        statistics.median(run.seconds for run in runs),
        max(run.peak_mb for run in runs),
        middle.archive_bytes,
        all(run.peak_exact for run in runs),
    )


def _report(results: list[Build], repeats: int) -> None:
    exact = all(result.peak_exact for result in results)
    print(
        f"archive: one user's archive built from the state view's SQLite file, every category; "
        f"a fresh process per build, {repeats} run(s) each (median time, highest peak)"
    )
    print_table(
        ["records", "build", "seconds", "records/s", "peak RSS growth MB", "archive MB"],
        [
            [
                f"{r.records:,}",
                r.path,
                f"{r.seconds:.3f}",
                f"{r.records / r.seconds:,.0f}" if r.seconds else "-",
                f"{r.peak_mb:.1f}",
                f"{r.archive_bytes / 1e6:.2f}",
            ]
            for r in results
        ],
    )
    if not exact:
        print("(peaks are lower bounds: /proc/self/clear_refs is not available here)")
    streaming = {r.records: r for r in results if r.path == "streaming"}
    policed = {r.records: r for r in results if r.path == "with policy"}
    naive = {r.records: r for r in results if r.path == "naive"}
    largest = max(SIZES)
    print(
        f"baseline (same run): a fully loaded list per category, json.dumps into the zip, "
        f"grows {naive[largest].peak_mb:.1f} MB at {largest:,} records; streaming grows "
        f"{streaming[largest].peak_mb:.1f} MB ({streaming[min(SIZES)].peak_mb:.1f} MB at "
        f"{min(SIZES):,}), {policed[largest].peak_mb:.1f} MB with the privacy policy applied"
    )
    print(f"bench archive: peak_mb_100k={streaming[100_000].peak_mb:.1f}", flush=True)


# --- the child process: one build, measured ---------------------------------------------------


def _status_kb(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (Linux), e.g. VmRSS or VmHWM."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


def _maxrss_kb() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, kB elsewhere


def _build_streaming(database: Path, out: Path) -> int:
    with Snapshot(database, _USER, list(CATEGORIES)) as snapshot:
        result = write_archive(snapshot, out, generated_at=_GENERATED_AT)
    return sum(result.record_counts.values())


def _build_with_policy(database: Path, out: Path) -> int:
    """The streaming build through the shipped privacy policy, as transfers ship archives."""
    policy = load_policy()
    with Snapshot(database, _USER, list(CATEGORIES)) as snapshot:
        result = write_archive(snapshot, out, policy=policy, generated_at=_GENERATED_AT)
    return sum(result.record_counts.values())


def _build_naive(database: Path, out: Path) -> int:
    """The baseline: every record loaded, then each category dumped whole."""
    connection = sqlite3.connect(database)
    try:
        rows = connection.execute(
            "SELECT category, record_id, occurred_at, change_id, record FROM records "
            "WHERE user_id = ? ORDER BY category, record_id",
            (_USER,),
        ).fetchall()
    finally:
        connection.close()
    by_category: dict[str, list[dict[str, object]]] = {}
    for category, record_id, occurred_at, change_id, record in rows:
        by_category.setdefault(category, []).append(
            {
                "record_id": record_id,
                "category": category,
                "occurred_at": occurred_at,
                "change_id": change_id,
                "record": json.loads(record),
            }
        )
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for category, items in by_category.items():
            archive.writestr(f"{category}.json", json.dumps(items, ensure_ascii=False))
    return sum(len(items) for items in by_category.values())


def _child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.archive")
    parser.add_argument("path", choices=_PATHS)
    parser.add_argument("database", type=Path)
    parser.add_argument("out", type=Path)
    arguments = parser.parse_args(argv)
    build = {
        "streaming": _build_streaming,
        "with policy": _build_with_policy,
        "naive": _build_naive,
    }[arguments.path]
    gc.collect()
    exact = _reset_peak()
    before_kb = _status_kb("VmRSS") if exact else _maxrss_kb()
    started = time.perf_counter()
    records = build(arguments.database, arguments.out)
    seconds = time.perf_counter() - started
    peak_kb = _status_kb("VmHWM") if exact else _maxrss_kb()
    growth_kb = max(0, (peak_kb or 0) - (before_kb or 0))
    figures = {
        "records": records,
        "seconds": seconds,
        "peak_mb": growth_kb / 1024,
        "archive_bytes": os.path.getsize(arguments.out),
        "peak_exact": exact,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    _child(sys.argv[1:])
