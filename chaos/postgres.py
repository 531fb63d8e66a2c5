"""A PostgreSQL server of one's own, to stop and start: the consent store's outages.

The machine's shared server must stay up for everything else, so outage tests and the chaos
suite start their own with Debian's ``initdb`` and ``pg_ctl`` in a temporary directory, on a
free port of 127.0.0.1, with trust authentication. PostgreSQL refuses to run as root: as root,
the commands run as the ``postgres`` user (``runuser``). ``tests/private_postgres.py`` wraps it
for pytest (skipping where it cannot run).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PrivatePostgres", "private_postgres"]

_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
_TIMEOUT_S = 60


def _binary(name: str) -> str | None:
    for folder in _BIN_DIRS:
        if (folder / name).exists():
            return str(folder / name)
    return shutil.which(name)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrivatePostgres:
    """One server in ``folder``; :meth:`stop` and :meth:`start` make and end an outage."""

    def __init__(self) -> None:
        initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise RuntimeError("initdb and pg_ctl are not installed")
        self._pg_ctl = pg_ctl
        self._user = None
        if os.geteuid() == 0:
            try:
                self._user = pwd.getpwnam("postgres")
            except KeyError as error:
                raise RuntimeError("running as root, and there is no postgres user") from error
        # Not under pytest's tmp_path: as root, that is a folder the postgres user cannot enter.
        self.folder = Path(tempfile.mkdtemp(prefix="portability-pg-"))
        self.data = self.folder / "data"
        self.port = _free_port()
        if self._user is not None:
            os.chown(self.folder, self._user.pw_uid, self._user.pw_gid)
        self._run(initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            self._pg_ctl,
            "-D",
            str(self.data),
            "-o",
            options,
            "-w",
            "start",
            "-l",
            str(self.folder / "server.log"),
        )

    def stop(self) -> None:
        """Stop at once (mode immediate: connections cut, as a crash or a network cut does)."""
        self._run(self._pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def _run(self, *command: str) -> None:
        runner = ["runuser", "-u", "postgres", "--"] if self._user is not None else []
        subprocess.run(  # noqa: S603  # the server's own binaries, arguments of ours
            [*runner, *command],
            check=True,
            capture_output=True,
            timeout=_TIMEOUT_S,
            cwd=self.folder,
        )

    def remove(self) -> None:
        """Stop the server if it runs, and delete its folder."""
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started server, stopped and removed on the way out.

    Raises:
        RuntimeError: the binaries or the ``postgres`` user are missing.
        subprocess.CalledProcessError: ``initdb`` or ``pg_ctl`` failed.
    """
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()
