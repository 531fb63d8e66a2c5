"""``portability changes``: publish account changes as the platform must, read them back, and
print the schema a producer uses. The logic is in :mod:`portability.ops.changes` and
:mod:`portability.ops.changes_tail`; this module parses flags and prints.

Settings, Kafka and error handling come from :mod:`portability.cli.root`; its console is read
when a command runs (``root.console``), not bound at import, so a swapped console is the one
used.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn

from portability.cli import root

if TYPE_CHECKING:
    from portability.ops.change_lines import LineRejection, PreparedRecord
    from portability.ops.changes import PublishCounts, SchemaInfo
    from portability.ops.changes_tail import TailRecord

__all__ = ["changes_app"]

changes_app = typer.Typer(
    help="Account changes on account.changes: publish them as the platform must (the producer "
    "contract), read them back, print the schema a producer registers.",
    no_args_is_help=True,
)


@changes_app.command("publish")
def publish(
    source: Annotated[
        str,
        typer.Argument(
            help="A file of JSON lines, one AccountChange each (see "
            "docs/publishing-account-changes.md); - or nothing reads standard input."
        ),
    ] = "-",
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Check and encode every line and print where each would go (partition, "
            "schema id, headers); send nothing and need no Kafka. With a schema registry "
            "configured, its ids are looked up by registering the schemas, as every pipeline "
            "process does (idempotent).",
        ),
    ] = False,
    max_line_bytes: Annotated[
        int,
        typer.Option(
            "--max-line-bytes",
            min=1024,
            help="A longer line is rejected without being read into memory.",
        ),
    ] = 1_048_576,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="With --dry-run: print each accepted line as a JSON object (key, partition, "
            "schema id, headers, value bytes in hex) instead of a line of text.",
        ),
    ] = False,
) -> None:
    """Check JSON lines against the producer contract and produce them to account.changes.

    Each line is checked (JSON; fields and types against the schema; a user id to key by;
    occurred_at within the plausible window around now; no field reserved for the
    pipeline), encoded with the schema registry's id, keyed by the UTF-8 user id, placed in
    the user's partition (murmur2, as Kafka's default partitioner), given the
    portability.audience header when it is activity on another user's post, and produced
    with acks=all. A rejected line is named on stderr with its number and why, and nothing
    of it is sent; the other lines are. Exits 1 if any line was rejected or not
    acknowledged, 2 without PORTABILITY_KAFKA_BOOTSTRAP (unless --dry-run).
    """
    from portability.ops.changes import PublishOptions, publish_changes

    settings = root.state.settings
    bootstrap = None if dry_run else root.bootstrap()
    options = PublishOptions(dry_run=dry_run, max_line_bytes=max_line_bytes)
    with ExitStack() as stack:
        stream, size = _open_source(source, stack)
        observer = _Printer(root.console, dry_run, as_json)
        if root.console.is_terminal:
            stack.enter_context(observer.show_progress(size))
        counts = root.run_kafka(publish_changes(settings, bootstrap, stream, options, observer))
    _summary(root.console, counts, dry_run)
    if counts.rejected or counts.failed:
        raise typer.Exit(1)


def _open_source(source: str, stack: ExitStack) -> tuple[IO[bytes], int | None]:
    """The input as bytes, and its size when it is a regular file (for the progress bar)."""
    if source == "-":
        return sys.stdin.buffer, None
    path = Path(source)
    try:
        stream = stack.enter_context(path.open("rb"))
    except OSError as error:
        raise typer.BadParameter(f"cannot read {source}: {error.strerror}") from error
    size = os.fstat(stream.fileno()).st_size
    return stream, size if path.is_file() else None


class _Printer:
    """Prints rejections on stderr, dry-run placements on stdout, and progress on a terminal."""

    def __init__(self, console: Console, dry_run: bool, as_json: bool) -> None:
        self._console = console
        self._dry_run = dry_run
        self._as_json = as_json
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def show_progress(self, size: int | None) -> Progress:
        """A live progress display on the (terminal) stderr console; enter it."""
        # Dry-run placements go to stdout: shown above the bar when stdout is the terminal
        # too, left alone when it is a pipe or a file (rich would send them to stderr).
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            console=self._console,
            transient=True,
            redirect_stdout=sys.stdout.isatty(),
        )
        self._task = self._progress.add_task("reading lines", total=size)
        return self._progress

    def rejected(self, rejection: LineRejection) -> None:
        self._say(f"line {rejection.line}: {rejection.reason}")

    def failed(self, rejection: LineRejection) -> None:
        self._say(f"line {rejection.line}: {rejection.reason}")

    def accepted(self, record: PreparedRecord) -> None:
        if not self._dry_run:
            return
        if self._as_json:
            print(json.dumps(record.as_dict()))
            return
        headers = " ".join(f"{name}={value.decode()}" for name, value in record.headers)
        print(
            f"line {record.line}: ok key={record.key.decode()!r} partition={record.partition} "
            f"schema_id={record.schema_id} bytes={len(record.value)}"
            + (f" {headers}" if headers else "")
        )

    def progress(self, counts: PublishCounts) -> None:
        if self._progress is None or self._task is None:
            return
        if self._dry_run:
            done = f"checked {counts.accepted}"
        else:
            done = f"sent {counts.accepted} (acknowledged {counts.sent})"
        self._progress.update(
            self._task,
            completed=counts.bytes_read,
            description=f"line {counts.lines}: {done}, rejected {counts.rejected}",
        )

    def _say(self, text: str) -> None:
        # Reasons quote the input: print them as they are, never as rich markup.
        self._console.print(text, markup=False, highlight=False, soft_wrap=True)


def _summary(console: Console, counts: PublishCounts, dry_run: bool) -> None:
    if dry_run:
        console.print(
            f"dry run: {counts.accepted} line(s) would be sent, {counts.rejected} rejected; "
            "nothing was sent",
            highlight=False,
        )
        return
    failed = ""
    if counts.failed:
        failed = f", failed {counts.failed} (not acknowledged"
        if counts.stopped_at is not None:
            failed += f"; reading stopped after line {counts.stopped_at}"
        failed += ")"
    console.print(
        f"sent {counts.sent}, rejected {counts.rejected}{failed}", highlight=False, markup=False
    )


@changes_app.command("tail")
def tail(
    user: Annotated[
        str | None,
        typer.Option("--user", help="Only this user's records: their partition, filtered by key."),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object a line: partition, offset, timestamp, key, headers, fault, "
            "reason and the decoded value (value_hex for one that does not decode).",
        ),
    ] = False,
    from_beginning: Annotated[
        bool,
        typer.Option(
            "--from-beginning",
            help="Start at each partition's first record (default: the newest --limit).",
        ),
    ] = False,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Then keep printing new records until Ctrl-C."),
    ] = False,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            "-n",
            min=1,
            help="Records to print before following: the newest N (default 20), or with "
            "--from-beginning the first N (default: all).",
        ),
    ] = None,
) -> None:
    """Decode and print the records on account.changes, with the pipeline's verdict on each.

    Reads without a consumer group (the pipeline's groups are not disturbed). By default it
    prints the newest 20 records, merged over the partitions by timestamp, and exits; a
    record the pipeline would refuse is printed with FAULT and the reason (the fault names of
    the dead-letter reasons), one that does not decode with its bytes in hex.
    """
    from portability.ops.changes_tail import TailOptions, tail_changes

    if user is not None:
        _check_user(user)
    options = TailOptions(user=user, from_beginning=from_beginning, follow=follow, limit=limit)

    def emit(record: TailRecord) -> None:
        print(json.dumps(record.as_dict()) if as_json else record.text(), flush=True)

    printed = root.run_kafka(
        tail_changes(root.state.settings, root.bootstrap(), options, emit), interrupted=0
    )
    if printed == 0:
        whose = f" of user {user!r}" if user is not None else ""
        root.console.print(f"no records{whose} on account.changes", markup=False)


def _check_user(user: str) -> None:
    """A user id that can be a key: not empty, and UTF-8 (argv may carry undecodable bytes)."""
    try:
        encoded = user.encode()
    except UnicodeEncodeError as error:
        raise typer.BadParameter("not valid UTF-8", param_hint="--user") from error
    if not encoded:
        raise typer.BadParameter("a user id is never empty", param_hint="--user")


@changes_app.command("schema")
def schema(
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print {topic, subject, schema_id, record, registry, compatibility, schema}.",
        ),
    ] = False,
    avsc: Annotated[
        bool,
        typer.Option(
            "--avsc", help="Print only the schema JSON (to save as an .avsc file or register)."
        ),
    ] = False,
) -> None:
    """The subject, schema id and schema JSON a producer of account.changes registers and uses.

    The id is the configured registry's (PORTABILITY_SCHEMA_REGISTRY_URL; unset: the embedded
    in-process registry, whose ids every pipeline process shares). Values are framed as
    magic byte 0, the 4-byte big-endian schema id, then the Avro binary body.
    """
    from portability.ops.changes import schema_info

    info: SchemaInfo = root.run_kafka(schema_info(root.state.settings))
    if as_json:
        print(json.dumps(info.as_dict(), indent=2))
        return
    pretty = json.dumps(json.loads(info.schema), indent=2)
    if avsc:
        print(pretty)
        return
    print(
        f"topic:         {info.topic}\n"
        f"subject:       {info.subject}\n"
        f"schema id:     {info.schema_id} ({info.registry} registry)\n"
        f"record:        {info.record}\n"
        "compatibility: BACKWARD\n"
        f"framing:       magic byte 0, schema id {info.schema_id} as 4 bytes big-endian, "
        "Avro binary body\n"
        "key:           the user id, UTF-8; partition: murmur2 (Kafka's default partitioner)\n"
        "schema:"
    )
    print(pretty)
