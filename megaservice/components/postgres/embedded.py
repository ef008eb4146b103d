"""Using the embedded PostgreSQL from a service: join the running one, or start one that outlives no one.

    lease = join_or_start(data_dir, timeout=60.0)     # blocks; in a worker thread from async code
    psycopg.connect(lease.conninfo)
    lease.release()                                   # or exit: the kernel releases it too

The rule: a service takes a lease (a shared lock on `clients.lock`) and looks for a server that
answers on the data directory's socket. If there is one it joins it, whoever runs it (`megaservice
serve postgres`, `megaservice up`, or an earlier service). If none answers and no process owns
the data directory, it starts an owner in the background (`daemon.py --idle-stop S --detach`); two
services starting at once start two, and the owner lock keeps one. That owner stops the server S
seconds after the last lease was released (every service stopped or died), so nothing runs on for
ever, and the data stays in the data directory for the next start.
"""

import contextlib
import fcntl
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from megaservice.components.postgres.cluster import Cluster
from megaservice.components.postgres.owner import open_lock, try_lock

__all__ = ["EmbeddedUnavailable", "Lease", "accepting_connections", "is_ready", "join_or_start", "wait_ready"]

IDLE_STOP = 30.0
"""Seconds an auto-started server runs on after the last service using it went away."""


class EmbeddedUnavailable(Exception):
    """The embedded PostgreSQL did not answer in time (the message says why, with its log's last lines)."""

    def __init__(self, message: str, location: str) -> None:
        super().__init__(message)
        self.location = location


@dataclass(slots=True)
class Lease:
    """A service's use of the embedded server: while it is held, an auto-started server keeps running."""

    cluster: Cluster
    fd: int | None = field(repr=False)

    @property
    def conninfo(self) -> str:
        """How to connect (libpq connection string, through the Unix socket)."""
        return self.cluster.conninfo()

    @property
    def location(self) -> str:
        """How errors name the server."""
        return self.cluster.location

    def release(self) -> None:
        """Let the server stop once no one else uses it (an auto-started one; `serve postgres` runs on)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def join_or_start(data_dir: Path, timeout: float = 60.0, idle_stop: float = IDLE_STOP) -> Lease:
    """A lease on the data directory's server, started if none runs (see the module docstring); blocks.

    Raises:
        EmbeddedUnavailable: no server answered within `timeout` seconds.
    """
    cluster = Cluster.of(data_dir)
    cluster.root.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    fd = open_lock(cluster.clients_lock)
    try:
        while not try_lock(fd, fcntl.LOCK_SH):  # held exclusively while an idle server stops
            _wait_or_fail(cluster, deadline, timeout)
        started = False
        while not cluster.answering():
            if not started and not _owned(cluster):
                _start_owner(cluster, data_dir, idle_stop)
                started = True
            _wait_or_fail(cluster, deadline, timeout)
    except BaseException:
        os.close(fd)
        raise
    return Lease(cluster, fd)


def is_ready(data_dir: Path) -> bool:
    """Whether the data directory's server answers a query (what `megaservice up` can poll)."""
    return Cluster.of(data_dir).answering()


accepting_connections = is_ready
"""The name `megaservice up` calls `is_ready` by."""


def wait_ready(data_dir: Path, timeout: float = 60.0) -> None:
    """Wait until the data directory's server answers; `EmbeddedUnavailable` after `timeout` seconds."""
    cluster = Cluster.of(data_dir)
    deadline = time.monotonic() + timeout
    while not cluster.answering():
        _wait_or_fail(cluster, deadline, timeout)


def _owned(cluster: Cluster) -> bool:
    fd = open_lock(cluster.owner_lock)
    try:
        return not try_lock(fd, fcntl.LOCK_EX)
    finally:
        os.close(fd)  # closing drops the lock if it was taken


def _start_owner(cluster: Cluster, data_dir: Path, idle_stop: float) -> None:
    command = [sys.executable, "-m", "megaservice.components.postgres.daemon", "--data-dir", str(data_dir)]
    with (cluster.root / "owner.log").open("ab") as log:
        subprocess.run(
            [*command, "--idle-stop", str(idle_stop), "--detach"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True,
            timeout=30,
        )


def _wait_or_fail(cluster: Cluster, deadline: float, timeout: float) -> None:
    if time.monotonic() >= deadline:
        raise EmbeddedUnavailable(
            f"{cluster.location} did not answer within {timeout:g} s{_log_tail(cluster)}", cluster.location
        )
    time.sleep(0.05)


def _log_tail(cluster: Cluster, lines: int = 5) -> str:
    tail: list[str] = []
    for log in (cluster.root / "owner.log", cluster.log):
        with contextlib.suppress(OSError):
            tail += [f"{log.name}: {line}" for line in log.read_text(errors="replace").splitlines()[-lines:]]
    return "; last lines of its logs:\n" + "\n".join(tail) if tail else ""
