"""Debian's headless Chromium for the tests of pages (the ``chromium`` fixture is in
``conftest.py``): one set of flags that keeps it off the network but for 127.0.0.1."""

from __future__ import annotations

import asyncio
from pathlib import Path

__all__ = ["run_chromium"]

# Without the background-networking flags Chromium calls Google's hosts, which this
# machine's closed network refuses, many at a time.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


async def run_chromium(chromium: str, profile: Path, *args: str, timeout_s: float = 30.0) -> str:
    """Run Chromium without blocking the loop (a server of the test may answer it from this
    loop); its stdout, once it exited 0 within ``timeout_s``."""
    process = await asyncio.create_subprocess_exec(
        chromium,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
    return stdout.decode()
