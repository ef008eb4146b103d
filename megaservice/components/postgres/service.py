"""`megaservice serve postgres`: the embedded PostgreSQL, owned by this process, and its status service.

    GET /v1/ready       200 once PostgreSQL answers queries (503 before, and while it restarts)
    GET /v1/postgres    {"state", "pid", "owner_pid", "socket", "conninfo", "data_dir", "log"}

The service's process owns the server (owner.py): it starts it, restarts it if it dies, and stops
it (fast shutdown) when the service stops; the server gets SIGINT if this process is killed. If
another process already owns this data directory's server, the service follows it (ready while it
answers) and takes over when that process exits.
"""

import asyncio
import logging
from typing import Any

from megaservice.components.postgres.backend import PostgresSettings
from megaservice.components.postgres.cluster import Cluster
from megaservice.components.postgres.owner import Owner
from megaservice.constants import ServiceType
from megaservice.microservice import MicroService

__all__ = ["create_service"]

logger = logging.getLogger("megaservice.postgres")


class _Component:
    def __init__(self, settings: PostgresSettings) -> None:
        self.cluster = Cluster.of(settings.storage_dir())
        self.owner = Owner(self.cluster, stop_timeout=settings.stop_timeout)
        self.service: MicroService | None = None

    async def run(self) -> None:
        """The owner, until the service stops (then PostgreSQL is stopped before the service's process ends)."""
        stop = asyncio.Event()
        task = asyncio.ensure_future(self.owner.run(stop))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            stop.set()
            await task
            raise
        except Exception:
            logger.exception("the embedded PostgreSQL failed; stopping the service")
            if self.service is not None:
                self.service.stop()
            raise

    async def postgres_answers(self) -> bool:
        """Readiness: the server runs (or is followed) and answers a query."""
        if self.owner.state not in ("running", "following"):
            return False
        return await asyncio.to_thread(self.cluster.answering, 1.0)

    async def status(self) -> dict[str, Any]:
        """`GET /v1/postgres`."""
        return {
            "state": self.owner.state,
            "pid": self.owner.pid,
            "owner_pid": self.cluster.owner_pid(),
            "socket": str(self.cluster.socket),
            "conninfo": self.cluster.conninfo(),
            "data_dir": str(self.cluster.pgdata),
            "log": str(self.cluster.log),
        }


def create_service(settings: PostgresSettings | None = None) -> MicroService:
    """The embedded PostgreSQL as a service (settings from the environment by default)."""
    if settings is None:
        settings = PostgresSettings.from_env()
    settings.check()
    component = _Component(settings)
    service = MicroService(
        "postgres",
        service_type=ServiceType.VECTORSTORE,
        host=settings.host,
        port=settings.port,
        endpoint="/v1/postgres",
        description="The embedded PostgreSQL with pgvector (Unix socket only); its status and readiness",
    )
    component.service = service
    service.add_route("/v1/postgres", component.status, methods=["GET"])
    service.add_startup_event(component.run)
    service.add_readiness_check(component.postgres_answers)
    return service
