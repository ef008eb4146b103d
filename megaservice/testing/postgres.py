"""A real embedded PostgreSQL (with pgvector) for tests: started in a data directory, stopped, restarted.

    server = EmbeddedPostgres(tmp_path)
    server.start()                                    # its own owner process, as `megaservice serve postgres`
    store = await Store.open(server.store_settings(collection="t"), model="m", dimension=384)
    server.stop(); server.start()                     # the data stays
    server.close()

One server per test session is enough: each test takes its own collection. Needs the `pgvector` extra.
"""

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from megaservice.components._store.settings import StoreSettings
from megaservice.components.postgres.cluster import Cluster

__all__ = ["EmbeddedPostgres"]


class EmbeddedPostgres:
    """The embedded PostgreSQL of data directory `data_dir`, run by an owner process this object starts."""

    def __init__(self, data_dir: Path, *, start_timeout: float = 60.0) -> None:
        self.data_dir = Path(data_dir)
        self.cluster = Cluster.of(self.data_dir)
        self.start_timeout = start_timeout
        self._owner: subprocess.Popen[bytes] | None = None

    @property
    def conninfo(self) -> str:
        """The libpq connection string (Unix socket)."""
        return self.cluster.conninfo()

    @property
    def running(self) -> bool:
        """Whether the owner process runs."""
        return self._owner is not None and self._owner.poll() is None

    def store_settings(self, **changes: Any) -> StoreSettings:
        """Store settings joining this server by its data directory (as a service without a connection string).

        `changes` replace settings (e.g. `collection=`).
        """
        return StoreSettings(**{"data_dir": self.data_dir, "pool_timeout": 2.0, **changes})

    def start(self) -> None:
        """Start the owner process and wait until the server answers (`RuntimeError` with its log if it does not)."""
        if self.running:
            return
        self.cluster.root.mkdir(parents=True, exist_ok=True)
        with (self.cluster.root / "test-owner.log").open("ab") as log:
            self._owner = subprocess.Popen(
                [sys.executable, "-m", "megaservice.components.postgres.daemon", "--data-dir", str(self.data_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self.start_timeout
        while not (self._serving() and self.cluster.answering()):
            if self._owner.poll() is not None or time.monotonic() > deadline:
                self.stop()
                logs = (self.cluster.root / "test-owner.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the embedded PostgreSQL did not start:\n{logs}")
            time.sleep(0.05)

    def _serving(self) -> bool:
        """Whether the server on the socket is our owner's child (not one it has still to replace)."""
        try:
            pid = int((self.cluster.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (OSError, ValueError):
            return False
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        return self._owner is not None and parent == self._owner.pid

    def stop(self) -> None:
        """Stop it as `megaservice serve postgres` stops (SIGTERM to the owner: a fast shutdown)."""
        owner, self._owner = self._owner, None
        if owner is None:
            return
        with contextlib.suppress(ProcessLookupError):
            owner.send_signal(signal.SIGTERM)
        try:
            owner.wait(60)
        except subprocess.TimeoutExpired:
            owner.kill()
            owner.wait()

    def restart(self) -> None:
        """Stop it and start it again on the same data."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop it (the data directory stays)."""
        self.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()
