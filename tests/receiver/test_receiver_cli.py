"""``portability receiver``: its help, its refusals, and a real start, delivery and Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import pytest
from typer.testing import CliRunner

from portability.cli import app
from portability.webhooks.signing import generate_secret

from .test_receiver import APP_ID, CONSENT_ID, Sender, delivery

LINE_TIMEOUT_S = 15.0
_LISTENING = re.compile(r"receiver listening on (http://\S+)/webhooks/")


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No PORTABILITY_* variables; the root logger put back after the CLI configured it."""
    for key in list(os.environ):
        if key.startswith(("PORTABILITY_", "RECEIVER_")):
            monkeypatch.delenv(key)
    # Rich wraps error boxes to the terminal width; keep each message on one line.
    monkeypatch.setenv("COLUMNS", "250")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("clean_environment")
def test_help_explains_what_it_is_for() -> None:
    result = CliRunner().invoke(app, ["receiver", "--help"], catch_exceptions=False)

    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    for expected in (
        "reference receiver",
        "--app-id",
        "--secret",
        "RECEIVER_SECRET",
        "--api-url",
        "--api-key",
        "--tolerance-s",
        "--gap-grace-s",
        "--print-events",
        "replayed",
    ):
        assert expected in text, expected


@pytest.mark.usefixtures("clean_environment")
@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--api-url", "http://127.0.0.1:8080"], "--api-url and --api-key together"),
        (["--api-url", "ftp://x", "--api-key", "pk_x"], "http(s) URL"),
        (["--tolerance-s", "301"], "less than or equal to 300"),
    ],
)
def test_unusable_options_exit_2_and_say_why(extra: list[str], fragment: str) -> None:
    args = ["receiver", "--app-id", APP_ID, "--secret", generate_secret(), *extra]

    result = CliRunner().invoke(app, args)

    assert result.exit_code == 2, result.output
    assert fragment in " ".join(result.output.split())


@pytest.mark.usefixtures("clean_environment")
def test_a_malformed_secret_exits_2() -> None:
    args = ["receiver", "--app-id", APP_ID, "--secret", "not-a-secret", "--port", "0"]

    result = CliRunner().invoke(app, args)

    assert result.exit_code == 2, result.output
    assert "whsec_" in result.output


@dataclass
class Running:
    process: asyncio.subprocess.Process
    url: str
    stderr: list[str]

    async def line(self, stream: asyncio.StreamReader, into: list[str] | None = None) -> str:
        raw = await asyncio.wait_for(stream.readline(), LINE_TIMEOUT_S)
        assert raw, "the receiver closed its output"
        text = raw.decode()
        if into is not None:
            into.append(text)
        return text

    async def stderr_until(self, needle: str) -> str:
        assert self.process.stderr is not None
        for _ in range(200):
            text = await self.line(self.process.stderr, self.stderr)
            if needle in text:
                return text
        raise AssertionError(f"{needle!r} not logged; got {self.stderr}")


@pytest.fixture
async def running(clean_environment: None) -> AsyncIterator[tuple[Running, str]]:
    secret = generate_secret()
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTABILITY_")}
    env["RECEIVER_SECRET"] = secret  # the secret from the environment, not the command line
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "portability",
        "receiver",
        "--app-id",
        APP_ID,
        "--port",
        "0",
        "--stats-interval-s",
        "0.2",
        "--print-events",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stderr: list[str] = []
    try:
        probe = Running(process, "", stderr)
        listening = await probe.stderr_until("receiver listening on")
        match = _LISTENING.search(listening)
        assert match, listening
        yield Running(process, match.group(1), stderr), secret
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_it_receives_logs_and_stops_cleanly_on_ctrl_c(running: tuple[Running, str]) -> None:
    receiver, secret = running
    assert receiver.process.stdout is not None
    async with aiohttp.ClientSession() as session:
        sender = Sender(session, receiver.url, secret)
        status, _, _ = await sender.send([delivery(1), delivery(2)])
        assert status == 204
        bad, _, _ = await sender.send([delivery(3)], secrets=[generate_secret()])
        assert bad == 401

    printed = await receiver.line(receiver.process.stdout)
    assert f'"consent_id":"{CONSENT_ID}"' in printed
    event = await receiver.stderr_until("portability.delta for consent")
    assert f"{CONSENT_ID}: sequences 1-2" in event
    await receiver.stderr_until("receiver counters")

    receiver.process.send_signal(signal.SIGINT)
    final = await receiver.stderr_until("receiver final counters")
    code = await asyncio.wait_for(receiver.process.wait(), LINE_TIMEOUT_S)

    assert code == 0, "".join(receiver.stderr)
    assert "2 requests, 2 deltas, 0 snapshot pages (0 complete), 0 duplicates" in final
    assert "1 verification failures" in final
