"""The one process that runs a data directory's PostgreSQL, and stops it cleanly.

Who runs the server is decided by a file lock (`owner.lock`): the process holding it is the owner.
The owner starts `postgres` as its child (as the server user when root), restarts it if it dies, and
on SIGTERM/SIGINT stops it with a fast shutdown (clients are disconnected, the data is written),
waiting for it to exit. The server gets SIGINT when its owner dies, even by SIGKILL (Linux's
parent-death signal), so no server outlives its owner; a server left running by anything else on
this cluster is stopped before the owner starts its own.

Two kinds of owner run the same code:

    megaservice serve postgres         runs until stopped (what `megaservice up` starts). If another
                                       owner already runs the server, it follows: it holds a client
                                       lease (so that owner keeps the server) and takes over if it exits.
    python -m megaservice.components.postgres.daemon --idle-stop S --detach
                                       what a retriever or dataprep starts when no server runs: it stops
                                       the server S seconds after the last service using it went away.

Services using the server hold a shared lock on `clients.lock` (their lease, released by the
kernel when they exit, however they exit); an auto-started owner stops once it can lock it
exclusively for S seconds, and holds it while it stops, so no service joins a stopping server.
"""

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from megaservice.components.postgres.cluster import Cluster, as_user, server_user

__all__ = ["Owner", "State", "open_lock", "try_lock"]

logger = logging.getLogger("megaservice.postgres")

State = Literal["waiting", "starting", "running", "following", "stopping", "stopped", "failed"]

_CRASHES = 5  # server exits within _CRASH_WINDOW seconds before the owner gives up
_CRASH_WINDOW = 60.0
_START_TIMEOUT = 120.0


def open_lock(path: Path) -> int:
    """A descriptor of lock file `path` (created if missing; not inherited by child processes)."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def try_lock(fd: int, kind: int) -> bool:
    """Lock `fd` (`fcntl.LOCK_EX` or `LOCK_SH`) without waiting; whether it was taken."""
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class Owner:
    """Runs (or follows) the server of one cluster until `stop` is set; see the module docstring."""

    def __init__(self, cluster: Cluster, *, idle_stop: float | None = None, stop_timeout: float = 30.0) -> None:
        self.cluster = cluster
        self.idle_stop = idle_stop
        """Seconds without any service before an auto-started owner stops; None: run until stopped."""
        self.stop_timeout = stop_timeout
        """Seconds a fast shutdown may take before the server is told to stop at once (SIGQUIT)."""
        self.state: State = "waiting"
        self.pid: int | None = None
        """The server's pid while this owner runs it."""
        self._lease: int | None = None
        self._idle_fd: int | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Own the server (or follow its owner) until `stop` is set, or an auto-started owner is idle."""
        self.cluster.root.mkdir(parents=True, exist_ok=True)
        fd = open_lock(self.cluster.owner_lock)
        since = time.monotonic()
        try:
            while not stop.is_set():
                if try_lock(fd, fcntl.LOCK_EX):
                    self._leave()
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                    await self._own(stop)
                    return
                if self.idle_stop is not None:  # auto-started, but another owner runs: not needed once it answers
                    if await asyncio.to_thread(self.cluster.answering) or time.monotonic() - since > _START_TIMEOUT:
                        return
                    await _pause(stop, 0.2)
                    continue
                if self.state != "following":
                    logger.info(
                        "PostgreSQL of %s is run by pid %s: following it", self.cluster.root, self.cluster.owner_pid()
                    )
                self._join()
                self.state = "following"
                await _pause(stop, 1.0)
        except BaseException:
            self.state = "failed"
            raise
        finally:
            self._leave()
            os.close(fd)  # the owner lock goes with it
            if self.state != "failed":
                self.state = "stopped"

    def _join(self) -> None:
        if self._lease is None:
            fd = open_lock(self.cluster.clients_lock)
            if try_lock(fd, fcntl.LOCK_SH):
                self._lease = fd
            else:  # the owner is stopping: try again next time
                os.close(fd)

    def _leave(self) -> None:
        if self._lease is not None:
            os.close(self._lease)
            self._lease = None

    async def _own(self, stop: asyncio.Event) -> None:
        self.state = "starting"
        user = await asyncio.to_thread(server_user)
        await asyncio.to_thread(self.cluster.prepare, user)
        await self._stop_orphan()
        crashes: list[float] = []
        stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        idle: asyncio.Future[Any] | None = asyncio.ensure_future(self._idle()) if self.idle_stop is not None else None
        proc: subprocess.Popen[bytes] | None = None
        try:
            while True:
                proc = self._spawn(user)
                if await self._until_ready(proc, stopping):
                    self.state = "running"
                    logger.info("PostgreSQL (pid %s) is ready on %s", proc.pid, self.cluster.socket)
                if not await self._watch(proc, stopping, idle):
                    return  # stopped, or idle: the finally below stops the server
                now = time.monotonic()
                crashes = [t for t in crashes if now - t < _CRASH_WINDOW] + [now]
                logger.error("PostgreSQL exited with %s; see %s", proc.returncode, self.cluster.log)
                if len(crashes) >= _CRASHES:
                    raise RuntimeError(
                        f"PostgreSQL exited {len(crashes)} times within {_CRASH_WINDOW:g} s; see {self.cluster.log}"
                    )
                self.state = "starting"
                await _pause(stop, 1.0)
                if stop.is_set():
                    return
        finally:
            stopping.cancel()
            if idle is not None:
                idle.cancel()
            if proc is not None and proc.poll() is None:
                await self._shutdown(proc)
            self.pid = None
            if self._idle_fd is not None:
                os.close(self._idle_fd)
                self._idle_fd = None

    def _spawn(self, user: tuple[int, int] | None) -> "subprocess.Popen[bytes]":
        with self.cluster.log.open("ab") as log:
            proc = subprocess.Popen(
                self.cluster.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd="/",
                # its own session: a signal to the owner's process group (Ctrl-C in a terminal, `up` stopping
                # the service) reaches the owner only, which then stops the server itself (a fast shutdown)
                start_new_session=True,
                preexec_fn=as_user(user, signal.SIGINT),  # setuid, then the parent-death signal
                env={"PATH": "/usr/bin:/bin", "LC_ALL": "C", "LANG": "C"},
            )
        self.pid = proc.pid
        return proc

    async def _until_ready(self, proc: "subprocess.Popen[bytes]", stopping: "asyncio.Future[Any]") -> bool:
        deadline = time.monotonic() + _START_TIMEOUT
        while proc.poll() is None and not stopping.done() and time.monotonic() < deadline:
            if _status(self.cluster) == "ready" and await asyncio.to_thread(self.cluster.answering):
                return True
            await asyncio.sleep(0.05)
        return False

    @staticmethod
    async def _watch(
        proc: "subprocess.Popen[bytes]", stopping: "asyncio.Future[Any]", idle: "asyncio.Future[Any] | None"
    ) -> bool:
        """Wait until the server exits (True) or the owner must stop it (False)."""
        waiting: list[asyncio.Future[Any]] = [stopping] if idle is None else [stopping, idle]
        while proc.poll() is None:
            done, _ = await asyncio.wait(waiting, timeout=0.25)
            if done:
                return False
        return True

    async def _idle(self) -> None:
        """Return once no service held a lease for `idle_stop` seconds, keeping the clients lock taken."""
        assert self.idle_stop is not None
        fd = self._idle_fd = open_lock(self.cluster.clients_lock)
        since: float | None = None
        while True:
            await asyncio.sleep(min(1.0, self.idle_stop / 2 or 0.1))
            if not try_lock(fd, fcntl.LOCK_EX):
                since = None
                continue
            now = time.monotonic()
            since = now if since is None else since
            if now - since >= self.idle_stop:
                logger.info("no service has used PostgreSQL for %g s: stopping it", self.idle_stop)
                return  # the lock stays taken until the server is down
            fcntl.flock(fd, fcntl.LOCK_UN)

    async def _shutdown(self, proc: "subprocess.Popen[bytes]") -> None:
        """Fast shutdown (SIGINT): clients disconnected, data written; SIGQUIT, then SIGKILL, if it hangs."""
        self.state = "stopping"
        for signum, wait in ((signal.SIGINT, self.stop_timeout), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)
            if await _gone(lambda: proc.poll() is not None, wait):
                logger.info("PostgreSQL (pid %s) stopped", proc.pid)
                return
            logger.warning("PostgreSQL (pid %s) did not stop after %s", proc.pid, signal.Signals(signum).name)

    async def _stop_orphan(self) -> None:
        """Stop a server running on this cluster without an owner, so that the new owner runs its own.

        Such a server was left by an owner killed on a system without parent-death signals, or started by hand.
        """
        pid = self.cluster.orphan_pid()
        if pid is None:
            return
        logger.warning("stopping PostgreSQL pid %s, left running on %s without its owner", pid, self.cluster.pgdata)
        for signum, wait in ((signal.SIGINT, self.stop_timeout), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
            if not self.cluster.signal_server(pid, signum):
                return
            if await _gone(lambda: not _alive(pid), wait):
                return


async def _gone(done: Callable[[], bool], seconds: float) -> bool:
    """Whether `done()` became true within `seconds` (checked every 50 ms)."""
    deadline = time.monotonic() + seconds
    while True:
        if done():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _status(cluster: Cluster) -> str | None:
    """The server's status line in postmaster.pid (`starting`, `ready`, `stopping`), if any."""
    try:
        lines = (cluster.pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    return lines[7].strip() if len(lines) > 7 else None
